// CPU and Meta kernels of linattn::_check_cu_seqlens: the host check of the offsets (CPU), nothing to check
// while tracing (Meta). The CUDA kernel is in varlen_check_cuda.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <string>

#include "core/checks.h"

namespace linattn {
namespace {

void check_cpu(const at::Tensor& cu_seqlens, int64_t total_len, c10::string_view op) {
  const std::string name(op);
  value_check_cu_seqlens(cu_seqlens, total_len, name.c_str());
}

void check_meta(const at::Tensor&, int64_t, c10::string_view) {}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CPU, m) { m.impl("_check_cu_seqlens", &check_cpu); }
TORCH_LIBRARY_IMPL(linattn, Meta, m) { m.impl("_check_cu_seqlens", &check_meta); }

}  // namespace linattn
