#pragma once
// Torch-free launchers of the sliding-window attention CUDA kernels (fp32 SIMT, and a tensor-core forward and
// backward for fp16 / bf16; fp32 accumulation everywhere). The glue
// (ops/swa/swa_cuda.cpp) checks the arguments, fills the params, allocates the outputs and the backward's
// workspace and picks the dtype.
//
// Every launcher is asynchronous on `stream`, performs no device->host synchronisation and throws
// std::runtime_error (LINATTN_CUDA_CHECK / LINATTN_CHECK_LAUNCH) on a launch failure.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "csrc/cuda/dtype.h"
#include "ops/swa/swa_params.h"

namespace linattn::swa::gpu {

// Input dtype of q, k, v, o, do, dq, dk, dv. The log-sum-exp and the workspace are always fp32.
using DType = cuda_utils::DType;

constexpr int64_t kMaxHeadDim = 256;  // largest K and V the kernels take

// Flash-style forward: o and the per-row log-sum-exp (p.o, p.lse as fp32).
template <DType D>
void forward(const Params& p, cudaStream_t stream);

// Tensor-core forward (cuda/swa_fwd_tc.cuh), fp16 / bf16 only (instantiated for kFloat16 and kBFloat16): the same
// o and the same fp32 log-sum-exp as forward<D>, so backward<D> consumes either.
template <DType D>
void forward_tc(const Params& p, cudaStream_t stream);

// fp32 elements of the backward's workspace: delta_i = do_i . o_i per (token, head).
inline int64_t bwd_workspace_elems(const Params& p) { return p.batch * p.seqlen * p.heads; }

// Flash-style backward: dq, dk, dv from q, k, v, o, lse, do (lse recomputes the probabilities).
template <DType D>
void backward(const Params& p, float* delta_ws, cudaStream_t stream);

// Tensor-core backward (cuda/swa_bwd_tc.cuh), fp16 / bf16 only (instantiated for kFloat16 and kBFloat16): the
// same gradients from the same inputs and workspace as backward<D>, deterministic (no atomics).
template <DType D>
void backward_tc(const Params& p, float* delta_ws, cudaStream_t stream);

}  // namespace linattn::swa::gpu
