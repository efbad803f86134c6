// Meta kernels of liger_attention's forward and backward ops (symbolic shapes, for torch.compile).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/liger/liger_common.h"

namespace linattn::liger {
namespace {

Forward forward_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                     const at::Tensor& q_rot, const at::Tensor& k_rot, int64_t window_size, const OptTensor& h0,
                     bool output_final_state, double, double) {
  check_forward("liger_attention", q, k, v, g, q_rot, k_rot, window_size, h0);
  return alloc_forward(q, k, v, output_final_state);
}

Backward backward_meta(const at::Tensor& q_feat, const at::Tensor& k_feat, const at::Tensor& v, const at::Tensor& g,
                       const at::Tensor& q_rot, const at::Tensor& k_rot, const at::Tensor& o_win,
                       const at::Tensor& lse, const at::Tensor& d_o, const OptTensor&, int64_t window_size,
                       const OptTensor& h0, double, double) {
  check_backward("_liger_attention_backward", q_feat, k_feat, v, g, q_rot, k_rot, o_win, lse, d_o, window_size, h0);
  auto like = [](const at::Tensor& t) { return at::empty_symint(t.sym_sizes(), t.options()); };
  return {like(q_feat), like(k_feat), like(v), like(g), like(q_rot), like(k_rot),
          h0.has_value() ? like(*h0) : at::empty({0}, q_feat.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Meta, m) {
  m.impl("_liger_attention_forward", &forward_meta);
  m.impl("_liger_attention_backward", &backward_meta);
}

}  // namespace linattn::liger
