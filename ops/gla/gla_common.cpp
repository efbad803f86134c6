#include "ops/gla/gla_common.h"

#include <cmath>

#include <ATen/ATen.h>

#include "core/checks.h"

namespace linattn::gla {

namespace {

void check_same_shape(const at::Tensor& t, const at::Tensor& q, const char* op, const char* name) {
  TORCH_CHECK(t.sym_sizes() == q.sym_sizes(), op, ": ", name, " must have the shape of q ", q.sym_sizes(),
              " ([B, T, H, K]), got ", t.sym_sizes());
}

c10::SymInt num_seqs(const at::Tensor& q, const std::optional<at::Tensor>& cu_seqlens) {
  return cu_seqlens.has_value() ? cu_seqlens->sym_size(0) - 1 : q.sym_size(0);
}

}  // namespace

void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const std::optional<at::Tensor>& g, GateLayout layout, const std::optional<at::Tensor>& g_gamma,
                  const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  check_rank(q, op, "q", 4, "[B, T, H, K]");
  check_floating(q, op, "q");
  TORCH_CHECK(q.sym_size(3) >= 1 && q.sym_size(2) >= 1, op, ": q must have H >= 1 and K >= 1, got shape ",
              q.sym_sizes());
  check_rank(k, op, "k", 4, "[B, T, H, K]");
  check_same_device(k, q, op, "k");
  check_same_shape(k, q, op, "k");
  check_rank(v, op, "v", 4, "[B, T, H, V]");
  check_same_device(v, q, op, "v");
  for (int64_t d = 0; d < 3; ++d) check_dim_eq(v, d, q.sym_size(d), op, "v", "[B, T, H, V] with B, T, H of q");
  TORCH_CHECK(v.sym_size(3) >= 1, op, ": v must have V >= 1, got shape ", v.sym_sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k and v must share one dtype, got q ", q.scalar_type(), ", k ", k.scalar_type(), ", v ",
              v.scalar_type());

  if (g.has_value()) {
    if (layout == GateLayout::PerKey) {
      check_rank(*g, op, "g", 4, "[B, T, H, K]");
      check_same_shape(*g, q, op, "g");
    } else {
      check_rank(*g, op, "g", 3, "[B, T, H]");
      for (int64_t d = 0; d < 3; ++d) check_dim_eq(*g, d, q.sym_size(d), op, "g", "[B, T, H] with B, T, H of q");
    }
    check_floating(*g, op, "g");
    check_same_device(*g, q, op, "g");
  }
  if (g_gamma.has_value()) {
    check_rank(*g_gamma, op, "g_gamma", 1, "[H]");
    check_dim_eq(*g_gamma, 0, q.sym_size(2), op, "g_gamma", "[H] with H of q");
    check_floating(*g_gamma, op, "g_gamma");
    check_same_device(*g_gamma, q, op, "g_gamma");
  }
  check_cu_seqlens(cu_seqlens, q, op);
  if (initial_state.has_value()) {
    const at::Tensor& h0 = *initial_state;
    const char* layout_str = "[N, H, K, V] (N = batch size, or number of sequences with cu_seqlens)";
    check_rank(h0, op, "initial_state", 4, layout_str);
    check_dim_eq(h0, 0, num_seqs(q, cu_seqlens), op, "initial_state", layout_str);
    check_dim_eq(h0, 1, q.sym_size(2), op, "initial_state", layout_str);
    check_dim_eq(h0, 2, q.sym_size(3), op, "initial_state", layout_str);
    check_dim_eq(h0, 3, v.sym_size(3), op, "initial_state", layout_str);
    check_floating(h0, op, "initial_state");
    check_same_device(h0, q, op, "initial_state");
  }
}

double resolve_scale(std::optional<double> scale, const at::Tensor& q) {
  return scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
}

std::tuple<at::Tensor, at::Tensor> alloc_outputs(const at::Tensor& q, const at::Tensor& v,
                                                 const std::optional<at::Tensor>& cu_seqlens,
                                                 bool output_final_state) {
  at::Tensor o = at::empty_symint(v.sym_sizes(), q.options());
  const auto state_opts = q.options().dtype(state_dtype(q));
  at::Tensor ht = output_final_state
                      ? at::empty_symint({num_seqs(q, cu_seqlens), q.sym_size(2), q.sym_size(3), v.sym_size(3)},
                                         state_opts)
                      : at::empty({0}, state_opts);
  return {o, ht};
}

Gate prepare_gate(const std::optional<at::Tensor>& g, const std::optional<at::Tensor>& g_gamma,
                  const at::Tensor& q) {
  const auto dt = state_dtype(q);
  const int64_t H = q.size(2), K = q.size(3);
  Gate gate;
  if (g.has_value() && g->dim() == 4) {
    gate.values = g->to(dt).contiguous();
    gate.tok_stride = H * K;
    gate.head_stride = K;
    gate.k_stride = 1;
  } else if (g.has_value()) {
    gate.values = g->to(dt);
    if (g_gamma.has_value()) gate.values = gate.values + g_gamma->to(dt);
    gate.values = gate.values.contiguous();
    gate.tok_stride = H;
    gate.head_stride = 1;
  } else if (g_gamma.has_value()) {
    gate.values = g_gamma->to(dt).contiguous();
    gate.head_stride = 1;
  }
  return gate;
}

Inputs prepare_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const std::optional<at::Tensor>& g, const std::optional<at::Tensor>& g_gamma,
                      const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  Inputs in;
  in.q = q.contiguous();
  in.k = k.contiguous();
  in.v = v.contiguous();
  in.gate = prepare_gate(g, g_gamma, q);
  if (initial_state.has_value()) in.h0 = initial_state->to(state_dtype(q)).contiguous();
  in.cu_seqlens = prepare_cu_seqlens(cu_seqlens, q.size(1), op);
  return in;
}

FwdParams make_fwd_params(const Inputs& in, const at::Tensor& o, const at::Tensor& ht, double scale) {
  FwdParams p;
  const int64_t B = in.q.size(0), T = in.q.size(1), H = in.q.size(2), K = in.q.size(3), V = in.v.size(3);
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  p.v = in.v.data_ptr();
  p.o = o.defined() ? o.data_ptr() : nullptr;
  if (in.gate.values.defined()) {
    p.g = in.gate.values.data_ptr();
    p.g_tok_stride = in.gate.tok_stride;
    p.g_head_stride = in.gate.head_stride;
    p.g_k_stride = in.gate.k_stride;
  }
  p.h0 = in.h0.defined() ? in.h0.data_ptr() : nullptr;
  p.ht = ht.numel() > 0 ? ht.data_ptr() : nullptr;
  p.cu_seqlens = in.cu_seqlens.defined() ? in.cu_seqlens.data_ptr<int64_t>() : nullptr;
  p.batch = B;
  p.seqlen = T;
  p.num_seqs = in.cu_seqlens.defined() ? in.cu_seqlens.size(0) - 1 : B;
  p.heads = H;
  p.dim_k = K;
  p.dim_v = V;
  p.q_tok_stride = H * K;
  p.q_head_stride = K;
  p.k_tok_stride = H * K;
  p.k_head_stride = K;
  p.v_tok_stride = H * V;
  p.v_head_stride = V;
  p.scale = scale;
  return p;
}

BwdOutputs alloc_bwd_outputs(const Inputs& in, bool want_dg) {
  BwdOutputs out;
  out.dq = at::empty_like(in.q);
  out.dk = at::empty_like(in.k);
  out.dv = at::empty_like(in.v);
  const auto state_opts = in.q.options().dtype(state_dtype(in.q));
  if (want_dg) {
    const bool per_key = in.gate.k_stride != 0;
    out.dg = per_key ? at::empty(in.q.sizes(), state_opts)
                     : at::empty({in.q.size(0), in.q.size(1), in.q.size(2)}, state_opts);
  }
  if (in.h0.defined()) out.dh0 = at::empty_like(in.h0);
  return out;
}

BwdParams make_bwd_params(const Inputs& in, const at::Tensor& do_, const at::Tensor& dht, const BwdOutputs& out,
                          double scale) {
  BwdParams p;
  static_cast<FwdParams&>(p) = make_fwd_params(in, at::Tensor(), at::empty({0}), scale);
  p.do_ = do_.data_ptr();
  p.dht = dht.defined() && dht.numel() > 0 ? dht.data_ptr() : nullptr;
  p.dq = out.dq.data_ptr();
  p.dk = out.dk.data_ptr();
  p.dv = out.dv.data_ptr();
  p.dg = out.dg.defined() ? out.dg.data_ptr() : nullptr;
  p.dg_sum_k = out.dg.defined() && out.dg.dim() == 3;
  p.dh0 = out.dh0.defined() ? out.dh0.data_ptr() : nullptr;
  return p;
}

std::tuple<at::Tensor, at::Tensor> finish_gate_grads(const at::Tensor& dg_state, const std::optional<at::Tensor>& g,
                                                     const std::optional<at::Tensor>& g_gamma, const at::Tensor& q) {
  at::Tensor dg = at::empty({0}, q.options());
  at::Tensor dg_gamma = at::empty({0}, q.options());
  if (g.has_value()) dg = dg_state.to(g->scalar_type());
  if (g_gamma.has_value()) dg_gamma = dg_state.sum(at::IntArrayRef{0, 1}).to(g_gamma->scalar_type());
  return {dg, dg_gamma};
}

BwdCall prepare_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& g, const std::optional<at::Tensor>& g_gamma,
                         const at::Tensor& do_, const std::optional<at::Tensor>& dht,
                         const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens) {
  const char* op = "_gla_backward";
  const GateLayout layout = g.has_value() && g->dim() == 4 ? GateLayout::PerKey : GateLayout::Scalar;
  check_inputs(op, q, k, v, g, layout, g_gamma, initial_state, cu_seqlens);
  check_rank(do_, op, "do", 4, "[B, T, H, V]");
  TORCH_CHECK(do_.sizes() == v.sizes(), op, ": do must have the shape of v ", v.sizes(), ", got ", do_.sizes());
  BwdCall call;
  call.in = prepare_inputs(op, q, k, v, g, g_gamma, initial_state, cu_seqlens);
  call.do_ = do_.to(q.scalar_type()).contiguous();
  if (dht.has_value() && dht->numel() > 0) {
    const int64_t N = call.in.cu_seqlens.defined() ? call.in.cu_seqlens.size(0) - 1 : q.size(0);
    TORCH_CHECK(dht->dim() == 4 && dht->size(0) == N && dht->size(1) == q.size(2) && dht->size(2) == q.size(3) &&
                    dht->size(3) == v.size(3),
                op, ": dht must have shape [N, H, K, V], got ", dht->sizes());
    call.dht = dht->to(state_dtype(q)).contiguous();
  }
  call.out = alloc_bwd_outputs(call.in, g.has_value() || g_gamma.has_value());
  return call;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> finish_backward(
    const BwdCall& call, const at::Tensor& q, const std::optional<at::Tensor>& g,
    const std::optional<at::Tensor>& g_gamma, const std::optional<at::Tensor>& initial_state) {
  auto [dg, dg_gamma] = finish_gate_grads(call.out.dg, g, g_gamma, q);
  at::Tensor dh0 = initial_state.has_value() ? call.out.dh0.to(initial_state->scalar_type())
                                             : at::empty({0}, q.options());
  return {call.out.dq, call.out.dk, call.out.dv, dg, dg_gamma, dh0};
}

}  // namespace linattn::gla
