// CUDA kernel of linattn::_check_cu_seqlens: launches the device-side check on the current stream, so the
// offsets are never copied to the host. setup.py and CMakeLists.txt leave this file out of CPU-only builds.
#include <ATen/ATen.h>

// See ops/gla/gla_cuda.cpp: lets a CPU-only torch syntax-check this file.
#if defined(__has_include)
#if !__has_include(<c10/cuda/impl/cuda_cmake_macros.h>) && !defined(C10_CUDA_NO_CMAKE_CONFIGURE_FILE)
#define C10_CUDA_NO_CMAKE_CONFIGURE_FILE
#endif
#endif
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/varlen/cuda/varlen_launch.h"

namespace linattn {
namespace {

void check_cuda(const at::Tensor& cu_seqlens, int64_t total_len, c10::string_view) {
  TORCH_CHECK(cu_seqlens.is_contiguous() && cu_seqlens.scalar_type() == at::kLong && cu_seqlens.numel() >= 1,
              "_check_cu_seqlens: expects a contiguous int64 tensor with at least one offset");
  const c10::cuda::CUDAGuard guard(cu_seqlens.device());
  gpu::check_cu_seqlens(cu_seqlens.data_ptr<int64_t>(), cu_seqlens.numel(), total_len,
                        c10::cuda::getCurrentCUDAStream().stream());
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CUDA, m) { m.impl("_check_cu_seqlens", &check_cuda); }

}  // namespace linattn
