// liger_attention: the public op. Below autograd it is the forward op without the tensors only its backward reads
// (CompositeExplicitAutograd, so every backend with the forward op has it); on the Autograd key a C++
// torch::autograd::Function saves the feature maps, the window output and its log-sum-exp and calls the backward
// op, which needs neither q nor k again.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/liger/liger_common.h"

namespace linattn::liger {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Forward forward_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                   const at::Tensor& q_rot, const at::Tensor& k_rot, int64_t window_size, const OptTensor& h0,
                   bool output_final_state, double softmax_weight, double linear_weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::_liger_attention_forward", "")
                       .typed<decltype(forward_op)>();
  return op.call(q, k, v, g, q_rot, k_rot, window_size, h0, output_final_state, softmax_weight, linear_weight);
}

Backward backward_op(const at::Tensor& q_feat, const at::Tensor& k_feat, const at::Tensor& v, const at::Tensor& g,
                     const at::Tensor& q_rot, const at::Tensor& k_rot, const at::Tensor& o_win, const at::Tensor& lse,
                     const at::Tensor& d_o, const OptTensor& dht, int64_t window_size, const OptTensor& h0,
                     double softmax_weight, double linear_weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::_liger_attention_backward", "")
                       .typed<decltype(backward_op)>();
  return op.call(q_feat, k_feat, v, g, q_rot, k_rot, o_win, lse, d_o, dht, window_size, h0, softmax_weight,
                 linear_weight);
}

OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

class LigerFunction : public torch::autograd::Function<LigerFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& g, const at::Tensor& q_rot, const at::Tensor& k_rot,
                               int64_t window_size, const OptTensor& h0, bool output_final_state,
                               double softmax_weight, double linear_weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [o, ht, o_win, lse, q_feat, k_feat] =
        forward_op(q, k, v, g, q_rot, k_rot, window_size, h0, output_final_state, softmax_weight, linear_weight);
    ctx->save_for_backward({q_feat, k_feat, v, g, q_rot, k_rot, o_win, lse, h0.has_value() ? *h0 : at::Tensor()});
    ctx->saved_data["window_size"] = window_size;
    ctx->saved_data["output_final_state"] = output_final_state;
    ctx->saved_data["softmax_weight"] = softmax_weight;
    ctx->saved_data["linear_weight"] = linear_weight;
    if (!output_final_state) ctx->mark_non_differentiable({ht});
    return {o, ht};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor& v = s[2];
    const at::Tensor d_o = grads[0].defined() ? grads[0] : at::zeros_like(v, s[0].options());
    const bool has_final_state = ctx->saved_data["output_final_state"].toBool();
    const OptTensor dht = has_final_state && grads[1].defined() ? OptTensor(grads[1]) : std::nullopt;
    auto [dq, dk, dv, dg, dq_rot, dk_rot, dh0] =
        backward_op(s[0], s[1], v, s[3], s[4], s[5], s[6], s[7], d_o, dht, ctx->saved_data["window_size"].toInt(),
                    opt(s[8]), ctx->saved_data["softmax_weight"].toDouble(),
                    ctx->saved_data["linear_weight"].toDouble());
    const at::Tensor none;
    return {dq, dk, dv, dg, dq_rot, dk_rot, none, s[8].defined() ? dh0 : none, none, none, none};
  }
};

std::tuple<at::Tensor, at::Tensor> liger_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  const at::Tensor& g, const at::Tensor& q_rot,
                                                  const at::Tensor& k_rot, int64_t window_size, const OptTensor& h0,
                                                  bool output_final_state, double softmax_weight,
                                                  double linear_weight) {
  auto out = LigerFunction::apply(q, k, v, g, q_rot, k_rot, window_size, h0, output_final_state, softmax_weight,
                                  linear_weight);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> liger_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   const at::Tensor& g, const at::Tensor& q_rot,
                                                   const at::Tensor& k_rot, int64_t window_size, const OptTensor& h0,
                                                   bool output_final_state, double softmax_weight,
                                                   double linear_weight) {
  auto out = forward_op(q, k, v, g, q_rot, k_rot, window_size, h0, output_final_state, softmax_weight, linear_weight);
  return {std::get<0>(out), std::get<1>(out)};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Autograd, m) { m.impl("liger_attention", &liger_autograd); }
TORCH_LIBRARY_IMPL(linattn, CompositeExplicitAutograd, m) { m.impl("liger_attention", &liger_composite); }

}  // namespace linattn::liger
