// Autograd of the delta-rule ops as a C++ torch::autograd::Function on the Autograd key. The four forward
// ops share one backward op; the optional in-kernel L2 norm of q and k is differentiated here around it.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/delta_rule/delta_common.h"
#include "ops/delta_rule/delta_dispatch.h"

namespace linattn::delta {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor val(const OptTensor& t) { return t.has_value() ? *t : at::Tensor(); }
OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

class DeltaRuleFunction : public torch::autograd::Function<DeltaRuleFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const OptTensor& g, const at::Tensor& beta, std::optional<double> scale,
                               const OptTensor& h0, bool output_final_state, bool use_qk_l2norm,
                               const OptTensor& cu_seqlens, bool recurrent) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [o, ht] = dispatch::forward(recurrent, q, k, v, g, beta, scale, h0, output_final_state, use_qk_l2norm,
                                     cu_seqlens);
    ctx->save_for_backward({q, k, v, val(g), beta, val(h0), val(cu_seqlens)});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["output_final_state"] = output_final_state;
    ctx->saved_data["l2"] = use_qk_l2norm;
    if (!output_final_state) ctx->mark_non_differentiable({ht});
    return {o, ht};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor &q = s[0], &k = s[1], &v = s[2], &g = s[3], &beta = s[4], &h0 = s[5], &cu = s[6];
    const bool l2 = ctx->saved_data["l2"].toBool();
    const at::Tensor qn = l2 ? l2norm(q) : q;
    const at::Tensor kn = l2 ? l2norm(k) : k;
    const at::Tensor d_o = grads[0].defined() ? grads[0] : at::zeros_like(v, q.options());
    const OptTensor dht =
        ctx->saved_data["output_final_state"].toBool() && grads[1].defined() ? OptTensor(grads[1]) : std::nullopt;
    auto [dq, dk, dv, dg, dbeta, dh0] = dispatch::backward(
        qn, kn, v, opt(g), beta, d_o, dht, ctx->saved_data["scale"].toOptional<double>(), opt(h0), opt(cu));
    if (l2) {
      dq = l2norm_backward(q, dq);
      dk = l2norm_backward(k, dk);
    }
    return {dq,           dk,           dv,           g.defined() ? dg : at::Tensor(),
            dbeta,        at::Tensor(), h0.defined() ? dh0 : at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

Pair apply(bool recurrent, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
           const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool ofs, bool l2,
           const OptTensor& cu) {
  auto out = DeltaRuleFunction::apply(q, k, v, g, beta, scale, h0, ofs, l2, cu, recurrent);
  return {out[0], out[1]};
}

Pair chunk_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                      std::optional<double> scale, const OptTensor& h0, bool ofs, bool l2, const OptTensor& cu) {
  return apply(false, q, k, v, std::nullopt, beta, scale, h0, ofs, l2, cu);
}
Pair fused_recurrent_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool ofs,
                                bool l2, const OptTensor& cu) {
  return apply(true, q, k, v, std::nullopt, beta, scale, h0, ofs, l2, cu);
}
Pair chunk_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                            const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool ofs,
                            bool l2, const OptTensor& cu) {
  return apply(false, q, k, v, g, beta, scale, h0, ofs, l2, cu);
}
Pair fused_recurrent_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& g, const at::Tensor& beta, std::optional<double> scale,
                                      const OptTensor& h0, bool ofs, bool l2, const OptTensor& cu) {
  return apply(true, q, k, v, g, beta, scale, h0, ofs, l2, cu);
}

// Not differentiable (it overwrites its own initial state): refuse rather than return an output whose
// gradient would silently be missing, then run the backend and bump state's version as an in-place op must.
at::Tensor fused_recurrent_delta_rule_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const OptTensor& g, const at::Tensor& beta, const at::Tensor& state,
                                              std::optional<double> scale, bool l2, const OptTensor& cu) {
  if (at::GradMode::is_enabled()) {
    const bool needs_grad = q.requires_grad() || k.requires_grad() || v.requires_grad() || beta.requires_grad() ||
                            state.requires_grad() || (g.has_value() && g->requires_grad());
    TORCH_CHECK(!needs_grad,
                "fused_recurrent_delta_rule_inplace is not differentiable (it overwrites state); run it under "
                "torch.no_grad() or use fused_recurrent_(gated_)delta_rule(..., output_final_state=True)");
  }
  at::Tensor o;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    o = dispatch::recurrent_inplace(q, k, v, g, beta, state, scale, l2, cu);
  }
  torch::autograd::impl::bump_version(state);
  return o;
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Autograd, m) {
  m.impl("fused_recurrent_delta_rule_inplace", &fused_recurrent_delta_rule_inplace);
  m.impl("chunk_delta_rule", &chunk_delta_rule);
  m.impl("fused_recurrent_delta_rule", &fused_recurrent_delta_rule);
  m.impl("chunk_gated_delta_rule", &chunk_gated_delta_rule);
  m.impl("fused_recurrent_gated_delta_rule", &fused_recurrent_gated_delta_rule);
}

}  // namespace linattn::delta
