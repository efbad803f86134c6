#include "ops/liger/liger_common.h"

#include <ATen/ATen.h>

#include "core/checks.h"
#include "ops/swa/swa_common.h"

namespace linattn::liger {

gla::GateLayout gate_layout(const char* op, const at::Tensor& g) {
  check_defined(g, op, "g");
  TORCH_CHECK(g.dim() == 4 || g.dim() == 3, op,
              ": g must have shape [B, T, H, D] (a log gate per key) or [B, T, H] (one per head), got shape ",
              g.sym_sizes());
  return g.dim() == 4 ? gla::GateLayout::PerKey : gla::GateLayout::Scalar;
}

void check_forward(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                   const at::Tensor& q_rot, const at::Tensor& k_rot, int64_t window_size, const OptTensor& h0) {
  check_rank(q_rot, op, "q_rot", 4, "[B, T, H, D] like q");
  check_rank(k_rot, op, "k_rot", 4, "[B, T, H, D] like k");
  check_rank(q, op, "q", 4, "[B, T, H, D]");
  check_rank(k, op, "k", 4, "[B, T, H, D]");
  TORCH_CHECK(q_rot.sym_sizes() == q.sym_sizes() && k_rot.sym_sizes() == k.sym_sizes(), op,
              ": q_rot and k_rot must have the shapes of q and k, got ", q_rot.sym_sizes(), " and ",
              k_rot.sym_sizes());
  gla::check_inputs(op, q, k, v, g, gate_layout(op, g), std::nullopt, h0, std::nullopt);
  // Before the window's own checks, whose messages call its arguments q, k and v.
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{q_rot, "q_rot"}, {k_rot, "k_rot"}}) {
    check_same_device(t, q, op, name);
    TORCH_CHECK(t.scalar_type() == q.scalar_type(), op, ": ", name, " must have the dtype of q (", q.scalar_type(),
                "), got ", t.scalar_type());
  }
  swa::check_inputs(op, q_rot, k_rot, v, window_size, std::nullopt);
}

void check_backward(const char* op, const at::Tensor& q_feat, const at::Tensor& k_feat, const at::Tensor& v,
                    const at::Tensor& g, const at::Tensor& q_rot, const at::Tensor& k_rot, const at::Tensor& o_win,
                    const at::Tensor& lse, const at::Tensor& d_o, int64_t window_size, const OptTensor& h0) {
  check_forward(op, q_feat, k_feat, v, g, q_rot, k_rot, window_size, h0);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{o_win, "o_win"}, {d_o, "do"}}) {
    check_defined(t, op, name);
    check_same_device(t, q_feat, op, name);
    TORCH_CHECK(t.sym_sizes() == v.sym_sizes(), op, ": ", name, " must have the shape of v ", v.sym_sizes(),
                ", got ", t.sym_sizes());
  }
  check_rank(lse, op, "lse", 3, "[B, T, H]");
  check_same_device(lse, q_feat, op, "lse");
  for (int64_t d = 0; d < 3; ++d) check_dim_eq(lse, d, q_feat.sym_size(d), op, "lse", "[B, T, H] with B, T, H of q");
}

Forward alloc_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool output_final_state) {
  auto [o, ht] = gla::alloc_outputs(q, v, std::nullopt, output_final_state);
  auto [o_win, lse] = swa::alloc_outputs(q, v);
  return {o, ht, o_win, lse, at::empty_symint(q.sym_sizes(), q.options()), at::empty_symint(k.sym_sizes(), k.options())};
}

}  // namespace linattn::liger
