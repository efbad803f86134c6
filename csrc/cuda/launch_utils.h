#pragma once
// Torch-free launch helpers: dynamic shared memory above the 48 KB default needs an explicit opt-in
// (cudaFuncAttributeMaxDynamicSharedMemorySize) on sm_70+; the attribute is set for the current device
// before every launch that needs it (a cheap host call).
#include <cuda_runtime_api.h>

#include <cstddef>

#include "csrc/cuda/cuda_check.h"

namespace linattn::cuda_utils {

constexpr size_t kDefaultSmemLimit = 48 * 1024;

template <typename Kernel>
inline void prepare_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes > kDefaultSmemLimit) {
    LINATTN_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  }
}

}  // namespace linattn::cuda_utils
