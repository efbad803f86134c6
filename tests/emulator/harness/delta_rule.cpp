// Delta-rule launchers on the emulator; mirrors ops/delta_rule/delta_cuda.cpp (prepare_inputs /
// make_fwd_params of delta_common.cpp, the backward's fp32 workspaces, dq / dk summed over value-head groups
// by the kernels, the tensor-core forward and the tensor-core states, dstates and grads passes for fp16 / bf16). q and k arrive already
// L2-normalised when the op asks for it (the glue does that in ATen), except in delta_recurrent_inplace with
// l2norm_qk, where the recurrent kernel normalises them as it does for the CUDA glue.
#include <torch/library.h>

#include "common.h"
#include "ops/delta_rule/cuda/delta_launch.h"

namespace linattn_emu {
namespace {

namespace gpu = linattn::delta::gpu;

struct DeltaCall {
  Fence fence;
  at::Tensor q, k, v, beta, g, h0, cu;
  linattn::delta::FwdParams p;
};

using linattn::delta::recurrent_gates_in_input_dtype;  // the glue's rule (ops/delta_rule/delta_params.h)

// raw_gates: beta and g keep their dtype (the recurrent kernel's FwdParams::gates_in_input_dtype), as the glue's
// decoding path passes them when recurrent_gates_in_input_dtype holds.
void setup(DeltaCall& c, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
           const at::Tensor& beta, double scale, const OptTensor& h0, const OptTensor& cu, bool raw_gates = false) {
  c.q = c.fence.copy(q, "q");
  c.k = c.fence.copy(k, "k");
  c.v = c.fence.copy(v, "v");
  const at::ScalarType gate_dtype = raw_gates ? q.scalar_type() : at::kFloat;
  c.beta = c.fence.copy(beta, gate_dtype, "beta");
  if (g.has_value()) c.g = c.fence.copy(*g, gate_dtype, "g");
  if (h0.has_value()) c.h0 = c.fence.copy(*h0, at::kFloat, "h0");
  if (cu.has_value()) c.cu = c.fence.copy(*cu, "cu_seqlens");
  auto& p = c.p;
  p.q = c.q.data_ptr();
  p.k = c.k.data_ptr();
  p.v = c.v.data_ptr();
  p.beta = c.beta.data_ptr();
  p.g = c.g.defined() ? c.g.data_ptr() : nullptr;
  p.h0 = c.h0.defined() ? c.h0.data_ptr() : nullptr;
  p.cu_seqlens = c.cu.defined() ? c.cu.data_ptr<int64_t>() : nullptr;
  p.batch = q.size(0);
  p.seqlen = q.size(1);
  p.num_seqs = c.cu.defined() ? c.cu.size(0) - 1 : p.batch;
  p.heads = q.size(2);
  p.value_heads = v.size(2);
  p.dim_k = q.size(3);
  p.dim_v = v.size(3);
  p.scale = scale;
  p.gates_in_input_dtype = raw_gates;
}

// The glue's choice of chunked forward: fp16 / bf16 run on tensor cores unless LINATTN_DELTA_FORCE_SIMT=1
// (here: force_simt) keeps them on the SIMT kernel.
struct TcWorkspace {
  at::Tensor w, pm, u, t;
  gpu::TcFwdWorkspace ws;
};

// backward: T as well, for the tensor-core dstates pass.
TcWorkspace tc_workspace(DeltaCall& c, bool backward) {
  const gpu::TcFwdWorkspaceSizes sizes = gpu::tc_fwd_workspace_sizes(c.p);
  TcWorkspace t;
  t.w = c.fence.empty({sizes.w_elems}, c.q.scalar_type(), "tc ws.w");
  t.pm = c.fence.empty({sizes.p_elems}, c.q.scalar_type(), "tc ws.p");
  t.u = c.fence.empty({sizes.u_elems}, at::kFloat, "tc ws.u");
  t.ws.w = t.w.data_ptr();
  t.ws.p = t.pm.data_ptr();
  t.ws.u = t.u.data_ptr<float>();
  if (backward) {
    t.t = c.fence.empty({sizes.t_elems}, c.q.scalar_type(), "tc ws.t");
    t.ws.t = t.t.data_ptr();
  }
  return t;
}

template <gpu::DType D>
void chunk_forward(DeltaCall& c, bool force_simt) {
  if constexpr (D != gpu::DType::kFloat32) {
    if (gpu::tc_forward_supported(D) && !force_simt) {
      const TcWorkspace t = tc_workspace(c, false);
      gpu::chunk_forward_tc<D>(c.p, t.ws, nullptr);
      return;
    }
  }
  gpu::chunk_forward<D>(c.p, nullptr);
}

// The glue's backward: passes 1 (states), 2 (dstates) and 3 (grads) on tensor cores for fp16 / bf16 unless
// force_simt. tc_grads_only (not a glue path): the SIMT passes 1 and 2, then the tensor-core pass 3, so that pass 3
// can be compared with the SIMT pass 3 on the same fp32 workspaces (its own error, without passes 1 and 2's).
template <gpu::DType D>
void chunk_backward(DeltaCall& c, const linattn::delta::BwdParams& p, const gpu::BwdWorkspace& ws, bool force_simt,
                    bool tc_grads_only) {
  if constexpr (D != gpu::DType::kFloat32) {
    if (tc_grads_only) {
      gpu::backward_states<D>(p, ws, nullptr);
      gpu::backward_dstates<D>(p, ws, nullptr);
      gpu::backward_grads_tc<D>(p, ws, nullptr);
      return;
    }
    if (gpu::tc_forward_supported(D) && !force_simt) {
      const TcWorkspace t = tc_workspace(c, true);
      gpu::chunk_backward_tc<D>(p, t.ws, ws, nullptr);
      return;
    }
  }
  gpu::chunk_backward<D>(p, ws, nullptr);
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const OptTensor& g, const at::Tensor& beta, double scale,
                                           const OptTensor& h0, const OptTensor& cu, bool recurrent, bool final_state,
                                           bool force_simt) {
  DeltaCall c;
  setup(c, q, k, v, g, beta, scale, h0, cu, recurrent && recurrent_gates_in_input_dtype(q, beta, g));
  at::Tensor o = c.fence.empty(v.sizes(), q.scalar_type(), "o");
  at::Tensor ht = final_state ? c.fence.empty({c.p.num_seqs, v.size(2), q.size(3), v.size(3)}, at::kFloat, "ht")
                              : at::empty({0}, at::kFloat);
  c.p.o = o.data_ptr();
  c.p.ht = ht.numel() > 0 ? ht.data_ptr() : nullptr;
  if (q.numel() > 0 || ht.numel() > 0) {
    dispatch_dtype<gpu::DType>(q.scalar_type(), [&]<gpu::DType D>() {
      if (recurrent) {
        gpu::recurrent_forward<D>(c.p, nullptr);
      } else {
        chunk_forward<D>(c, force_simt);
      }
    });
  }
  c.fence.check();
  return {o, ht};
}

// fused_recurrent_delta_rule_inplace: the recurrent kernel with ht == h0 (one fenced buffer read as the initial
// state and overwritten with the final one). Returns o and that buffer.
// l2norm_qk: q and k are raw and the kernel normalises them, as the CUDA glue asks for use_qk_l2norm_in_kernel.
std::tuple<at::Tensor, at::Tensor> recurrent_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                     const OptTensor& g, const at::Tensor& beta, double scale,
                                                     const at::Tensor& state, const OptTensor& cu, bool l2norm_qk) {
  DeltaCall c;
  setup(c, q, k, v, g, beta, scale, state, cu, recurrent_gates_in_input_dtype(q, beta, g));
  c.p.l2norm_qk = l2norm_qk;
  at::Tensor o = c.fence.empty(v.sizes(), q.scalar_type(), "o");
  c.p.o = o.data_ptr();
  c.p.ht = c.h0.data_ptr();
  dispatch_dtype<gpu::DType>(q.scalar_type(), [&]<gpu::DType D>() { gpu::recurrent_forward<D>(c.p, nullptr); });
  c.fence.check();
  return {o, c.h0};
}

// Returns dq, dk ([B,T,H,K]), dv, dbeta (fp32), dg (fp32; empty without g), dh0 (empty without h0).
std::vector<at::Tensor> backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                                 const at::Tensor& beta, double scale, const OptTensor& h0, const OptTensor& cu,
                                 const at::Tensor& d_o, const OptTensor& dht, bool force_simt, bool tc_grads_only) {
  DeltaCall c;
  setup(c, q, k, v, g, beta, scale, h0, cu);
  const int64_t B = q.size(0), T = q.size(1), HV = v.size(2);
  linattn::delta::BwdParams p;
  static_cast<linattn::delta::FwdParams&>(p) = c.p;
  const at::Tensor do_c = c.fence.copy(d_o, q.scalar_type(), "do");
  const OptTensor dht_c = c.fence.copy(dht, at::kFloat, "dht");
  at::Tensor dq = c.fence.empty(q.sizes(), q.scalar_type(), "dq");
  at::Tensor dk = c.fence.empty(q.sizes(), q.scalar_type(), "dk");
  at::Tensor dv = c.fence.empty(v.sizes(), q.scalar_type(), "dv");
  at::Tensor dbeta = c.fence.empty({B, T, HV}, at::kFloat, "dbeta");
  at::Tensor dg = g.has_value() ? c.fence.empty({B, T, HV}, at::kFloat, "dg") : at::Tensor();
  at::Tensor dh0 = h0.has_value() ? c.fence.empty(h0->sizes(), at::kFloat, "dh0") : at::Tensor();
  if (q.numel() > 0 || dh0.defined()) {
    p.do_ = do_c.data_ptr();
    p.dht = ptr(dht_c);
    p.dq = dq.data_ptr();
    p.dk = dk.data_ptr();
    p.dv = dv.data_ptr();
    p.dbeta = dbeta.data_ptr();
    p.dg = dg.defined() ? dg.data_ptr() : nullptr;
    p.dh0 = dh0.defined() ? dh0.data_ptr() : nullptr;
    const gpu::BwdWorkspaceSizes sizes = gpu::bwd_workspace_sizes(p);
    const at::Tensor states = c.fence.empty({sizes.state_elems}, at::kFloat, "ws.states");
    const at::Tensor dstates = c.fence.empty({sizes.state_elems}, at::kFloat, "ws.dstates");
    // The glue carves u, z, dr (and dq, dk) out of one tensor; separate fences also catch a kernel that
    // runs from one into the next.
    auto ws_rows = [&](int64_t n, const char* name) { return c.fence.empty({n}, at::kFloat, name).data_ptr<float>(); };
    gpu::BwdWorkspace ws;
    ws.states = states.data_ptr<float>();
    ws.dstates = dstates.data_ptr<float>();
    ws.u = ws_rows(sizes.row_v_elems, "ws.u");
    ws.z = ws_rows(sizes.row_v_elems, "ws.z");
    ws.dr = ws_rows(sizes.row_v_elems, "ws.dr");
    ws.dq = ws_rows(sizes.row_k_elems, "ws.dq");
    ws.dk = ws_rows(sizes.row_k_elems, "ws.dk");
    dispatch_dtype<gpu::DType>(q.scalar_type(), [&]<gpu::DType D>() { chunk_backward<D>(c, p, ws, force_simt, tc_grads_only); });
  }
  c.fence.check();
  const at::Tensor none = at::empty({0});
  return {dq, dk, dv, dbeta, dg.defined() ? dg : none, dh0.defined() ? dh0 : none};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(linattn_emu, m) {
  m.def("delta_forward(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor beta, float scale, Tensor? h0, "
        "Tensor? cu_seqlens, bool recurrent, bool final_state, bool force_simt=False) -> (Tensor, Tensor)",
        &forward);
  m.def("delta_backward(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor beta, float scale, Tensor? h0, "
        "Tensor? cu_seqlens, Tensor do, Tensor? dht, bool force_simt=False, bool tc_grads_only=False) -> Tensor[]",
        &backward);
  m.def("delta_recurrent_inplace(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor beta, float scale, Tensor state, "
        "Tensor? cu_seqlens, bool l2norm_qk=False) -> (Tensor, Tensor)",
        &recurrent_inplace);
}

}  // namespace linattn_emu
