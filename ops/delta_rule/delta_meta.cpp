// Meta kernels of the delta-rule ops: shapes and dtypes with symbolic sizes, for torch.compile.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/delta_rule/delta_common.h"

namespace linattn::delta {
namespace {

Pair fwd(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
         const at::Tensor& beta, const OptTensor& h0, bool ofs, const OptTensor& cu) {
  check_inputs(op, q, k, v, g, beta, h0, cu);
  return alloc_outputs(q, v, cu, ofs);
}

Pair chunk_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                      std::optional<double>, const OptTensor& h0, bool ofs, bool, const OptTensor& cu) {
  return fwd("chunk_delta_rule", q, k, v, std::nullopt, beta, h0, ofs, cu);
}
Pair fused_recurrent_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& beta, std::optional<double>, const OptTensor& h0, bool ofs, bool,
                                const OptTensor& cu) {
  return fwd("fused_recurrent_delta_rule", q, k, v, std::nullopt, beta, h0, ofs, cu);
}
Pair chunk_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                            const at::Tensor& beta, std::optional<double>, const OptTensor& h0, bool ofs, bool,
                            const OptTensor& cu) {
  return fwd("chunk_gated_delta_rule", q, k, v, g, beta, h0, ofs, cu);
}
Pair fused_recurrent_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& g, const at::Tensor& beta, std::optional<double>,
                                      const OptTensor& h0, bool ofs, bool, const OptTensor& cu) {
  return fwd("fused_recurrent_gated_delta_rule", q, k, v, g, beta, h0, ofs, cu);
}
at::Tensor fused_recurrent_delta_rule_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const OptTensor& g, const at::Tensor& beta, const at::Tensor& state,
                                              std::optional<double>, bool, const OptTensor& cu) {
  const char* op = "fused_recurrent_delta_rule_inplace";
  check_inputs(op, q, k, v, g, beta, state, cu);
  check_inplace_state(op, q, state);
  return std::get<0>(alloc_outputs(q, v, cu, false));
}
BwdResult delta_rule_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                              const at::Tensor& beta, const at::Tensor& do_, const OptTensor&, std::optional<double>,
                              const OptTensor& h0, const OptTensor& cu) {
  check_inputs("_delta_rule_backward", q, k, v, g, beta, h0, cu);
  TORCH_CHECK(do_.sym_sizes() == v.sym_sizes(), "_delta_rule_backward: do must have the shape of v");
  auto like = [](const at::Tensor& t) { return at::empty_symint(t.sym_sizes(), t.options()); };
  auto empty = at::empty({0}, q.options());
  return {like(q), like(k), like(v), g.has_value() ? like(*g) : empty, like(beta), h0.has_value() ? like(*h0) : empty};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Meta, m) {
  m.impl("chunk_delta_rule", &chunk_delta_rule);
  m.impl("fused_recurrent_delta_rule", &fused_recurrent_delta_rule);
  m.impl("chunk_gated_delta_rule", &chunk_gated_delta_rule);
  m.impl("fused_recurrent_gated_delta_rule", &fused_recurrent_gated_delta_rule);
  m.impl("fused_recurrent_delta_rule_inplace", &fused_recurrent_delta_rule_inplace);
  m.impl("_delta_rule_backward", &delta_rule_backward);
}

}  // namespace linattn::delta
