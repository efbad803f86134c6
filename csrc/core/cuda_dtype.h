#pragma once
// The CUDA glue's (ops/*/*_cuda.cpp) map from a tensor's dtype to the kernels' DType (csrc/cuda/dtype.h).
// Needs no CUDA header, so CPU-only torch builds can syntax-check the glue that uses it.
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include "csrc/cuda/dtype.h"

namespace linattn {

// float32, float16 and bfloat16 map to their DType; any other dtype is an error naming op and `what` (the
// arguments the dtype came from, e.g. "q, k, v"), with a message of its own for float64 (it runs on CPU).
inline cuda_utils::DType cuda_dtype(const char* op, at::ScalarType dt, const char* what) {
  switch (dt) {
    case at::kFloat:
      return cuda_utils::DType::kFloat32;
    case at::kHalf:
      return cuda_utils::DType::kFloat16;
    case at::kBFloat16:
      return cuda_utils::DType::kBFloat16;
    case at::kDouble:
      TORCH_CHECK(false, op,
                  ": float64 is not supported by the CUDA kernels (float64 runs on CPU, e.g. for gradcheck); "
                  "use float32, float16 or bfloat16 on CUDA");
    default:
      TORCH_CHECK(false, op, ": the CUDA kernels take float32, float16 or bfloat16 ", what, ", got ", dt);
  }
}

}  // namespace linattn
