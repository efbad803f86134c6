#include "core/checks.h"

#include <ATen/ATen.h>

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
  value_check_cu_seqlens(*cu_seqlens, total_len, op);
  return cu_seqlens->contiguous();
}

}  // namespace linattn
