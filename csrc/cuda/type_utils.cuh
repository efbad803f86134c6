#pragma once
// Torch-free element conversions for kernels: inputs in float / half / bfloat16 are loaded as float
// (all accumulation is fp32) and stored back with round-to-nearest.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "csrc/cuda/dtype.h"

namespace linattn::cuda_utils {

// Device storage type of an input dtype: typename StorageOf<D>::type.
template <DType D>
struct StorageOf;
template <>
struct StorageOf<DType::kFloat32> {
  using type = float;
};
template <>
struct StorageOf<DType::kFloat16> {
  using type = __half;
};
template <>
struct StorageOf<DType::kBFloat16> {
  using type = __nv_bfloat16;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace linattn::cuda_utils
