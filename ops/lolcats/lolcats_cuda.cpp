// CUDA backend of the LoLCATs hybrid attention: float32, float16 and bfloat16 inputs (fp32 m, z, workspaces
// and accumulation). The kernels are torch-free (ops/lolcats/cuda/); this file checks what they support,
// allocates the outputs and workspaces with the caching allocator and launches on the current stream of q's
// device (c10::cuda::getCurrentCUDAStream; c10/cuda headers avoid ATen/cuda/CUDAContext.h, which pulls in
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
#include <cmath>

#include "core/checks.h"
#include "core/cuda_dtype.h"
#include "ops/lolcats/cuda/lolcats_launch.h"
#include "ops/lolcats/lolcats_common.h"

namespace linattn::lolcats {
namespace {

// What the kernels support beyond the shared argument checks: D, V, F <= 256 (tiles padded to 32, 64, 128
// or 256 columns) and the grid's y / z dimensions (heads, batch).
void check_cuda_limits(const char* op, const at::Tensor& q, const at::Tensor& v, const at::Tensor& fq) {
  TORCH_CHECK(q.size(3) <= gpu::kMaxDim, op, ": the CUDA kernels support head dims D <= ", gpu::kMaxDim, ", got D=",
              q.size(3), " (q/k last dim); split the heads or run on CPU");
  TORCH_CHECK(v.size(3) <= gpu::kMaxDim, op, ": the CUDA kernels support head dims V <= ", gpu::kMaxDim, ", got V=",
              v.size(3), " (v last dim); split the heads or run on CPU");
  TORCH_CHECK(fq.size(3) <= gpu::kMaxDim, op, ": the CUDA kernels support feature sizes F <= ", gpu::kMaxDim,
              ", got F=", fq.size(3), " (fq/fk last dim)");
  TORCH_CHECK(q.size(2) <= 65535, op, ": the CUDA kernels take at most 65535 heads, got H=", q.size(2), " (q dim 2)");
  TORCH_CHECK(q.size(0) <= 65535, op, ": the CUDA kernels take a batch of at most 65535, got B=", q.size(0),
              " (q dim 0)");
}

struct Contig {
  at::Tensor q, k, v, fq, fk, wf;
};

Contig contiguous_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq,
                         const at::Tensor& fk, const at::Tensor& wf) {
  return {q.contiguous(), k.contiguous(), v.contiguous(), fq.contiguous(), fk.contiguous(), wf.contiguous()};
}

Params make_params(const Contig& in, int64_t window_size, std::optional<double> scale) {
  Params p;
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  p.v = in.v.data_ptr();
  p.fq = in.fq.data_ptr();
  p.fk = in.fk.data_ptr();
  p.window_factor = in.wf.data_ptr();
  p.batch = in.q.size(0);
  p.seqlen = in.q.size(1);
  p.heads = in.q.size(2);
  p.dim_qk = in.q.size(3);
  p.dim_v = in.v.size(3);
  p.dim_f = in.fq.size(3);
  p.window = std::min(window_size, std::max<int64_t>(p.seqlen, 1));  // w >= T: no key leaves the window
  p.scale = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(p.dim_qk));
  // Contiguous [B, T, H, X] (strides of size-1 dims of a contiguous tensor are arbitrary, so from sizes).
  p.qk_tok_stride = p.heads * p.dim_qk;
  p.qk_head_stride = p.dim_qk;
  p.v_tok_stride = p.heads * p.dim_v;
  p.v_head_stride = p.dim_v;
  p.f_tok_stride = p.heads * p.dim_f;
  p.f_head_stride = p.dim_f;
  return p;
}

cudaStream_t current_stream(const at::Tensor& q) {
  return c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v, const at::Tensor& fq,
                                                            const at::Tensor& fk, const at::Tensor& window_factor,
                                                            int64_t window_size, std::optional<double> scale) {
  const char* op = "lolcats_attention (CUDA)";
  check_inputs(op, q, k, v, fq, fk, window_factor, window_size);
  const gpu::DType dt = cuda_dtype(op, q.scalar_type(), "inputs");
  check_cuda_limits(op, q, v, fq);
  const c10::cuda::CUDAGuard guard(q.device());
  auto [o, m, z] = alloc_outputs(q, v);  // m, z are float32 for every CUDA dtype
  if (q.size(0) * q.size(1) * q.size(2) == 0) return {o, m, z};
  const Contig in = contiguous_inputs(q, k, v, fq, fk, window_factor);
  Params p = make_params(in, window_size, scale);
  p.o = o.data_ptr();
  p.m = m.data_ptr<float>();
  p.z = z.data_ptr<float>();
  // fp32 workspace (stream-ordered caching allocator: freed after the launches are queued, reused safely by
  // later work on this stream).
  const at::Tensor states = at::empty({std::max<int64_t>(gpu::fwd_workspace_elems(p), 1)}, q.options().dtype(at::kFloat));
  const cudaStream_t stream = current_stream(q);
  switch (dt) {
    case gpu::DType::kFloat32:
      gpu::forward<gpu::DType::kFloat32>(p, states.data_ptr<float>(), stream);
      break;
    case gpu::DType::kFloat16:
      gpu::forward<gpu::DType::kFloat16>(p, states.data_ptr<float>(), stream);
      break;
    case gpu::DType::kBFloat16:
      gpu::forward<gpu::DType::kBFloat16>(p, states.data_ptr<float>(), stream);
      break;
  }
  return {o, m, z};
}

void check_saved(const char* op, const at::Tensor& q, const at::Tensor& v, const at::Tensor& o, const at::Tensor& m,
                 const at::Tensor& z, const at::Tensor& d_o) {
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{o, "o"}, {d_o, "do"}}) {
    check_same_device(t, q, op, name);
    TORCH_CHECK(t.sizes() == v.sizes(), op, ": ", name, " must have the shape of v ", v.sizes(), ", got ", t.sizes());
  }
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{m, "m"}, {z, "z"}}) {
    check_same_device(t, q, op, name);
    TORCH_CHECK(t.dim() == 3 && t.size(0) == q.size(0) && t.size(1) == q.size(1) && t.size(2) == q.size(2), op, ": ",
                name, " must have shape [B, T, H] = ", q.sizes().slice(0, 3), ", got ", t.sizes());
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq, const at::Tensor& fk,
    const at::Tensor& window_factor, const at::Tensor& o, const at::Tensor& m, const at::Tensor& z,
    const at::Tensor& do_, int64_t window_size, std::optional<double> scale) {
  const char* op = "_lolcats_attention_backward (CUDA)";
  check_inputs(op, q, k, v, fq, fk, window_factor, window_size);
  const gpu::DType dt = cuda_dtype(op, q.scalar_type(), "inputs");
  check_cuda_limits(op, q, v, fq);
  check_saved(op, q, v, o, m, z, do_);
  const c10::cuda::CUDAGuard guard(q.device());
  const Contig in = contiguous_inputs(q, k, v, fq, fk, window_factor);
  at::Tensor dq = at::empty_like(in.q), dk = at::empty_like(in.k), dv = at::empty_like(in.v),
             dfq = at::empty_like(in.fq), dfk = at::empty_like(in.fk), dwf = at::empty_like(in.wf);
  if (q.size(0) * q.size(1) * q.size(2) == 0) return {dq, dk, dv, dfq, dfk, dwf.zero_()};
  const at::Tensor oc = o.to(q.scalar_type()).contiguous(), dc = do_.to(q.scalar_type()).contiguous(),
                   mc = m.to(at::kFloat).contiguous(), zc = z.to(at::kFloat).contiguous();
  Params p = make_params(in, window_size, scale);
  p.o = oc.data_ptr();
  p.m = mc.data_ptr<float>();
  p.z = zc.data_ptr<float>();
  p.do_ = dc.data_ptr();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  p.dfq = dfq.data_ptr();
  p.dfk = dfk.data_ptr();
  p.dwindow_factor = dwf.data_ptr();

  const gpu::BwdWorkspaceSizes sizes = gpu::bwd_workspace_sizes(p);
  const auto opts = q.options().dtype(at::kFloat);
  const at::Tensor states = at::empty({std::max<int64_t>(sizes.states, 1)}, opts);
  const at::Tensor rows = at::empty({2, sizes.rows}, opts);
  const at::Tensor dv_linear = at::empty({std::max<int64_t>(sizes.dv_linear, 1)}, opts);
  const at::Tensor dm_partial = at::empty({sizes.dm_partial}, opts);
  gpu::BwdWorkspace ws;
  ws.states = states.data_ptr<float>();
  ws.dz = rows.data_ptr<float>();
  ws.tie_grad = ws.dz + sizes.rows;
  ws.dv_linear = dv_linear.data_ptr<float>();
  ws.dm_partial = dm_partial.data_ptr<float>();

  const cudaStream_t stream = current_stream(q);
  switch (dt) {
    case gpu::DType::kFloat32:
      gpu::backward<gpu::DType::kFloat32>(p, ws, stream);
      break;
    case gpu::DType::kFloat16:
      gpu::backward<gpu::DType::kFloat16>(p, ws, stream);
      break;
    case gpu::DType::kBFloat16:
      gpu::backward<gpu::DType::kBFloat16>(p, ws, stream);
      break;
  }
  return {dq, dk, dv, dfq, dfk, dwf};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CUDA, m) {
  m.impl("_lolcats_attention_forward", &forward_cuda);
  m.impl("_lolcats_attention_backward", &backward_cuda);
}

}  // namespace linattn::lolcats
