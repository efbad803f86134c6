#pragma once
// Typed dispatcher calls of the delta-rule ops as registered (final_state empty when not requested).
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace linattn::delta::dispatch {

using OptTensor = std::optional<at::Tensor>;
using Pair = std::tuple<at::Tensor, at::Tensor>;

// g absent selects the ungated ops; recurrent selects the fused_recurrent_* ops.
Pair forward(bool recurrent, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
             const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool output_final_state,
             bool use_qk_l2norm, const OptTensor& cu_seqlens);

// linattn::fused_recurrent_delta_rule_inplace (writes the final state into state; returns o).
at::Tensor recurrent_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                             const at::Tensor& beta, const at::Tensor& state, std::optional<double> scale,
                             bool use_qk_l2norm, const OptTensor& cu_seqlens);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g, const at::Tensor& beta,
    const at::Tensor& do_, const OptTensor& dht, std::optional<double> scale, const OptTensor& h0,
    const OptTensor& cu_seqlens);

}  // namespace linattn::delta::dispatch
