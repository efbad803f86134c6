// CUDA backend of the delta-rule ops: float32, float16 and bfloat16 inputs (fp32 beta, gates, states and
// accumulation). Chunked forwards in fp16 / bf16 run on tensor cores (delta_fwd_tc.cuh) unless
// LINATTN_DELTA_FORCE_SIMT=1; so do the three passes of their backward (states, dstates in
// delta_bwd_dstate_tc.cuh, grads in delta_bwd_grad_tc.cuh). fp32 and the recurrent forward run on the SIMT kernels.
// The kernels are torch-free (ops/delta_rule/cuda/); this file checks what they support, picks
// the dtype, allocates the outputs and the backward workspaces with the caching allocator and launches on the
// current stream of q's device (c10::cuda::getCurrentCUDAStream; c10/cuda headers avoid
// ATen/cuda/CUDAContext.h, which pulls in cuSPARSE/cuBLAS headers). setup.py and CMakeLists.txt leave this
// file out of CPU-only builds; scripts/compile_cuda.sh syntax-checks it against a CPU torch too.
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

#include <cstdlib>
#include <limits>
#include <optional>
#include <string>

#include "core/checks.h"
#include "core/cuda_dtype.h"
#include "ops/delta_rule/cuda/delta_launch.h"
#include "ops/delta_rule/delta_common.h"

namespace linattn::delta {
namespace {

gpu::DType to_gpu_dtype(at::ScalarType dtype) { return cuda_dtype("linattn delta rule (CUDA)", dtype, "q, k, v"); }

// Sizes the launch grids take: head dims up to 256 (K and V tiled by 32), grid.x = N * HV or chunk slots
// below 2^31, and HV within gridDim.y of the backward.
void check_launch_sizes(const char* op, const FwdParams& p) {
  TORCH_CHECK(p.dim_k <= gpu::kMaxHeadDim, op, ": the CUDA kernels support head dims K <= ", gpu::kMaxHeadDim,
              ", got K=", p.dim_k, " (q/k last dim); split the heads or run on CPU");
  TORCH_CHECK(p.dim_v <= gpu::kMaxHeadDim, op, ": the CUDA kernels support head dims V <= ", gpu::kMaxHeadDim,
              ", got V=", p.dim_v, " (v last dim); split the heads or run on CPU");
  TORCH_CHECK(p.value_heads <= gpu::kMaxGridY, op, ": at most ", gpu::kMaxGridY, " value heads, got HV=",
              p.value_heads);
  const int64_t max_blocks = std::numeric_limits<int32_t>::max();
  TORCH_CHECK(p.num_seqs * p.value_heads <= max_blocks && gpu::num_state_slots(p) <= max_blocks, op,
              ": too many sequences x heads for one launch (N=", p.num_seqs, ", HV=", p.value_heads, ", T=",
              p.batch * p.seqlen, ")");
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// The device to make current for the launches: q's when q is on CUDA (otherwise the argument checks report
// the device mismatch that brought the call here).
std::optional<c10::Device> cuda_device_of(const at::Tensor& q) {
  return q.is_cuda() ? std::optional<c10::Device>(q.device()) : std::nullopt;
}

// LINATTN_DELTA_FORCE_SIMT=1 keeps fp16 / bf16 chunked forwards and all three passes of the backward on the fp32
// SIMT kernels, so one GPU session
// can compare both paths (a subprocess per setting: the variable is read once).
bool force_simt() {
  static const bool force = [] {
    const char* env = std::getenv("LINATTN_DELTA_FORCE_SIMT");
    return env != nullptr && std::string(env) == "1";
  }();
  return force;
}

// Tensor-core chunked forward (fp16 / bf16). Its workspaces come from the caching allocator on the current
// device (the caller's guard made it q's): stream-ordered, so freeing them once the launches are queued is
// safe. The backward does not keep them: its tensor-core states pass allocates its own (tc_workspace), plus T
// (backward: true), which its dstates pass reads with P.
struct TcWorkspace {
  at::Tensor w, pm, u, t;
  gpu::TcFwdWorkspace ws;
};

TcWorkspace tc_workspace(const FwdParams& p, at::ScalarType dtype, bool backward) {
  const gpu::TcFwdWorkspaceSizes sizes = gpu::tc_fwd_workspace_sizes(p);
  const auto opts = at::TensorOptions().device(c10::Device(c10::DeviceType::CUDA, c10::cuda::current_device()));
  TcWorkspace t;
  t.w = at::empty({sizes.w_elems}, opts.dtype(dtype));
  t.pm = at::empty({sizes.p_elems}, opts.dtype(dtype));
  t.u = at::empty({sizes.u_elems}, opts.dtype(at::kFloat));
  t.ws.w = t.w.data_ptr();
  t.ws.p = t.pm.data_ptr();
  t.ws.u = t.u.data_ptr<float>();
  if (backward) {
    t.t = at::empty({sizes.t_elems}, opts.dtype(dtype));
    t.ws.t = t.t.data_ptr();
  }
  return t;
}

template <gpu::DType D>
void run_chunk_forward_tc(const FwdParams& p, at::ScalarType dtype, cudaStream_t stream) {
  const TcWorkspace t = tc_workspace(p, dtype, false);
  gpu::chunk_forward_tc<D>(p, t.ws, stream);
}

// The backward's passes: passes 1 (states), 2 (dstates) and 3 (grads) on tensor cores for fp16 / bf16 unless
// LINATTN_DELTA_FORCE_SIMT=1 (pass 3 reads nothing from the tensor-core workspace; passes 1 and 2 share it).
template <gpu::DType D>
void launch_backward(const BwdParams& p, at::ScalarType dtype, const gpu::BwdWorkspace& ws, cudaStream_t stream) {
  if constexpr (D != gpu::DType::kFloat32) {
    if (gpu::tc_forward_supported(D) && !force_simt()) {
      const TcWorkspace t = tc_workspace(p, dtype, true);
      gpu::chunk_backward_tc<D>(p, t.ws, ws, stream);
      return;
    }
  }
  gpu::chunk_backward<D>(p, ws, stream);
}

template <gpu::DType D>
void launch_forward(const FwdParams& p, at::ScalarType dtype, bool recurrent, cudaStream_t stream) {
  if (recurrent) {
    gpu::recurrent_forward<D>(p, stream);
    return;
  }
  if constexpr (D != gpu::DType::kFloat32) {
    if (gpu::tc_forward_supported(D) && !force_simt()) {
      run_chunk_forward_tc<D>(p, dtype, stream);
      return;
    }
  }
  gpu::chunk_forward<D>(p, stream);
}

struct CudaBackend {
  static constexpr bool kRecurrentL2InKernel = true;  // recurrent_fwd_kernel normalises q and k per token
  static constexpr bool kRecurrentGatesInInputDtype = true;  // and reads beta, g in fp16 / bf16
  static void check_dtype(const char* op, const at::Tensor& q) {
    cuda_dtype(op, q.scalar_type(), "q, k, v");  // refuses other dtypes
    TORCH_CHECK(q.size(3) <= gpu::kMaxHeadDim, op, ": the CUDA kernels support head dims K <= ", gpu::kMaxHeadDim,
                ", got K=", q.size(3), " (q/k last dim); split the heads or run on CPU");
  }

  static void forward(const FwdParams& p, at::ScalarType dtype, bool recurrent) {
    check_launch_sizes(recurrent ? "fused recurrent delta rule (CUDA)" : "chunk delta rule (CUDA)", p);
    const cudaStream_t stream = current_stream();
    switch (to_gpu_dtype(dtype)) {
      case gpu::DType::kFloat32:
        launch_forward<gpu::DType::kFloat32>(p, dtype, recurrent, stream);
        break;
      case gpu::DType::kFloat16:
        launch_forward<gpu::DType::kFloat16>(p, dtype, recurrent, stream);
        break;
      case gpu::DType::kBFloat16:
        launch_forward<gpu::DType::kBFloat16>(p, dtype, recurrent, stream);
        break;
    }
  }
};

Pair chunk_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& beta,
                      std::optional<double> scale, const OptTensor& h0, bool ofs, bool l2, const OptTensor& cu) {
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(q));
  return run_forward<CudaBackend>("chunk_delta_rule", false, q, k, v, std::nullopt, beta, scale, h0, ofs, l2, cu);
}
Pair fused_recurrent_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool ofs,
                                bool l2, const OptTensor& cu) {
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(q));
  return run_forward<CudaBackend>("fused_recurrent_delta_rule", true, q, k, v, std::nullopt, beta, scale, h0, ofs,
                                  l2, cu);
}
Pair chunk_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
                            const at::Tensor& beta, std::optional<double> scale, const OptTensor& h0, bool ofs,
                            bool l2, const OptTensor& cu) {
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(q));
  return run_forward<CudaBackend>("chunk_gated_delta_rule", false, q, k, v, g, beta, scale, h0, ofs, l2, cu);
}
Pair fused_recurrent_gated_delta_rule(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const at::Tensor& g, const at::Tensor& beta, std::optional<double> scale,
                                      const OptTensor& h0, bool ofs, bool l2, const OptTensor& cu) {
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(q));
  return run_forward<CudaBackend>("fused_recurrent_gated_delta_rule", true, q, k, v, g, beta, scale, h0, ofs, l2,
                                  cu);
}

at::Tensor fused_recurrent_delta_rule_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                              const OptTensor& g, const at::Tensor& beta, const at::Tensor& state,
                                              std::optional<double> scale, bool l2, const OptTensor& cu) {
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(q));
  return run_recurrent_inplace<CudaBackend>("fused_recurrent_delta_rule_inplace", q, k, v, g, beta, state, scale, l2,
                                            cu);
}

// The shared backward of the four ops (on already L2-normalised q, k). Mirrors run_backward_cpu_like, except
// that the kernels sum dq and dk over each group of value heads themselves (fp32 workspaces, deterministic),
// so dq and dk are allocated as [B, T, H, K] directly.
BwdResult delta_rule_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                              const at::Tensor& beta, const at::Tensor& do_, const OptTensor& dht,
                              std::optional<double> scale, const OptTensor& initial_state, const OptTensor& cu_seqlens) {
  const char* op = "_delta_rule_backward";
  check_inputs(op, q, k, v, g, beta, initial_state, cu_seqlens);
  CudaBackend::check_dtype(op, q);
  TORCH_CHECK(do_.sizes() == v.sizes(), op, ": do must have the shape of v ", v.sizes(), ", got ", do_.sizes());
  check_same_device(do_, q, op, "do");
  const c10::cuda::OptionalCUDAGuard guard(cuda_device_of(q));
  const Inputs in = prepare_inputs(op, q, k, v, g, beta, initial_state, cu_seqlens);
  const int64_t B = q.size(0), T = q.size(1), K = q.size(3), HV = v.size(2);
  const int64_t N = in.cu_seqlens.defined() ? in.cu_seqlens.size(0) - 1 : B;
  const auto f32 = q.options().dtype(at::kFloat);
  const at::Tensor d_o = do_.to(q.scalar_type()).contiguous();
  at::Tensor dht_c;
  if (dht.has_value() && dht->numel() > 0) {
    TORCH_CHECK(dht->dim() == 4 && dht->size(0) == N && dht->size(1) == HV && dht->size(2) == K &&
                    dht->size(3) == v.size(3),
                op, ": dht must have shape [N, HV, K, V], got ", dht->sizes());
    check_same_device(*dht, q, op, "dht");
    dht_c = dht->to(at::kFloat).contiguous();
  }
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(q.sizes(), q.options());
  at::Tensor dv = at::empty_like(in.v);
  at::Tensor dbeta = at::empty({B, T, HV}, f32);
  at::Tensor dg = g.has_value() ? at::empty({B, T, HV}, f32) : at::Tensor();
  at::Tensor dh0 = initial_state.has_value() ? at::empty_like(in.h0) : at::Tensor();
  if (q.numel() > 0 || dh0.defined()) {
    BwdParams p;
    static_cast<FwdParams&>(p) = make_fwd_params(in, at::Tensor(), at::Tensor(), resolve_scale(scale, q));
    check_launch_sizes("_delta_rule_backward (CUDA)", p);
    p.do_ = d_o.data_ptr();
    p.dht = dht_c.defined() ? dht_c.data_ptr() : nullptr;
    p.dq = dq.data_ptr();
    p.dk = dk.data_ptr();
    p.dv = dv.data_ptr();
    p.dbeta = dbeta.data_ptr();
    p.dg = dg.defined() ? dg.data_ptr() : nullptr;
    p.dh0 = dh0.defined() ? dh0.data_ptr() : nullptr;

    // fp32 workspaces (stream-ordered caching allocator: freed after the launches are queued, reused safely
    // by later work on this stream).
    const gpu::BwdWorkspaceSizes sizes = gpu::bwd_workspace_sizes(p);
    const at::Tensor states = at::empty({sizes.state_elems}, f32);
    const at::Tensor dstates = at::empty({sizes.state_elems}, f32);
    const at::Tensor rows_v = at::empty({3, sizes.row_v_elems}, f32);
    const at::Tensor rows_k = at::empty({2, sizes.row_k_elems}, f32);
    gpu::BwdWorkspace ws;
    ws.states = states.data_ptr<float>();
    ws.dstates = dstates.data_ptr<float>();
    ws.u = rows_v[0].data_ptr<float>();
    ws.z = rows_v[1].data_ptr<float>();
    ws.dr = rows_v[2].data_ptr<float>();
    ws.dq = rows_k[0].data_ptr<float>();
    ws.dk = rows_k[1].data_ptr<float>();
    const cudaStream_t stream = current_stream();
    switch (to_gpu_dtype(q.scalar_type())) {
      case gpu::DType::kFloat32:
        launch_backward<gpu::DType::kFloat32>(p, q.scalar_type(), ws, stream);
        break;
      case gpu::DType::kFloat16:
        launch_backward<gpu::DType::kFloat16>(p, q.scalar_type(), ws, stream);
        break;
      case gpu::DType::kBFloat16:
        launch_backward<gpu::DType::kBFloat16>(p, q.scalar_type(), ws, stream);
        break;
    }
  }
  auto empty = at::empty({0}, q.options());
  return {dq,
          dk,
          dv,
          g.has_value() ? dg.to(g->scalar_type()) : empty,
          dbeta.to(beta.scalar_type()),
          initial_state.has_value() ? dh0.to(initial_state->scalar_type()) : empty};
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CUDA, m) {
  m.impl("chunk_delta_rule", &chunk_delta_rule);
  m.impl("fused_recurrent_delta_rule", &fused_recurrent_delta_rule);
  m.impl("chunk_gated_delta_rule", &chunk_gated_delta_rule);
  m.impl("fused_recurrent_gated_delta_rule", &fused_recurrent_gated_delta_rule);
  m.impl("fused_recurrent_delta_rule_inplace", &fused_recurrent_delta_rule_inplace);
  m.impl("_delta_rule_backward", &delta_rule_backward);
}

}  // namespace linattn::delta
