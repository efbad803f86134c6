#include "ops/delta_rule/delta_common.h"

#include <cmath>

#include <ATen/ATen.h>

#include "core/checks.h"

namespace linattn::delta {

void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const OptTensor& g, const at::Tensor& beta, const OptTensor& initial_state,
                  const OptTensor& cu_seqlens) {
  check_rank(q, op, "q", 4, "[B, T, H, K]");
  check_floating(q, op, "q");
  TORCH_CHECK(q.sym_size(2) >= 1 && q.sym_size(3) >= 1, op, ": q must have H >= 1 and K >= 1, got shape ",
              q.sym_sizes());
  check_rank(k, op, "k", 4, "[B, T, H, K]");
  check_same_device(k, q, op, "k");
  TORCH_CHECK(k.sym_sizes() == q.sym_sizes(), op, ": k must have the shape of q ", q.sym_sizes(),
              " ([B, T, H, K]), got ", k.sym_sizes());
  check_rank(v, op, "v", 4, "[B, T, HV, V]");
  check_same_device(v, q, op, "v");
  for (int64_t d = 0; d < 2; ++d) check_dim_eq(v, d, q.sym_size(d), op, "v", "[B, T, HV, V] with B, T of q");
  TORCH_CHECK(v.sym_size(3) >= 1 && v.sym_size(2) >= 1, op, ": v must have HV >= 1 and V >= 1, got shape ",
              v.sym_sizes());
  TORCH_CHECK(v.sym_size(2) % q.sym_size(2) == 0, op, ": the value heads HV=", v.sym_size(2),
              " must be a multiple of the q/k heads H=", q.sym_size(2));
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k and v must share one dtype, got q ", q.scalar_type(), ", k ", k.scalar_type(), ", v ",
              v.scalar_type());
  auto check_gate = [&](const at::Tensor& t, const char* name) {
    check_rank(t, op, name, 3, "[B, T, HV]");
    for (int64_t d = 0; d < 3; ++d) check_dim_eq(t, d, v.sym_size(d), op, name, "[B, T, HV] with B, T, HV of v");
    check_floating(t, op, name);
    check_same_device(t, q, op, name);
  };
  check_gate(beta, "beta");
  if (g.has_value()) check_gate(*g, "g");
  check_cu_seqlens(cu_seqlens, q, op);
  if (initial_state.has_value()) {
    const at::Tensor& h0 = *initial_state;
    const char* layout = "[N, HV, K, V] (N = batch size, or number of sequences with cu_seqlens)";
    check_rank(h0, op, "initial_state", 4, layout);
    check_dim_eq(h0, 0, cu_seqlens.has_value() ? cu_seqlens->sym_size(0) - 1 : q.sym_size(0), op, "initial_state",
                 layout);
    check_dim_eq(h0, 1, v.sym_size(2), op, "initial_state", layout);
    check_dim_eq(h0, 2, q.sym_size(3), op, "initial_state", layout);
    check_dim_eq(h0, 3, v.sym_size(3), op, "initial_state", layout);
    check_floating(h0, op, "initial_state");
    check_same_device(h0, q, op, "initial_state");
  }
}

at::Tensor l2norm(const at::Tensor& x) { return x * at::rsqrt(x.square().sum(-1, true) + 1e-6); }

at::Tensor l2norm_backward(const at::Tensor& x, const at::Tensor& dy) {
  const at::Tensor r = at::rsqrt(x.square().sum(-1, true) + 1e-6);
  const at::Tensor y = x * r;
  return r * (dy - y * (y * dy).sum(-1, true));
}

Pair alloc_outputs(const at::Tensor& q, const at::Tensor& v, const OptTensor& cu_seqlens, bool output_final_state) {
  at::Tensor o = at::empty_symint(v.sym_sizes(), q.options());
  const auto opts = q.options().dtype(state_dtype(q));
  const c10::SymInt N = cu_seqlens.has_value() ? cu_seqlens->sym_size(0) - 1 : q.sym_size(0);
  at::Tensor ht = output_final_state ? at::empty_symint({N, v.sym_size(2), q.sym_size(3), v.sym_size(3)}, opts)
                                     : at::empty({0}, opts);
  return {o, ht};
}

double resolve_scale(std::optional<double> scale, const at::Tensor& q) {
  return scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
}

void check_inplace_state(const char* op, const at::Tensor& q, const at::Tensor& state) {
  TORCH_CHECK(state.scalar_type() == state_dtype(q), op, ": state must be ", state_dtype(q), " for ",
              q.scalar_type(), " inputs (the kernels write it in place), got ", state.scalar_type());
  TORCH_CHECK(state.is_contiguous(), op, ": state must be contiguous (the kernels write it in place)");
}

Inputs prepare_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const OptTensor& g, const at::Tensor& beta, const OptTensor& initial_state,
                      const OptTensor& cu_seqlens, bool keep_gate_dtype) {
  const auto dt = keep_gate_dtype ? q.scalar_type() : state_dtype(q);
  Inputs in;
  in.q = q.contiguous();
  in.k = k.contiguous();
  in.v = v.contiguous();
  in.beta = beta.to(dt).contiguous();
  if (g.has_value()) in.g = g->to(dt).contiguous();
  if (initial_state.has_value()) in.h0 = initial_state->to(state_dtype(q)).contiguous();
  in.cu_seqlens = prepare_cu_seqlens(cu_seqlens, q.size(1), op);
  return in;
}

FwdParams make_fwd_params(const Inputs& in, const at::Tensor& o, const at::Tensor& ht, double scale) {
  FwdParams p;
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  p.v = in.v.data_ptr();
  p.o = o.defined() ? o.data_ptr() : nullptr;
  p.beta = in.beta.data_ptr();
  p.g = in.g.defined() ? in.g.data_ptr() : nullptr;
  p.h0 = in.h0.defined() ? in.h0.data_ptr() : nullptr;
  p.ht = ht.defined() && ht.numel() > 0 ? ht.data_ptr() : nullptr;
  p.cu_seqlens = in.cu_seqlens.defined() ? in.cu_seqlens.data_ptr<int64_t>() : nullptr;
  p.batch = in.q.size(0);
  p.seqlen = in.q.size(1);
  p.num_seqs = in.cu_seqlens.defined() ? in.cu_seqlens.size(0) - 1 : p.batch;
  p.heads = in.q.size(2);
  p.value_heads = in.v.size(2);
  p.dim_k = in.q.size(3);
  p.dim_v = in.v.size(3);
  p.scale = scale;
  return p;
}

BwdResult run_backward_cpu_like(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                                const at::Tensor& beta, const at::Tensor& do_, const OptTensor& dht,
                                std::optional<double> scale, const OptTensor& initial_state,
                                const OptTensor& cu_seqlens, void (*launch)(const BwdParams&, at::ScalarType),
                                void (*check_dtype)(const char*, const at::Tensor&)) {
  const char* op = "_delta_rule_backward";
  check_inputs(op, q, k, v, g, beta, initial_state, cu_seqlens);
  check_dtype(op, q);
  TORCH_CHECK(do_.sizes() == v.sizes(), op, ": do must have the shape of v ", v.sizes(), ", got ", do_.sizes());
  const Inputs in = prepare_inputs(op, q, k, v, g, beta, initial_state, cu_seqlens);
  const auto dt = state_dtype(q);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), HV = v.size(2);
  const int64_t N = in.cu_seqlens.defined() ? in.cu_seqlens.size(0) - 1 : B;
  at::Tensor d_o = do_.to(q.scalar_type()).contiguous();
  at::Tensor dht_c;
  if (dht.has_value() && dht->numel() > 0) {
    TORCH_CHECK(dht->dim() == 4 && dht->size(0) == N && dht->size(1) == HV && dht->size(2) == K &&
                    dht->size(3) == v.size(3),
                op, ": dht must have shape [N, HV, K, V], got ", dht->sizes());
    dht_c = dht->to(dt).contiguous();
  }
  at::Tensor dq = at::empty({B, T, HV, K}, q.options());
  at::Tensor dk = at::empty({B, T, HV, K}, q.options());
  at::Tensor dv = at::empty_like(in.v);
  at::Tensor dbeta = at::empty({B, T, HV}, q.options().dtype(dt));
  at::Tensor dg = g.has_value() ? at::empty({B, T, HV}, q.options().dtype(dt)) : at::Tensor();
  at::Tensor dh0 = initial_state.has_value() ? at::empty_like(in.h0) : at::Tensor();
  if (q.numel() > 0 || dh0.defined()) {
    BwdParams p;
    static_cast<FwdParams&>(p) = make_fwd_params(in, at::Tensor(), at::Tensor(), resolve_scale(scale, q));
    p.do_ = d_o.data_ptr();
    p.dht = dht_c.defined() ? dht_c.data_ptr() : nullptr;
    p.dq = dq.data_ptr();
    p.dk = dk.data_ptr();
    p.dv = dv.data_ptr();
    p.dbeta = dbeta.data_ptr();
    p.dg = dg.defined() ? dg.data_ptr() : nullptr;
    p.dh0 = dh0.defined() ? dh0.data_ptr() : nullptr;
    launch(p, q.scalar_type());
  }
  const int64_t G = HV / H;
  auto group_sum = [&](const at::Tensor& t) { return G == 1 ? t : t.view({B, T, H, G, K}).sum(3); };
  auto empty = at::empty({0}, q.options());
  return {group_sum(dq),
          group_sum(dk),
          dv,
          g.has_value() ? dg.to(g->scalar_type()) : empty,
          dbeta.to(beta.scalar_type()),
          initial_state.has_value() ? dh0.to(initial_state->scalar_type()) : empty};
}

}  // namespace linattn::delta
