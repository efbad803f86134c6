// GLA launchers on the emulator; mirrors ops/gla/gla_cuda.cpp and the shared glue of ops/gla/gla_common.cpp
// (gate layouts, params, fp32 workspaces, the tensor-core / SIMT choice of the chunked forward and backward).
#include <torch/library.h>

#include "common.h"
#include "ops/gla/cuda/gla_launch.h"

namespace linattn_emu {
namespace {

namespace gpu = linattn::gla::gpu;

struct GlaCall {
  Fence fence;
  at::Tensor q, k, v, gate, h0, cu;
  linattn::gla::FwdParams p;
};

// prepare_inputs + make_fwd_params: per-key gates [B,T,H,K], scalar gates [B,T,H] (plus g_gamma), or
// g_gamma [H] alone, all as fp32 with the strides the kernels read them through.
void setup(GlaCall& c, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
           const OptTensor& g_gamma, double scale, const OptTensor& h0, const OptTensor& cu) {
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), K = q.size(3), V = v.size(3);
  c.q = c.fence.copy(q, "q");
  c.k = c.fence.copy(k, "k");
  c.v = c.fence.copy(v, "v");
  auto& p = c.p;
  if (g.has_value()) {
    at::Tensor values = g->to(at::kFloat);
    if (g->dim() == 3 && g_gamma.has_value()) values = values + g_gamma->to(at::kFloat);
    c.gate = c.fence.copy(values, "g");
    p.g_tok_stride = g->dim() == 4 ? H * K : H;
    p.g_head_stride = g->dim() == 4 ? K : 1;
    p.g_k_stride = g->dim() == 4 ? 1 : 0;
  } else if (g_gamma.has_value()) {
    c.gate = c.fence.copy(*g_gamma, at::kFloat, "g_gamma");
    p.g_head_stride = 1;
  }
  if (h0.has_value()) c.h0 = c.fence.copy(*h0, at::kFloat, "h0");
  if (cu.has_value()) c.cu = c.fence.copy(*cu, "cu_seqlens");
  p.q = c.q.data_ptr();
  p.k = c.k.data_ptr();
  p.v = c.v.data_ptr();
  p.g = c.gate.defined() ? c.gate.data_ptr() : nullptr;
  p.h0 = c.h0.defined() ? c.h0.data_ptr() : nullptr;
  p.cu_seqlens = c.cu.defined() ? c.cu.data_ptr<int64_t>() : nullptr;
  p.batch = B;
  p.seqlen = T;
  p.num_seqs = c.cu.defined() ? c.cu.size(0) - 1 : B;
  p.heads = H;
  p.dim_k = K;
  p.dim_v = V;
  p.q_tok_stride = p.k_tok_stride = H * K;
  p.q_head_stride = p.k_head_stride = K;
  p.v_tok_stride = H * V;
  p.v_head_stride = V;
  p.scale = scale;
}

// The glue's choice of forward: fp16 / bf16 chunked forwards run on tensor cores (the scalar / no-gate kernels
// or the per-key-gate ones) unless LINATTN_GLA_FORCE_SIMT=1 (here: force_simt) keeps them on the SIMT kernels.
template <gpu::DType D>
void chunk_forward(GlaCall& c, bool force_simt) {
#if __has_include("ops/gla/cuda/gla_fwd_tc.cuh")
  if constexpr (D != gpu::DType::kFloat32) {
    if (gpu::tc_forward_supported(D, c.p) && !force_simt) {
      const at::Tensor ws = c.fence.empty({gpu::chunk_forward_tc_workspace_floats(c.p)}, at::kFloat, "tc workspace");
      gpu::chunk_forward_tc<D>(c.p, ws.data_ptr<float>(), nullptr);
      return;
    }
  }
#endif
#if __has_include("ops/gla/cuda/gla_fwd_tc_vec.cuh")
  if constexpr (D != gpu::DType::kFloat32) {
    if (gpu::tc_vec_forward_supported(D, c.p) && !force_simt) {
      const at::Tensor ws =
          c.fence.empty({gpu::chunk_forward_tc_workspace_floats(c.p)}, at::kFloat, "tc vec workspace");
      gpu::chunk_forward_tc_vec<D>(c.p, ws.data_ptr<float>(), nullptr);
      return;
    }
  }
#endif
  gpu::chunk_forward<D>(c.p, nullptr);
}

// o_mix, lin_w, mix_w: Liger's mix in the output write (FwdParams::o_mix), as ops/liger/liger_cuda.cpp sets it.
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const OptTensor& g, const OptTensor& g_gamma, double scale,
                                           const OptTensor& h0, const OptTensor& cu, bool recurrent, bool final_state,
                                           bool force_simt, const OptTensor& o_mix, double lin_w, double mix_w) {
  GlaCall c;
  setup(c, q, k, v, g, g_gamma, scale, h0, cu);
  const OptTensor mix = c.fence.copy(o_mix, q.scalar_type(), "o_mix");
  c.p.o_mix = ptr(mix);
  c.p.lin_w = lin_w;
  c.p.mix_w = mix_w;
  at::Tensor o = c.fence.empty(v.sizes(), q.scalar_type(), "o");
  at::Tensor ht = final_state ? c.fence.empty({c.p.num_seqs, q.size(2), q.size(3), v.size(3)}, at::kFloat, "ht")
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

// The glue's choice of backward: the tensor-core kernels (scalar / no gate, or per-key gates) for the inputs the
// tensor-core forwards take, unless force_simt.
template <gpu::DType D>
void chunk_backward(const linattn::gla::BwdParams& p, Fence& fence, bool force_simt) {
#if __has_include("ops/gla/cuda/gla_bwd_tc.cuh")
  if constexpr (D != gpu::DType::kFloat32) {
    if (gpu::tc_backward_supported(D, p) && !force_simt) {
      const at::Tensor ws =
          fence.empty({gpu::chunk_backward_tc_workspace(p).total}, at::kFloat, "tc backward workspace");
      gpu::chunk_backward_tc<D>(p, ws.data_ptr<float>(), nullptr);
      return;
    }
  }
#endif
#if __has_include("ops/gla/cuda/gla_bwd_tc_vec.cuh")
  if constexpr (D != gpu::DType::kFloat32) {
    if (gpu::tc_vec_backward_supported(D, p) && !force_simt) {
      const at::Tensor ws =
          fence.empty({gpu::chunk_backward_tc_vec_workspace(p).total}, at::kFloat, "tc vec backward workspace");
      gpu::chunk_backward_tc_vec<D>(p, ws.data_ptr<float>(), nullptr);
      return;
    }
  }
#endif
  const gpu::BwdWorkspaceSizes sizes = gpu::bwd_workspace_sizes(p);
  const at::Tensor states = fence.empty({sizes.state_elems}, at::kFloat, "ws.states");
  const at::Tensor dstates = fence.empty({sizes.state_elems}, at::kFloat, "ws.dstates");
  const at::Tensor dg_partial = fence.empty({sizes.dg_partial_elems}, at::kFloat, "ws.dg_partial");
  gpu::BwdWorkspace ws;
  ws.states = states.data_ptr<float>();
  ws.dstates = dstates.data_ptr<float>();
  ws.dg_partial = sizes.dg_partial_elems > 0 ? dg_partial.data_ptr<float>() : nullptr;
  gpu::chunk_backward<D>(p, ws, nullptr);
}

// Returns dq, dk, dv, dg (fp32, [B,T,H,K] or [B,T,H]; empty without gates), dh0 (empty without h0).
// do_scale: BwdParams::do_scale (Liger's linear weight).
std::vector<at::Tensor> backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                                 const OptTensor& g_gamma, double scale, const OptTensor& h0, const OptTensor& cu,
                                 const at::Tensor& d_o, const OptTensor& dht, bool force_simt, double do_scale) {
  GlaCall c;
  setup(c, q, k, v, g, g_gamma, scale, h0, cu);
  linattn::gla::BwdParams p;
  static_cast<linattn::gla::FwdParams&>(p) = c.p;
  const at::Tensor do_c = c.fence.copy(d_o, q.scalar_type(), "do");
  const OptTensor dht_c = c.fence.copy(dht, at::kFloat, "dht");
  at::Tensor dq = c.fence.empty(q.sizes(), q.scalar_type(), "dq");
  at::Tensor dk = c.fence.empty(k.sizes(), q.scalar_type(), "dk");
  at::Tensor dv = c.fence.empty(v.sizes(), q.scalar_type(), "dv");
  at::Tensor dg, dh0;
  if (g.has_value() || g_gamma.has_value()) {
    const bool per_key = g.has_value() && g->dim() == 4;
    dg = per_key ? c.fence.empty(q.sizes(), at::kFloat, "dg")
                 : c.fence.empty({q.size(0), q.size(1), q.size(2)}, at::kFloat, "dg");
  }
  if (h0.has_value()) dh0 = c.fence.empty(h0->sizes(), at::kFloat, "dh0");
  p.do_ = do_c.data_ptr();
  p.dht = ptr(dht_c);
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  p.dg = dg.defined() ? dg.data_ptr() : nullptr;
  p.dg_sum_k = dg.defined() && dg.dim() == 3;
  p.dh0 = dh0.defined() ? dh0.data_ptr() : nullptr;
  p.do_scale = do_scale;
  if (q.numel() > 0 || dh0.defined()) {
    dispatch_dtype<gpu::DType>(q.scalar_type(),
                               [&]<gpu::DType D>() { chunk_backward<D>(p, c.fence, force_simt); });
  }
  c.fence.check();
  const at::Tensor none = at::empty({0});
  return {dq, dk, dv, dg.defined() ? dg : none, dh0.defined() ? dh0 : none};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(linattn_emu, m) {
  m.def("gla_forward(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor? g_gamma, float scale, Tensor? h0, "
        "Tensor? cu_seqlens, bool recurrent, bool final_state, bool force_simt=False, Tensor? o_mix=None, "
        "float lin_w=1.0, float mix_w=0.0) -> (Tensor, Tensor)",
        &forward);
  m.def("gla_backward(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor? g_gamma, float scale, Tensor? h0, "
        "Tensor? cu_seqlens, Tensor do, Tensor? dht, bool force_simt=False, float do_scale=1.0) -> Tensor[]",
        &backward);
}

}  // namespace linattn_emu
