// Autograd for the GLA ops as C++ torch::autograd::Functions on the Autograd key, so LibTorch callers get
// gradients too. The four forward ops share one backward op (_gla_backward): the chunked and the
// recurrent forms compute the same function, so they have the same gradient.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "ops/gla/gla_dispatch.h"

namespace linattn::gla {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = std::optional<at::Tensor>;

enum Kind : int64_t { kChunkGla = 0, kRecurrentGla = 1, kChunkSimple = 2, kRecurrentSimple = 3 };

OptTensor opt(const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
at::Tensor val(const OptTensor& t) { return t.has_value() ? *t : at::Tensor(); }

class GlaFunction : public torch::autograd::Function<GlaFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const OptTensor& g, const OptTensor& g_gamma, std::optional<double> scale,
                               const OptTensor& h0, bool output_final_state, const OptTensor& cu_seqlens,
                               int64_t kind) {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tuple<at::Tensor, at::Tensor> out;
    switch (kind) {
      case kChunkGla:
        out = dispatch::chunk_gla(q, k, v, *g, scale, h0, output_final_state, cu_seqlens);
        break;
      case kRecurrentGla:
        out = dispatch::fused_recurrent_gla(q, k, v, g, scale, h0, output_final_state, cu_seqlens);
        break;
      case kChunkSimple:
        out = dispatch::chunk_simple_gla(q, k, v, g, g_gamma, scale, h0, output_final_state, cu_seqlens);
        break;
      default:
        out = dispatch::fused_recurrent_simple_gla(q, k, v, g, g_gamma, scale, h0, output_final_state, cu_seqlens);
    }
    ctx->save_for_backward({q, k, v, val(g), val(g_gamma), val(h0), val(cu_seqlens)});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["output_final_state"] = output_final_state;
    if (!output_final_state) ctx->mark_non_differentiable({std::get<1>(out)});
    return {std::get<0>(out), std::get<1>(out)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &g = saved[3], &g_gamma = saved[4],
                     &h0 = saved[5], &cu = saved[6];
    const std::optional<double> scale = ctx->saved_data["scale"].toOptional<double>();
    at::Tensor d_o = grads[0].defined() ? grads[0] : at::zeros_like(v, q.options());
    const bool has_final_state = ctx->saved_data["output_final_state"].toBool();
    OptTensor dht = has_final_state && grads[1].defined() ? OptTensor(grads[1]) : std::nullopt;
    auto [dq, dk, dv, dg, dg_gamma, dh0] =
        dispatch::gla_backward(q, k, v, opt(g), opt(g_gamma), d_o, dht, scale, opt(h0), opt(cu));
    return {dq,
            dk,
            dv,
            g.defined() ? dg : at::Tensor(),
            g_gamma.defined() ? dg_gamma : at::Tensor(),
            at::Tensor(),
            h0.defined() ? dh0 : at::Tensor(),
            at::Tensor(),
            at::Tensor(),
            at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> apply(int64_t kind, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                         const OptTensor& g, const OptTensor& g_gamma, std::optional<double> scale,
                                         const OptTensor& h0, bool output_final_state, const OptTensor& cu) {
  auto out = GlaFunction::apply(q, k, v, g, g_gamma, scale, h0, output_final_state, cu, kind);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> chunk_gla_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                      const at::Tensor& g, std::optional<double> scale,
                                                      const OptTensor& h0, bool ofs, const OptTensor& cu) {
  return apply(kChunkGla, q, k, v, g, std::nullopt, scale, h0, ofs, cu);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_gla_autograd(const at::Tensor& q, const at::Tensor& k,
                                                                const at::Tensor& v, const OptTensor& gk,
                                                                std::optional<double> scale, const OptTensor& h0,
                                                                bool ofs, const OptTensor& cu) {
  return apply(kRecurrentGla, q, k, v, gk, std::nullopt, scale, h0, ofs, cu);
}

std::tuple<at::Tensor, at::Tensor> chunk_simple_gla_autograd(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const OptTensor& g,
                                                             const OptTensor& g_gamma, std::optional<double> scale,
                                                             const OptTensor& h0, bool ofs, const OptTensor& cu) {
  return apply(kChunkSimple, q, k, v, g, g_gamma, scale, h0, ofs, cu);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_simple_gla_autograd(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g, const OptTensor& g_gamma,
    std::optional<double> scale, const OptTensor& h0, bool ofs, const OptTensor& cu) {
  return apply(kRecurrentSimple, q, k, v, g, g_gamma, scale, h0, ofs, cu);
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Autograd, m) {
  m.impl("chunk_gla", &chunk_gla_autograd);
  m.impl("fused_recurrent_gla", &fused_recurrent_gla_autograd);
  m.impl("chunk_simple_gla", &chunk_simple_gla_autograd);
  m.impl("fused_recurrent_simple_gla", &fused_recurrent_simple_gla_autograd);
}

}  // namespace linattn::gla
