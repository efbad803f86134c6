#pragma once
// Arguments of the MoM dispatch / combine kernels (torch-free; filled by ops/mom/mom_cuda.cpp and by the
// emulator harness). Rows are flat: x [N, D] with N = B*T tokens and D the product of the trailing dims;
// copies are the N*k (token, slot) pairs of indices [N, k] in flat order c = n*k + j.
#include <cstdint>

#include "csrc/cuda/dtype.h"

namespace linattn::mom {

// dtype of the combine weights (and of their gradient), chosen at run time; read as fp32 inside the kernels.
using WeightType = cuda_utils::DType;

struct Params {
  const int64_t* indices = nullptr;  // [N, k], values in [0, memories)
  int64_t batch = 0;                 // B
  int64_t seqlen = 0;                // T
  int64_t topk = 0;                  // k
  int64_t memories = 0;              // E
  int64_t dim = 0;                   // D: elements per row
  int64_t tokens_per_block = 0;      // tile of one CTA (set by the launcher)

  // dispatch: x -> x_sorted [N*k, D], cu_seqlens [E*B+1], sort_index [N*k]
  const void* x = nullptr;
  void* x_sorted = nullptr;
  int64_t* cu_seqlens = nullptr;
  int64_t* sort_index = nullptr;

  // combine: y [N, D] = sum over the token's copies of weight * y_sorted[row]; weights == nullptr means 1
  // (the backward of dispatch). The backward of combine reads dy (in y) and writes dy_sorted and dweights.
  const void* y_sorted = nullptr;
  const void* weights = nullptr;  // [N, k]
  WeightType weight_type = WeightType::kFloat32;
  void* y = nullptr;
  const void* dy = nullptr;
  void* dy_sorted = nullptr;
  void* dweights = nullptr;  // [N, k], weight_type
};

}  // namespace linattn::mom
