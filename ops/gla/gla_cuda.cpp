// CUDA backend of the GLA ops: float32, float16 and bfloat16 inputs (fp32 gates, states and accumulation).
// The kernels are torch-free (ops/gla/cuda/); this file checks what they support, picks the dtype and the
// path (fp16 / bf16 chunked forwards and backwards run on tensor cores, with scalar, per-key or no gates; every
// backward recomputes its states, reading no forward workspace), allocates
// the workspaces with the caching allocator and launches on the current stream of q's device
// (c10::cuda::getCurrentCUDAStream, the stream at::cuda::getCurrentCUDAStream returns; c10/cuda headers avoid
// ATen/cuda/CUDAContext.h, which pulls in cuSPARSE/cuBLAS headers).
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
#include <string>

#include "core/cuda_dtype.h"
#include "ops/gla/cuda/gla_launch.h"
#include "ops/gla/gla_cuda.h"
#include "ops/gla/gla_entries.h"

namespace linattn::gla {
namespace {

gpu::DType to_gpu_dtype(at::ScalarType dtype) { return cuda_dtype("linattn GLA (CUDA)", dtype, "q, k, v"); }

// Head dims the kernels take (K and V are tiled by 32 up to 256; larger dims are not split yet).
void check_head_dims(const char* op, int64_t K, int64_t V) {
  TORCH_CHECK(K <= gpu::kMaxHeadDim, op, ": the CUDA kernels support head dims K <= ", gpu::kMaxHeadDim,
              ", got K=", K, " (q/k last dim); split the heads or run on CPU");
  TORCH_CHECK(V <= gpu::kMaxHeadDim, op, ": the CUDA kernels support head dims V <= ", gpu::kMaxHeadDim,
              ", got V=", V, " (v last dim); split the heads or run on CPU");
}

// LINATTN_GLA_FORCE_SIMT=1 keeps fp16 / bf16 chunked forwards and backwards (scalar and per-key gates) on the
// fp32 SIMT kernels, so one GPU session can compare both paths (a subprocess per setting: the variable is read once).
bool force_simt() {
  static const bool force = [] {
    const char* env = std::getenv("LINATTN_GLA_FORCE_SIMT");
    return env != nullptr && std::string(env) == "1";
  }();
  return force;
}

// Tensor-core forward (scalar or no gate, fp16 / bf16); its fp32 workspace comes from the caching allocator
// (stream-ordered: freed once the launches are queued, reused safely by later work on this stream).
template <gpu::DType D>
void run_chunk_forward_tc(const FwdParams& p, const at::Tensor& q, cudaStream_t stream) {
  const at::Tensor ws = at::empty({gpu::chunk_forward_tc_workspace_floats(p)}, q.options().dtype(at::kFloat));
  gpu::chunk_forward_tc<D>(p, ws.data_ptr<float>(), stream);
}

// Tensor-core forward for per-key gates (fp16 / bf16); same workspace size and allocation as the scalar one.
template <gpu::DType D>
void run_chunk_forward_tc_vec(const FwdParams& p, const at::Tensor& q, cudaStream_t stream) {
  const at::Tensor ws = at::empty({gpu::chunk_forward_tc_workspace_floats(p)}, q.options().dtype(at::kFloat));
  gpu::chunk_forward_tc_vec<D>(p, ws.data_ptr<float>(), stream);
}

// Tensor-core backward (same inputs as the tensor-core forward); one fp32 workspace for all its regions.
template <gpu::DType D>
void run_chunk_backward_tc(const BwdParams& p, const at::Tensor& q, cudaStream_t stream) {
  const at::Tensor ws = at::empty({gpu::chunk_backward_tc_workspace(p).total}, q.options().dtype(at::kFloat));
  gpu::chunk_backward_tc<D>(p, ws.data_ptr<float>(), stream);
}

// Tensor-core backward for per-key gates (fp16 / bf16); the same workspace regions without the dg partials.
template <gpu::DType D>
void run_chunk_backward_tc_vec(const BwdParams& p, const at::Tensor& q, cudaStream_t stream) {
  const at::Tensor ws = at::empty({gpu::chunk_backward_tc_vec_workspace(p).total}, q.options().dtype(at::kFloat));
  gpu::chunk_backward_tc_vec<D>(p, ws.data_ptr<float>(), stream);
}

}  // namespace

void check_cuda_dtype(const char* op, const at::Tensor& q) {
  cuda_dtype(op, q.scalar_type(), "q, k, v");  // refuses other dtypes
  TORCH_CHECK(q.size(3) <= gpu::kMaxHeadDim, op, ": the CUDA kernels support head dims K <= ", gpu::kMaxHeadDim,
              ", got K=", q.size(3), " (q/k last dim); split the heads or run on CPU");
}

void launch_forward(const FwdParams& p, at::ScalarType dtype, Algo algo, const at::Tensor& q) {
  const char* op = algo == Algo::Chunk ? "chunk GLA forward (CUDA)" : "fused recurrent GLA forward (CUDA)";
  check_head_dims(op, p.dim_k, p.dim_v);
  TORCH_CHECK(p.heads <= 65535, op, ": at most 65535 heads, got H=", p.heads);
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
  const gpu::DType dt = to_gpu_dtype(dtype);
  TORCH_INTERNAL_ASSERT(algo == Algo::Chunk || p.o_mix == nullptr, "only the chunked forwards apply o_mix");
  if (algo == Algo::Chunk && gpu::tc_forward_supported(dt, p) && !force_simt()) {
    if (dt == gpu::DType::kFloat16) {
      run_chunk_forward_tc<gpu::DType::kFloat16>(p, q, stream);
    } else {
      run_chunk_forward_tc<gpu::DType::kBFloat16>(p, q, stream);
    }
  } else if (algo == Algo::Chunk && gpu::tc_vec_forward_supported(dt, p) && !force_simt()) {
    if (dt == gpu::DType::kFloat16) {
      run_chunk_forward_tc_vec<gpu::DType::kFloat16>(p, q, stream);
    } else {
      run_chunk_forward_tc_vec<gpu::DType::kBFloat16>(p, q, stream);
    }
  } else if (algo == Algo::Chunk) {
    switch (dt) {
      case gpu::DType::kFloat32:
        gpu::chunk_forward<gpu::DType::kFloat32>(p, stream);
        break;
      case gpu::DType::kFloat16:
        gpu::chunk_forward<gpu::DType::kFloat16>(p, stream);
        break;
      case gpu::DType::kBFloat16:
        gpu::chunk_forward<gpu::DType::kBFloat16>(p, stream);
        break;
    }
  } else {
    switch (dt) {
      case gpu::DType::kFloat32:
        gpu::recurrent_forward<gpu::DType::kFloat32>(p, stream);
        break;
      case gpu::DType::kFloat16:
        gpu::recurrent_forward<gpu::DType::kFloat16>(p, stream);
        break;
      case gpu::DType::kBFloat16:
        gpu::recurrent_forward<gpu::DType::kBFloat16>(p, stream);
        break;
    }
  }
}

void launch_backward(const BwdParams& p, at::ScalarType dtype, const at::Tensor& q) {
  const char* op = "_gla_backward (CUDA)";
  check_head_dims(op, p.dim_k, p.dim_v);
  TORCH_CHECK(p.heads <= 65535, op, ": at most 65535 heads, got H=", p.heads);
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.device().index()).stream();
  const gpu::DType dt = to_gpu_dtype(dtype);
  if (gpu::tc_backward_supported(dt, p) && !force_simt()) {
    if (dt == gpu::DType::kFloat16) {
      run_chunk_backward_tc<gpu::DType::kFloat16>(p, q, stream);
    } else {
      run_chunk_backward_tc<gpu::DType::kBFloat16>(p, q, stream);
    }
    return;
  }
  if (gpu::tc_vec_backward_supported(dt, p) && !force_simt()) {
    if (dt == gpu::DType::kFloat16) {
      run_chunk_backward_tc_vec<gpu::DType::kFloat16>(p, q, stream);
    } else {
      run_chunk_backward_tc_vec<gpu::DType::kBFloat16>(p, q, stream);
    }
    return;
  }

  // fp32 workspaces (stream-ordered caching allocator: freed after the launches are queued, reused
  // safely by later work on this stream).
  const gpu::BwdWorkspaceSizes sizes = gpu::bwd_workspace_sizes(p);
  const auto opts = q.options().dtype(at::kFloat);
  const at::Tensor states = at::empty({sizes.state_elems}, opts);
  const at::Tensor dstates = at::empty({sizes.state_elems}, opts);
  const at::Tensor dg_partial = at::empty({sizes.dg_partial_elems}, opts);
  gpu::BwdWorkspace ws;
  ws.states = states.data_ptr<float>();
  ws.dstates = dstates.data_ptr<float>();
  ws.dg_partial = sizes.dg_partial_elems > 0 ? dg_partial.data_ptr<float>() : nullptr;

  switch (dt) {
    case gpu::DType::kFloat32:
      gpu::chunk_backward<gpu::DType::kFloat32>(p, ws, stream);
      break;
    case gpu::DType::kFloat16:
      gpu::chunk_backward<gpu::DType::kFloat16>(p, ws, stream);
      break;
    case gpu::DType::kBFloat16:
      gpu::chunk_backward<gpu::DType::kBFloat16>(p, ws, stream);
      break;
  }
}

namespace {

struct CudaBackend {
  static void check_dtype(const char* op, const at::Tensor& q) { check_cuda_dtype(op, q); }
  static void forward(const FwdParams& p, at::ScalarType dtype, Algo algo, const at::Tensor& q) {
    launch_forward(p, dtype, algo, q);
  }
  static void backward(const BwdParams& p, at::ScalarType dtype, const at::Tensor& q) { launch_backward(p, dtype, q); }
};

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CUDA, m) { register_backend<CudaBackend>(m); }

}  // namespace linattn::gla
