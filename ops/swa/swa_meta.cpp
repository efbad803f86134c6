// Meta kernels of sliding-window attention (symbolic shapes, for torch.compile).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/swa/swa_common.h"

namespace linattn::swa {
namespace {

std::tuple<at::Tensor, at::Tensor> forward_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                int64_t window_size, std::optional<double>,
                                                const std::optional<at::Tensor>& cu_seqlens) {
  check_inputs("sliding_window_attention", q, k, v, window_size, cu_seqlens);
  return alloc_outputs(q, v);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_meta(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor&,
                                                             const at::Tensor&, const at::Tensor&,
                                                             int64_t window_size, std::optional<double>,
                                                             const std::optional<at::Tensor>& cu_seqlens) {
  check_inputs("_sliding_window_attention_backward", q, k, v, window_size, cu_seqlens);
  auto like = [](const at::Tensor& t) { return at::empty_symint(t.sym_sizes(), t.options()); };
  return {like(q), like(k), like(v)};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Meta, m) {
  m.impl("_sliding_window_attention_forward", &forward_meta);
  m.impl("_sliding_window_attention_backward", &backward_meta);
}

}  // namespace linattn::swa
