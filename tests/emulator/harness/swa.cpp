// Sliding-window attention launchers on the emulator; mirrors ops/swa/swa_cuda.cpp (make_params of
// swa_common.cpp, the window clamped to the sequence length, the fp32 delta workspace, the tensor-core forward
// and backward for fp16 / bf16 unless force_simt, which stands for LINATTN_SWA_FORCE_SIMT=1).
#include <torch/library.h>

#include <algorithm>

#include "common.h"
#include "ops/swa/cuda/swa_launch.h"

namespace linattn_emu {
namespace {

namespace gpu = linattn::swa::gpu;

struct SwaCall {
  Fence fence;
  at::Tensor q, k, v, cu;
  linattn::swa::Params p;
};

void setup(SwaCall& c, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window, double scale,
           const OptTensor& cu) {
  c.q = c.fence.copy(q, "q");
  c.k = c.fence.copy(k, "k");
  c.v = c.fence.copy(v, "v");
  if (cu.has_value()) c.cu = c.fence.copy(*cu, "cu_seqlens");
  auto& p = c.p;
  p.q = c.q.data_ptr();
  p.k = c.k.data_ptr();
  p.v = c.v.data_ptr();
  p.cu_seqlens = c.cu.defined() ? c.cu.data_ptr<int64_t>() : nullptr;
  p.batch = q.size(0);
  p.seqlen = q.size(1);
  p.num_seqs = c.cu.defined() ? c.cu.size(0) - 1 : p.batch;
  p.heads = q.size(2);
  p.dim_k = q.size(3);
  p.dim_v = v.size(3);
  p.window = std::min(window, std::max<int64_t>(p.seqlen, 1));  // w >= T is full causal attention
  p.scale = scale;
  p.qk_tok_stride = p.heads * p.dim_k;
  p.qk_head_stride = p.dim_k;
  p.v_tok_stride = p.heads * p.dim_v;
  p.v_head_stride = p.dim_v;
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           int64_t window, double scale, const OptTensor& cu, bool force_simt) {
  SwaCall c;
  setup(c, q, k, v, window, scale, cu);
  at::Tensor o = c.fence.empty(v.sizes(), q.scalar_type(), "o");
  at::Tensor lse = c.fence.empty({q.size(0), q.size(1), q.size(2)}, at::kFloat, "lse");
  if (q.numel() > 0) {
    c.p.o = o.data_ptr();
    c.p.lse = lse.data_ptr();
    dispatch_dtype<gpu::DType>(q.scalar_type(), [&]<gpu::DType D>() {
#if __has_include("ops/swa/cuda/swa_fwd_tc.cuh")
      if constexpr (D != gpu::DType::kFloat32) {
        if (!force_simt) {
          gpu::forward_tc<D>(c.p, nullptr);
          return;
        }
      }
#endif
      gpu::forward<D>(c.p, nullptr);
    });
  }
  c.fence.check();
  return {o, lse};
}

std::vector<at::Tensor> backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& o,
                                 const at::Tensor& lse, const at::Tensor& d_o, int64_t window, double scale,
                                 const OptTensor& cu, bool force_simt, double do_scale) {
  SwaCall c;
  setup(c, q, k, v, window, scale, cu);
  c.p.do_scale = do_scale;  // Liger's window weight (Params::do_scale)
  at::Tensor dq = c.fence.empty(q.sizes(), q.scalar_type(), "dq");
  at::Tensor dk = c.fence.empty(k.sizes(), q.scalar_type(), "dk");
  at::Tensor dv = c.fence.empty(v.sizes(), q.scalar_type(), "dv");
  if (q.numel() > 0) {
    const at::Tensor oc = c.fence.copy(o, q.scalar_type(), "o");
    const at::Tensor lc = c.fence.copy(lse, at::kFloat, "lse");
    const at::Tensor dc = c.fence.copy(d_o, q.scalar_type(), "do");
    c.p.o = oc.data_ptr();
    c.p.lse = lc.data_ptr();
    c.p.do_ = dc.data_ptr();
    c.p.dq = dq.data_ptr();
    c.p.dk = dk.data_ptr();
    c.p.dv = dv.data_ptr();
    const at::Tensor delta = c.fence.empty({gpu::bwd_workspace_elems(c.p)}, at::kFloat, "ws.delta");
    dispatch_dtype<gpu::DType>(q.scalar_type(), [&]<gpu::DType D>() {
#if __has_include("ops/swa/cuda/swa_bwd_tc.cuh")
      if constexpr (D != gpu::DType::kFloat32) {
        if (!force_simt) {
          gpu::backward_tc<D>(c.p, delta.data_ptr<float>(), nullptr);
          return;
        }
      }
#endif
      gpu::backward<D>(c.p, delta.data_ptr<float>(), nullptr);
    });
  }
  c.fence.check();
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(linattn_emu, m) {
  m.def("swa_forward(Tensor q, Tensor k, Tensor v, int window, float scale, Tensor? cu_seqlens, bool force_simt=False) -> (Tensor, Tensor)",
        &forward);
  m.def("swa_backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor do, int window, float scale, "
        "Tensor? cu_seqlens, bool force_simt=False, float do_scale=1.0) -> Tensor[]",
        &backward);
}

}  // namespace linattn_emu
