#pragma once
// Torch-free description of one sliding-window attention call: causal softmax attention where query i
// sees keys i-w+1 .. i of its own sequence. Token-major layout as in ops/gla/gla_params.h.
#include <cstdint>

namespace linattn::swa {

struct Params {
  const void* q = nullptr;  // [B*T, H, K] (input dtype)
  const void* k = nullptr;  // [B*T, H, K]
  const void* v = nullptr;  // [B*T, H, V]
  void* o = nullptr;        // [B*T, H, V] output (input dtype)
  void* lse = nullptr;      // [B*T, H] log-sum-exp of the scaled scores, state precision (saved for backward)
  const int64_t* cu_seqlens = nullptr;  // [N+1] or nullptr (sequence n is batch n)
  int64_t batch = 0, seqlen = 0, num_seqs = 0, heads = 0, dim_k = 0, dim_v = 0;
  int64_t window = 1;  // w >= 1
  double scale = 1.0;

  // backward only
  const void* do_ = nullptr;  // [B*T, H, V]
  void* dq = nullptr;         // [B*T, H, K] (input dtype)
  void* dk = nullptr;         // [B*T, H, K]
  void* dv = nullptr;         // [B*T, H, V]
};

}  // namespace linattn::swa
