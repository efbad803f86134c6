// CUDA kernels of liger_attention's forward and backward ops. Each input is read by the kernels that need it
// and no intermediate of the mix is materialised:
//   forward:  softmax(q), softmax(k) in one launch -> the sliding-window forward writes o_win (its backward needs
//             it) and lse -> the chunked GLA forward on the feature maps writes o = lw * o_gla + sw * o_win in its
//             output epilogue (gla::FwdParams::o_mix), so o_gla is never stored;
//   backward: the sliding-window and GLA backwards read do scaled as they load it (do_scale = sw, lw) instead of
//             two scaled copies of do; dv = dv_win + dv_gla; both softmax backwards in one launch.
// The kernels are the GLA and SWA ones (launched through their glue: same paths, workspaces and streams) and
// ops/liger/cuda/feature_softmax.cuh.
#include <ATen/ATen.h>

// A CPU-only torch wheel ships the c10/cuda headers but not the configure-generated
// c10/cuda/impl/cuda_cmake_macros.h (it only carries the Windows DLL export switch); skip it there so this
// file can still be syntax-checked. A CUDA build of torch has the file and is unaffected.
#if defined(__has_include)
#if !__has_include(<c10/cuda/impl/cuda_cmake_macros.h>) && !defined(C10_CUDA_NO_CMAKE_CONFIGURE_FILE)
#define C10_CUDA_NO_CMAKE_CONFIGURE_FILE
#endif
#endif
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "core/cuda_dtype.h"
#include "ops/gla/gla_cuda.h"
#include "ops/liger/cuda/liger_launch.h"
#include "ops/liger/liger_common.h"
#include "ops/swa/swa_common.h"
#include "ops/swa/swa_cuda.h"

namespace linattn::liger {
namespace {

// What the CUDA path supports beyond the shared checks; errors name op and the argument.
void check_cuda(const char* op, const at::Tensor& q, const at::Tensor& v) {
  gla::check_cuda_dtype(op, q);
  swa::check_cuda_limits(op, q, v);
  TORCH_CHECK(q.size(3) <= gpu::kMaxFeatureDim, op, ": the CUDA kernels take D <= ", gpu::kMaxFeatureDim,
              " (q/k last dim), got D=", q.size(3));
}

cudaStream_t current_stream(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

Forward forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                     const at::Tensor& q_rot, const at::Tensor& k_rot, int64_t window_size, const OptTensor& h0,
                     bool output_final_state, double softmax_weight, double linear_weight) {
  const char* op = "liger_attention (CUDA)";
  check_forward(op, q, k, v, g, q_rot, k_rot, window_size, h0);
  check_cuda(op, q, v);
  const c10::cuda::CUDAGuard guard(q.device());
  auto [o, ht, o_win, lse, q_feat, k_feat] = alloc_forward(q, k, v, output_final_state);
  const at::Tensor qc = q.contiguous(), kc = k.contiguous();

  SoftmaxPairParams sp;
  sp.x[0] = qc.data_ptr();
  sp.x[1] = kc.data_ptr();
  sp.y[0] = q_feat.data_ptr();
  sp.y[1] = k_feat.data_ptr();
  sp.rows = q.numel() / q.size(3);
  sp.dim = q.size(3);
  cuda_utils::visit_dtype(cuda_dtype(op, q.scalar_type(), "q, k, v"),
                          [&]<gpu::DType D>() { gpu::feature_softmax_forward<D>(sp, current_stream(q)); });

  if (q.numel() > 0) {
    const swa::Inputs win = swa::prepare(op, q_rot, k_rot, v, std::nullopt);
    swa::Params wp = swa::make_params(win, window_size, std::nullopt);
    wp.o = o_win.data_ptr();
    wp.lse = lse.data_ptr();
    swa::launch_forward(wp, q);
  }

  const gla::Inputs lin = gla::prepare_inputs(op, q_feat, k_feat, v, g, std::nullopt, h0, std::nullopt);
  gla::FwdParams gp = gla::make_fwd_params(lin, o, ht, 1.0);
  gp.o_mix = o_win.data_ptr();
  gp.lin_w = linear_weight;
  gp.mix_w = softmax_weight;
  if (q.numel() > 0 || ht.numel() > 0) gla::launch_forward(gp, q.scalar_type(), gla::Algo::Chunk, q);
  return {o, ht, o_win, lse, q_feat, k_feat};
}

Backward backward_cuda(const at::Tensor& q_feat, const at::Tensor& k_feat, const at::Tensor& v, const at::Tensor& g,
                       const at::Tensor& q_rot, const at::Tensor& k_rot, const at::Tensor& o_win,
                       const at::Tensor& lse, const at::Tensor& d_o, const OptTensor& dht, int64_t window_size,
                       const OptTensor& h0, double softmax_weight, double linear_weight) {
  const char* op = "_liger_attention_backward (CUDA)";
  check_backward(op, q_feat, k_feat, v, g, q_rot, k_rot, o_win, lse, d_o, window_size, h0);
  check_cuda(op, q_feat, v);
  const c10::cuda::CUDAGuard guard(q_feat.device());
  const at::ScalarType dt = q_feat.scalar_type();
  const at::Tensor doc = d_o.to(dt).contiguous();

  // The GLA part first: its prepare_backward allocates dv, to which the window part's dv is then added.
  gla::BwdCall call = gla::prepare_backward(q_feat, k_feat, v, g, std::nullopt, doc, dht, h0, std::nullopt);
  gla::BwdParams bp = gla::make_bwd_params(call.in, call.do_, call.dht, call.out, 1.0);
  bp.do_scale = linear_weight;
  if (q_feat.numel() > 0 || call.out.dh0.defined()) gla::launch_backward(bp, dt, q_feat);
  auto [dq_feat, dk_feat, dv, dg, dg_gamma, dh0] = gla::finish_backward(call, q_feat, g, std::nullopt, h0);

  const swa::Inputs win = swa::prepare(op, q_rot, k_rot, v, std::nullopt);
  at::Tensor dq_rot = at::empty_like(win.q), dk_rot = at::empty_like(win.k), dv_win = at::empty_like(win.v);
  if (q_feat.numel() > 0) {
    const at::Tensor oc = o_win.to(dt).contiguous(), lc = lse.to(at::kFloat).contiguous();
    swa::Params wp = swa::make_params(win, window_size, std::nullopt);
    wp.o = oc.data_ptr();
    wp.lse = lc.data_ptr();
    wp.do_ = doc.data_ptr();
    wp.dq = dq_rot.data_ptr();
    wp.dk = dk_rot.data_ptr();
    wp.dv = dv_win.data_ptr();
    wp.do_scale = softmax_weight;
    swa::launch_backward(wp, q_feat);
    dv.add_(dv_win);
  }

  const at::Tensor yq = q_feat.contiguous(), yk = k_feat.contiguous();
  at::Tensor dq = at::empty_like(yq), dk = at::empty_like(yk);
  SoftmaxPairBwdParams sp;
  sp.y[0] = yq.data_ptr();
  sp.y[1] = yk.data_ptr();
  sp.dy[0] = dq_feat.data_ptr();
  sp.dy[1] = dk_feat.data_ptr();
  sp.dx[0] = dq.data_ptr();
  sp.dx[1] = dk.data_ptr();
  sp.rows = yq.numel() / yq.size(3);
  sp.dim = yq.size(3);
  cuda_utils::visit_dtype(cuda_dtype(op, dt, "q, k, v"),
                          [&]<gpu::DType D>() { gpu::feature_softmax_backward<D>(sp, current_stream(q_feat)); });
  return {dq, dk, dv, dg, dq_rot, dk_rot, dh0};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CUDA, m) {
  m.impl("_liger_attention_forward", &forward_cuda);
  m.impl("_liger_attention_backward", &backward_cuda);
}

}  // namespace linattn::liger
