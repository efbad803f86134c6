// Meta kernels: shapes and dtypes only, with symbolic sizes, so torch.compile and FakeTensor trace the ops.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "core/checks.h"
#include "ops/gla/gla_entries.h"

namespace linattn::gla {
namespace {

Pair forward_meta(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                  GateLayout layout, const OptTensor& g_gamma, const OptTensor& initial_state,
                  bool output_final_state, const OptTensor& cu_seqlens) {
  check_inputs(op, q, k, v, g, layout, g_gamma, initial_state, cu_seqlens);
  return alloc_outputs(q, v, cu_seqlens, output_final_state);
}

Pair chunk_gla_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                    std::optional<double>, const OptTensor& h0, bool ofs, const OptTensor& cu) {
  return forward_meta("chunk_gla", q, k, v, g, GateLayout::PerKey, std::nullopt, h0, ofs, cu);
}

Pair fused_recurrent_gla_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& gk,
                              std::optional<double>, const OptTensor& h0, bool ofs, const OptTensor& cu) {
  return forward_meta("fused_recurrent_gla", q, k, v, gk, GateLayout::PerKey, std::nullopt, h0, ofs, cu);
}

Pair chunk_simple_gla_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                           const OptTensor& g_gamma, std::optional<double>, const OptTensor& h0, bool ofs,
                           const OptTensor& cu) {
  return forward_meta("chunk_simple_gla", q, k, v, g, GateLayout::Scalar, g_gamma, h0, ofs, cu);
}

Pair fused_recurrent_simple_gla_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     const OptTensor& g, const OptTensor& g_gamma, std::optional<double>,
                                     const OptTensor& h0, bool ofs, const OptTensor& cu) {
  return forward_meta("fused_recurrent_simple_gla", q, k, v, g, GateLayout::Scalar, g_gamma, h0, ofs, cu);
}

BwdResult gla_backward_meta(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                            const OptTensor& g_gamma, const at::Tensor& do_, const OptTensor& dht, std::optional<double>,
                            const OptTensor& initial_state, const OptTensor& cu_seqlens) {
  const GateLayout layout = g.has_value() && g->dim() == 4 ? GateLayout::PerKey : GateLayout::Scalar;
  check_inputs("_gla_backward", q, k, v, g, layout, g_gamma, initial_state, cu_seqlens);
  TORCH_CHECK(do_.sym_sizes() == v.sym_sizes(), "_gla_backward: do must have the shape of v ", v.sym_sizes(),
              ", got ", do_.sym_sizes());
  auto empty = [&] { return at::empty({0}, q.options()); };
  auto like = [](const at::Tensor& t) { return at::empty_symint(t.sym_sizes(), t.options()); };
  return {like(q), like(k), like(v), g.has_value() ? like(*g) : empty(), g_gamma.has_value() ? like(*g_gamma) : empty(),
          initial_state.has_value() ? like(*initial_state) : empty()};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Meta, m) {
  m.impl("chunk_gla", &chunk_gla_meta);
  m.impl("fused_recurrent_gla", &fused_recurrent_gla_meta);
  m.impl("chunk_simple_gla", &chunk_simple_gla_meta);
  m.impl("fused_recurrent_simple_gla", &fused_recurrent_simple_gla_meta);
  m.impl("_gla_backward", &gla_backward_meta);
}

}  // namespace linattn::gla
