// CUDA backend of sliding-window attention: float32, float16 and bfloat16 inputs (fp32 log-sum-exp and
// accumulation). fp16 / bf16 forwards and backwards run on the tensor-core kernels (cuda/swa_fwd_tc.cuh,
// cuda/swa_bwd_tc.cuh) unless LINATTN_SWA_FORCE_SIMT=1; fp32 runs on the SIMT kernels. The kernels are
// torch-free (ops/swa/cuda/); this file checks what they support, allocates
// the outputs and the backward's workspace with the caching allocator and launches on the current stream of
// q's device (c10::cuda::getCurrentCUDAStream; c10/cuda headers avoid ATen/cuda/CUDAContext.h, which pulls in
// cuSPARSE/cuBLAS headers).
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

#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/checks.h"
#include "core/cuda_dtype.h"
#include "ops/swa/cuda/swa_launch.h"
#include "ops/swa/swa_common.h"
#include "ops/swa/swa_cuda.h"

namespace linattn::swa {
namespace {

// LINATTN_SWA_FORCE_SIMT=1 keeps fp16 / bf16 forwards and backwards on the fp32 SIMT kernels, so one GPU
// session can compare both paths (a subprocess per setting: the variable is read once per process).
bool force_simt() {
  static const bool force = [] {
    const char* env = std::getenv("LINATTN_SWA_FORCE_SIMT");
    return env != nullptr && std::string(env) == "1";
  }();
  return force;
}

cudaStream_t current_stream(const at::Tensor& q) {
  return c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
}

}  // namespace

// What the kernels support beyond the shared argument checks: head dims (tiles are padded to 32, 64, 128
// or 256 columns) and the grid's y dimension (heads).
void check_cuda_limits(const char* op, const at::Tensor& q, const at::Tensor& v) {
  TORCH_CHECK(q.size(3) <= gpu::kMaxHeadDim, op, ": the CUDA kernels support head dims K <= ", gpu::kMaxHeadDim,
              ", got K=", q.size(3), " (q/k last dim); split the heads or run on CPU");
  TORCH_CHECK(v.size(3) <= gpu::kMaxHeadDim, op, ": the CUDA kernels support head dims V <= ", gpu::kMaxHeadDim,
              ", got V=", v.size(3), " (v last dim); split the heads or run on CPU");
  TORCH_CHECK(q.size(2) <= 65535, op, ": the CUDA kernels take at most 65535 heads, got H=", q.size(2),
              " (q dim 2)");
}

void launch_forward(Params p, const at::Tensor& q) {
  const gpu::DType dt = cuda_dtype("sliding_window_attention (CUDA)", q.scalar_type(), "q, k, v");
  p.window = std::min(p.window, std::max<int64_t>(p.seqlen, 1));  // w >= T is full causal attention
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = current_stream(q);
  switch (dt) {
    case gpu::DType::kFloat32:
      gpu::forward<gpu::DType::kFloat32>(p, stream);
      break;
    case gpu::DType::kFloat16:
      if (force_simt()) {
        gpu::forward<gpu::DType::kFloat16>(p, stream);
      } else {
        gpu::forward_tc<gpu::DType::kFloat16>(p, stream);
      }
      break;
    case gpu::DType::kBFloat16:
      if (force_simt()) {
        gpu::forward<gpu::DType::kBFloat16>(p, stream);
      } else {
        gpu::forward_tc<gpu::DType::kBFloat16>(p, stream);
      }
      break;
  }
}

void launch_backward(Params p, const at::Tensor& q) {
  const gpu::DType dt = cuda_dtype("_sliding_window_attention_backward (CUDA)", q.scalar_type(), "q, k, v");
  p.window = std::min(p.window, std::max<int64_t>(p.seqlen, 1));  // w >= T is full causal attention
  const c10::cuda::CUDAGuard guard(q.device());
  // fp32 workspace (stream-ordered caching allocator: freed after the launches are queued, reused safely by
  // later work on this stream).
  const at::Tensor delta = at::empty({gpu::bwd_workspace_elems(p)}, q.options().dtype(at::kFloat));
  const cudaStream_t stream = current_stream(q);
  switch (dt) {
    case gpu::DType::kFloat32:
      gpu::backward<gpu::DType::kFloat32>(p, delta.data_ptr<float>(), stream);
      break;
    case gpu::DType::kFloat16:
      if (force_simt()) {
        gpu::backward<gpu::DType::kFloat16>(p, delta.data_ptr<float>(), stream);
      } else {
        gpu::backward_tc<gpu::DType::kFloat16>(p, delta.data_ptr<float>(), stream);
      }
      break;
    case gpu::DType::kBFloat16:
      if (force_simt()) {
        gpu::backward<gpu::DType::kBFloat16>(p, delta.data_ptr<float>(), stream);
      } else {
        gpu::backward_tc<gpu::DType::kBFloat16>(p, delta.data_ptr<float>(), stream);
      }
      break;
  }
}

namespace {

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                int64_t window_size, std::optional<double> scale,
                                                const std::optional<at::Tensor>& cu_seqlens) {
  const char* op = "sliding_window_attention (CUDA)";
  check_inputs(op, q, k, v, window_size, cu_seqlens);
  cuda_dtype(op, q.scalar_type(), "q, k, v");  // refuses other dtypes before anything is allocated
  check_cuda_limits(op, q, v);
  const c10::cuda::CUDAGuard guard(q.device());
  Inputs in = prepare(op, q, k, v, cu_seqlens);
  auto [o, lse] = alloc_outputs(q, v);
  if (q.numel() == 0) return {o, lse};  // no tokens (V == 0 is handled by the kernels)
  Params p = make_params(in, window_size, scale);
  p.o = o.data_ptr();
  p.lse = lse.data_ptr();
  launch_forward(p, q);
  return {o, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& q, const at::Tensor& k,
                                                             const at::Tensor& v, const at::Tensor& o,
                                                             const at::Tensor& lse, const at::Tensor& do_,
                                                             int64_t window_size, std::optional<double> scale,
                                                             const std::optional<at::Tensor>& cu_seqlens) {
  const char* op = "_sliding_window_attention_backward (CUDA)";
  check_inputs(op, q, k, v, window_size, cu_seqlens);
  cuda_dtype(op, q.scalar_type(), "q, k, v");  // refuses other dtypes before anything is allocated
  check_cuda_limits(op, q, v);
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{o, "o"}, {do_, "do"}}) {
    check_same_device(t, q, op, name);
    TORCH_CHECK(t.sizes() == v.sizes(), op, ": ", name, " must have the shape of v ", v.sizes(), ", got ",
                t.sizes());
  }
  check_same_device(lse, q, op, "lse");
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == q.size(0) && lse.size(1) == q.size(1) && lse.size(2) == q.size(2),
              op, ": lse must have shape [B, T, H] = ", q.sizes().slice(0, 3), ", got ", lse.sizes());
  const c10::cuda::CUDAGuard guard(q.device());
  Inputs in = prepare(op, q, k, v, cu_seqlens);
  at::Tensor dq = at::empty_like(in.q), dk = at::empty_like(in.k), dv = at::empty_like(in.v);
  if (q.numel() == 0) return {dq, dk, dv};
  const at::Tensor oc = o.to(q.scalar_type()).contiguous(), lc = lse.to(at::kFloat).contiguous(),
                   dc = do_.to(q.scalar_type()).contiguous();
  Params p = make_params(in, window_size, scale);
  p.o = oc.data_ptr();
  p.lse = lc.data_ptr();
  p.do_ = dc.data_ptr();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  launch_backward(p, q);
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CUDA, m) {
  m.impl("_sliding_window_attention_forward", &forward_cuda);
  m.impl("_sliding_window_attention_backward", &backward_cuda);
}

}  // namespace linattn::swa
