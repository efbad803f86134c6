#pragma once
// The input dtypes of the CUDA kernels, one enum for every family (each names it gpu::DType in its
// *_launch.h). Plain C++: the torch glue (ops/*/*_cuda.cpp, compiled by a C++ compiler), the params headers
// and the emulator harness include it as well as the kernels; the device storage type of each value is
// cuda_utils::StorageOf (type_utils.cuh), the map from a tensor's dtype is linattn::cuda_dtype
// (csrc/core/cuda_dtype.h).

namespace linattn::cuda_utils {

// float, __half, __nv_bfloat16 in device memory; the kernels accumulate in fp32 whatever the dtype.
enum class DType { kFloat32, kFloat16, kBFloat16 };

// Runs f.template operator()<D>() with D = d: the launcher instantiated for a runtime dtype.
template <class F>
void visit_dtype(DType d, F&& f) {
  switch (d) {
    case DType::kFloat32:
      f.template operator()<DType::kFloat32>();
      break;
    case DType::kFloat16:
      f.template operator()<DType::kFloat16>();
      break;
    case DType::kBFloat16:
      f.template operator()<DType::kBFloat16>();
      break;
  }
}

}  // namespace linattn::cuda_utils
