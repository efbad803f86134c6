// C++ API of the delta-rule family: dispatcher calls (autograd, backends and torch.compile see the same ops).
#include <ATen/core/dispatch/Dispatcher.h>

#include <linattn/delta_rule.h>

#include "core/api_util.h"
#include "ops/delta_rule/delta_dispatch.h"

namespace linattn {

namespace delta::dispatch {

namespace {
using UngatedFn = Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                       std::optional<double>, const OptTensor&, bool, bool, const OptTensor&);
using GatedFn = Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     std::optional<double>, const OptTensor&, bool, bool, const OptTensor&);
using BackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&, const at::Tensor&, const at::Tensor&,
    const OptTensor&, std::optional<double>, const OptTensor&, const OptTensor&);

using InplaceFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptTensor&,
                             const at::Tensor&, const at::Tensor&, std::optional<double>, bool, const OptTensor&);

template <class Fn>
c10::TypedOperatorHandle<Fn> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}
}  // namespace

Pair forward(bool recurrent, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
             const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool output_final_state,
             bool use_qk_l2norm, const OptTensor& cu_seqlens) {
  static auto chunk = handle<UngatedFn>("linattn::chunk_delta_rule");
  static auto recur = handle<UngatedFn>("linattn::fused_recurrent_delta_rule");
  static auto chunk_gated = handle<GatedFn>("linattn::chunk_gated_delta_rule");
  static auto recur_gated = handle<GatedFn>("linattn::fused_recurrent_gated_delta_rule");
  if (g.has_value()) {
    return (recurrent ? recur_gated : chunk_gated)
        .call(q, k, v, *g, beta, scale, h0, output_final_state, use_qk_l2norm, cu_seqlens);
  }
  return (recurrent ? recur : chunk).call(q, k, v, beta, scale, h0, output_final_state, use_qk_l2norm, cu_seqlens);
}

at::Tensor recurrent_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                             const at::Tensor& beta, const at::Tensor& state, std::optional<double> scale,
                             bool use_qk_l2norm, const OptTensor& cu_seqlens) {
  static auto op = handle<InplaceFn>("linattn::fused_recurrent_delta_rule_inplace");
  return op.call(q, k, v, g, beta, state, scale, use_qk_l2norm, cu_seqlens);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g, const at::Tensor& beta,
    const at::Tensor& do_, const OptTensor& dht, std::optional<double> scale, const OptTensor& h0,
    const OptTensor& cu_seqlens) {
  static auto op = handle<BackwardFn>("linattn::_delta_rule_backward");
  return op.call(q, k, v, g, beta, do_, dht, scale, h0, cu_seqlens);
}

}  // namespace delta::dispatch

std::tuple<at::Tensor, at::Tensor> chunk_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    const at::Tensor& beta, std::optional<double> scale,
                                                    const std::optional<at::Tensor>& initial_state,
                                                    bool output_final_state, bool use_qk_l2norm_in_kernel,
                                                    const std::optional<at::Tensor>& cu_seqlens) {
  return drop_unrequested_state(delta::dispatch::forward(false, q, k, v, std::nullopt, beta, scale, initial_state,
                                                output_final_state, use_qk_l2norm_in_kernel, cu_seqlens),
                       output_final_state);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_delta_rule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
    std::optional<double> scale, const std::optional<at::Tensor>& initial_state, bool output_final_state,
    bool use_qk_l2norm_in_kernel, const std::optional<at::Tensor>& cu_seqlens) {
  return drop_unrequested_state(delta::dispatch::forward(true, q, k, v, std::nullopt, beta, scale, initial_state,
                                                output_final_state, use_qk_l2norm_in_kernel, cu_seqlens),
                       output_final_state);
}

std::tuple<at::Tensor, at::Tensor> chunk_gated_delta_rule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta,
    std::optional<double> scale, const std::optional<at::Tensor>& initial_state, bool output_final_state,
    bool use_qk_l2norm_in_kernel, const std::optional<at::Tensor>& cu_seqlens) {
  return drop_unrequested_state(delta::dispatch::forward(false, q, k, v, g, beta, scale, initial_state, output_final_state,
                                                use_qk_l2norm_in_kernel, cu_seqlens),
                       output_final_state);
}

std::tuple<at::Tensor, at::Tensor> fused_recurrent_gated_delta_rule(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g, const at::Tensor& beta,
    std::optional<double> scale, const std::optional<at::Tensor>& initial_state, bool output_final_state,
    bool use_qk_l2norm_in_kernel, const std::optional<at::Tensor>& cu_seqlens) {
  return drop_unrequested_state(delta::dispatch::forward(true, q, k, v, g, beta, scale, initial_state, output_final_state,
                                                use_qk_l2norm_in_kernel, cu_seqlens),
                       output_final_state);
}

at::Tensor fused_recurrent_delta_rule_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const std::optional<at::Tensor>& g, const at::Tensor& beta,
                                              at::Tensor& state, std::optional<double> scale,
                                              bool use_qk_l2norm_in_kernel,
                                              const std::optional<at::Tensor>& cu_seqlens) {
  return delta::dispatch::recurrent_inplace(q, k, v, g, beta, state, scale, use_qk_l2norm_in_kernel, cu_seqlens);
}

}  // namespace linattn
