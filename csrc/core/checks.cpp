#include "core/checks.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

namespace linattn {

void value_check_cu_seqlens(const at::Tensor& cu_seqlens, int64_t total_len, const char* op) {
  const at::Tensor host = cu_seqlens.to(at::kCPU).contiguous();
  const int64_t* p = host.data_ptr<int64_t>();
  const int64_t n = host.numel();
  TORCH_CHECK(p[0] == 0, op, ": cu_seqlens must start at 0, got ", p[0]);
  for (int64_t i = 1; i < n; ++i) {
    TORCH_CHECK(p[i] >= p[i - 1], op, ": cu_seqlens must be non-decreasing, got ", p[i - 1], " then ", p[i],
                " at index ", i);
  }
  TORCH_CHECK(p[n - 1] == total_len, op, ": cu_seqlens must end at T=", total_len, ", got ", p[n - 1]);
}

at::Tensor prepare_cu_seqlens(const std::optional<at::Tensor>& cu_seqlens, int64_t total_len, const char* op) {
  if (!cu_seqlens.has_value()) return at::Tensor();
  at::Tensor cu = cu_seqlens->contiguous();
  // Through the dispatcher so each device checks where the offsets live: on the host for CPU tensors, by a
  // kernel on the GPU for CUDA tensors (no device->host copy; ops/varlen).
  static const auto check = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("linattn::_check_cu_seqlens", "")
                                .typed<void(const at::Tensor&, int64_t, c10::string_view)>();
  check.call(cu, total_len, op);
  return cu;
}

}  // namespace linattn
