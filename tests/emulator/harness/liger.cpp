// Liger's own kernels on the emulator (the feature-map softmax of q and k and its backward, one launch per pair);
// mirrors ops/liger/liger_cuda.cpp. The rest of Liger's CUDA path is the GLA and sliding-window kernels with their
// fusion hooks (gla_forward's o_mix, the do_scale of gla_backward and swa_backward), which the worker chains in
// the glue's order (tests/emulator/worker.py, liger).
#include <torch/library.h>

#include "common.h"
#include "ops/liger/cuda/liger_launch.h"

namespace linattn_emu {
namespace {

namespace gpu = linattn::liger::gpu;

std::tuple<at::Tensor, at::Tensor> softmax_forward(const at::Tensor& q, const at::Tensor& k) {
  Fence fence;
  const at::Tensor qc = fence.copy(q, "q"), kc = fence.copy(k, "k");
  at::Tensor yq = fence.empty(q.sizes(), q.scalar_type(), "q_feat");
  at::Tensor yk = fence.empty(k.sizes(), k.scalar_type(), "k_feat");
  linattn::liger::SoftmaxPairParams p;
  p.x[0] = qc.data_ptr();
  p.x[1] = kc.data_ptr();
  p.y[0] = yq.data_ptr();
  p.y[1] = yk.data_ptr();
  p.rows = q.numel() / q.size(-1);
  p.dim = q.size(-1);
  dispatch_dtype<gpu::DType>(q.scalar_type(), [&]<gpu::DType D>() { gpu::feature_softmax_forward<D>(p, nullptr); });
  fence.check();
  return {yq, yk};
}

std::tuple<at::Tensor, at::Tensor> softmax_backward(const at::Tensor& yq, const at::Tensor& yk, const at::Tensor& dyq,
                                                    const at::Tensor& dyk) {
  Fence fence;
  const at::Tensor a = fence.copy(yq, "q_feat"), b = fence.copy(yk, "k_feat");
  const at::Tensor da = fence.copy(dyq, yq.scalar_type(), "dq_feat"), db = fence.copy(dyk, yk.scalar_type(), "dk_feat");
  at::Tensor dq = fence.empty(yq.sizes(), yq.scalar_type(), "dq");
  at::Tensor dk = fence.empty(yk.sizes(), yk.scalar_type(), "dk");
  linattn::liger::SoftmaxPairBwdParams p;
  p.y[0] = a.data_ptr();
  p.y[1] = b.data_ptr();
  p.dy[0] = da.data_ptr();
  p.dy[1] = db.data_ptr();
  p.dx[0] = dq.data_ptr();
  p.dx[1] = dk.data_ptr();
  p.rows = yq.numel() / yq.size(-1);
  p.dim = yq.size(-1);
  dispatch_dtype<gpu::DType>(yq.scalar_type(), [&]<gpu::DType D>() { gpu::feature_softmax_backward<D>(p, nullptr); });
  fence.check();
  return {dq, dk};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(linattn_emu, m) {
  m.def("liger_softmax_forward(Tensor q, Tensor k) -> (Tensor, Tensor)", &softmax_forward);
  m.def("liger_softmax_backward(Tensor q_feat, Tensor k_feat, Tensor dq_feat, Tensor dk_feat) -> (Tensor, Tensor)",
        &softmax_backward);
}

}  // namespace linattn_emu
