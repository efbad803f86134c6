// sliding_window_attention: the public op. Below autograd it is the forward op without its log-sum-exp
// (CompositeExplicitAutograd, so every backend with the forward op has it); on the Autograd key a C++
// torch::autograd::Function saves the log-sum-exp and calls the backward op.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/swa/swa_dispatch.h"

namespace linattn::swa {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;

class SwaFunction : public torch::autograd::Function<SwaFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               int64_t window, std::optional<double> scale, const OptTensor& cu) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [o, lse] = dispatch::forward(q, k, v, window, scale, cu);
    ctx->save_for_backward({q, k, v, o, lse, cu.has_value() ? *cu : at::Tensor()});
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale;
    return {o};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const OptTensor cu = s[5].defined() ? OptTensor(s[5]) : std::nullopt;
    auto [dq, dk, dv] = dispatch::backward(s[0], s[1], s[2], s[3], s[4], grads[0], ctx->saved_data["window"].toInt(),
                                           ctx->saved_data["scale"].toOptional<double>(), cu);
    return {dq, dk, dv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor swa_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                        std::optional<double> scale, const OptTensor& cu) {
  return SwaFunction::apply(q, k, v, window, scale, cu)[0];
}

at::Tensor swa_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                         std::optional<double> scale, const OptTensor& cu) {
  return std::get<0>(dispatch::forward(q, k, v, window, scale, cu));
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Autograd, m) { m.impl("sliding_window_attention", &swa_autograd); }
TORCH_LIBRARY_IMPL(linattn, CompositeExplicitAutograd, m) { m.impl("sliding_window_attention", &swa_composite); }

}  // namespace linattn::swa
