#pragma once
// Torch-free CUDA error checks for host code: LINATTN_CUDA_CHECK(expr) wraps a runtime call and
// LINATTN_CHECK_LAUNCH() follows every kernel launch. Both throw std::runtime_error naming the file, the
// line, the failing expression and cudaGetErrorString, so the glue turns them into Python exceptions.
#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace linattn::cuda_utils {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("linattn CUDA error at ") + file + ":" + std::to_string(line) + ": " + what +
                           " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace linattn::cuda_utils

#define LINATTN_CUDA_CHECK(expr)                                                        \
  do {                                                                                  \
    const cudaError_t linattn_err_ = (expr);                                            \
    if (linattn_err_ != cudaSuccess) {                                                  \
      ::linattn::cuda_utils::throw_cuda_error(linattn_err_, #expr, __FILE__, __LINE__); \
    }                                                                                   \
  } while (0)

// After a <<<...>>> launch: reports bad launch configurations (grid, shared memory) immediately.
#define LINATTN_CHECK_LAUNCH()                                                                  \
  do {                                                                                          \
    const cudaError_t linattn_err_ = cudaGetLastError();                                        \
    if (linattn_err_ != cudaSuccess) {                                                          \
      ::linattn::cuda_utils::throw_cuda_error(linattn_err_, "kernel launch", __FILE__, __LINE__); \
    }                                                                                           \
  } while (0)
