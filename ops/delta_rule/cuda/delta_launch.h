#pragma once
// Torch-free launchers of the delta-rule CUDA kernels (fp32 SIMT, plus a tensor-core chunked forward for fp16 /
// bf16; fp32 accumulation throughout). The glue
// (ops/delta_rule/delta_cuda.cpp) fills the params, allocates the backward workspaces and picks the dtype.
//
// Every launcher is asynchronous on `stream`, performs no device->host synchronisation and throws
// std::runtime_error (LINATTN_CUDA_CHECK / LINATTN_CHECK_LAUNCH) on a launch failure.
//
// On CUDA, beta, g, the states and dbeta, dg, dh0 are fp32 (the glue converts them); q, k, v, o, do, dq, dk,
// dv are in the input dtype. Unlike the CPU kernels, the CUDA backward writes dq and dk already summed over
// each group of value heads: p.dq and p.dk are [B*T, H, K] (see BwdWorkspace).
#include <cuda_runtime_api.h>

#include <cstdint>

#include "csrc/cuda/dtype.h"
#include "ops/delta_rule/delta_params.h"

namespace linattn::delta::gpu {

// Input dtype of q, k, v, o, do, dq, dk, dv.
using DType = cuda_utils::DType;

constexpr int64_t kChunkSize = 64;    // rows per chunk (same as the CPU kernels)
constexpr int64_t kMaxHeadDim = 256;  // largest K and V the kernels take
constexpr int64_t kMaxGridY = 65535;  // value heads and V tiles share gridDim.y / gridDim.z limits

// Chunk slots: sequence n (tokens bos..bos+len) owns slots slot_base(n) = bos / 64 + 2 n .. + ceil(len / 64)
// (one per chunk). The bases strictly increase and the ranges never overlap, so no prefix sum over the
// (device-resident) cu_seqlens is needed; the total is total_tokens / 64 + 2 N slots.
inline int64_t num_state_slots(const FwdParams& p) { return (p.batch * p.seqlen) / kChunkSize + 2 * p.num_seqs; }

// fp32 workspaces of the backward, allocated by the caller (e.g. the caching allocator).
struct BwdWorkspace {
  float* states = nullptr;   // [slots, HV, K, V]: the state entering every chunk
  float* dstates = nullptr;  // [slots, HV, K, V]: gradient w.r.t. the state leaving every chunk
  float* u = nullptr;        // [B*T, HV, V]: u_t of the UT transform (the delta-rule update vectors)
  float* z = nullptr;        // [B*T, HV, V]: Gamma_i (K S0)_i, the decayed state read of every row
  float* dr = nullptr;       // [B*T, HV, V]: dR, the gradient w.r.t. R = diag(beta) (V - diag(Gamma) K S0)
  float* dq = nullptr;       // [B*T, HV, K]: dq per value head, summed into p.dq by the last kernel
  float* dk = nullptr;       // [B*T, HV, K]: dk per value head, summed into p.dk by the last kernel
};

struct BwdWorkspaceSizes {
  int64_t state_elems = 0;  // elements of states and of dstates (each)
  int64_t row_v_elems = 0;  // elements of u, z and dr (each)
  int64_t row_k_elems = 0;  // elements of dq and dk (each)
};

inline BwdWorkspaceSizes bwd_workspace_sizes(const BwdParams& p) {
  BwdWorkspaceSizes s;
  const int64_t tokens = p.batch * p.seqlen;
  s.state_elems = num_state_slots(p) * p.value_heads * p.dim_k * p.dim_v;
  s.row_v_elems = tokens * p.value_heads * p.dim_v;
  s.row_k_elems = tokens * p.value_heads * p.dim_k;
  return s;
}

// Chunked forward (chunk_delta_rule / chunk_gated_delta_rule): o and, when p.ht is set, the final state.
template <DType D>
void chunk_forward(const FwdParams& p, cudaStream_t stream);

// Tensor-core chunked forward (ops/delta_rule/cuda/delta_fwd_tc.cuh) for fp16 / bf16 inputs: same outputs as
// chunk_forward, computed in the WY / UT form (W, U, P per chunk in parallel, then a sequential state pass
// with the fp32 state in wmma accumulators). The backward does not read the forward's workspaces: its states
// pass (backward_states_tc) reruns the same kernels into workspaces of its own.
constexpr int64_t kTcTileV = 32;  // value columns per CTA of the sequential state kernel

inline bool tc_forward_supported(DType d) { return d != DType::kFloat32; }

// Workspaces of chunk_forward_tc, allocated by the caller, per chunk slot (num_state_slots) and value head,
// all 64 rows of the chunk (rows past a sequence's end hold zeros):
struct TcFwdWorkspace {
  void* w = nullptr;   // [slots, HV, 64, K] input dtype: W = T diag(beta Gamma) K
  void* p = nullptr;   // [slots, HV, 64, 64] input dtype: P = scale (Dm o Q K^T), lower triangle incl. diagonal
  float* u = nullptr;  // [slots, HV, 64, V] fp32: U = T diag(beta) V
  void* t = nullptr;   // [slots, HV, 64, 64] input dtype: T = (I + A)^{-1} (lower triangle incl. the unit
                       // diagonal; identity rows past a chunk's end), written only when set: the backward's
                       // tensor-core pass 2 reads it, the forward leaves it nullptr
};

struct TcFwdWorkspaceSizes {
  int64_t w_elems = 0;  // elements of w (input dtype)
  int64_t p_elems = 0;  // elements of p (input dtype)
  int64_t u_elems = 0;  // elements of u (fp32)
  int64_t t_elems = 0;  // elements of t (input dtype; the backward only)
};

inline TcFwdWorkspaceSizes tc_fwd_workspace_sizes(const FwdParams& p) {
  TcFwdWorkspaceSizes s;
  const int64_t rows = num_state_slots(p) * p.value_heads * kChunkSize;
  s.w_elems = rows * p.dim_k;
  s.p_elems = rows * kChunkSize;
  s.u_elems = rows * p.dim_v;
  s.t_elems = rows * kChunkSize;
  return s;
}

template <DType D>
void chunk_forward_tc(const FwdParams& p, const TcFwdWorkspace& ws, cudaStream_t stream);

// Step-by-step recurrence (fused_recurrent_*), meant for decoding: reads h0 once, writes ht once.
template <DType D>
void recurrent_forward(const FwdParams& p, cudaStream_t stream);

// Backward pass 1: the chunked forward without outputs; stores ws.states, ws.u, ws.z.
template <DType D>
void backward_states(const FwdParams& p, const BwdWorkspace& ws, cudaStream_t stream);

// Backward pass 2: reverse sweep over the chunks of every sequence; stores ws.dstates, ws.dr and p.dh0.
template <DType D>
void backward_dstates(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream);

// Backward pass 3: every chunk independently: dv, dbeta, dg and dq, dk (per value head, then group-summed).
template <DType D>
void backward_grads(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream);

// The whole backward (shared by the chunked and the recurrent ops): dq, dk, dv, dbeta, dg (when p.dg),
// dh0 (when p.dh0).
template <DType D>
inline void chunk_backward(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  backward_states<D>(p, ws, stream);
  backward_dstates<D>(p, ws, stream);
  backward_grads<D>(p, ws, stream);
}

// Backward pass 1 on tensor cores (fp16 / bf16; delta_fwd_tc.cuh): the tensor-core forward's two kernels in a
// states mode, storing ws.states, ws.u and ws.z with the same meaning as backward_states (ws.u is the forward's
// Vn = U - W S0). tws: the tensor-core forward's workspaces (tc_fwd_workspace_sizes), scratch here; with tws.t
// set, the UT kernel also stores T there for pass 2.
template <DType D>
void backward_states_tc(const FwdParams& p, const TcFwdWorkspace& tws, const BwdWorkspace& ws, cudaStream_t stream);

// Backward pass 2 on tensor cores (fp16 / bf16; delta_bwd_dstate_tc.cuh): stores ws.dstates, ws.dr and p.dh0 with
// the same meaning as backward_dstates. Reads P and T from tws as backward_states_tc left them (tws.t must be
// set), and the inputs; nothing from ws.
template <DType D>
void backward_dstates_tc(const BwdParams& p, const TcFwdWorkspace& tws, const BwdWorkspace& ws, cudaStream_t stream);

// Backward pass 3 on tensor cores (fp16 / bf16; delta_bwd_grad_tc.cuh): dv, dbeta, dg and dq, dk (per value head,
// then group-summed) with the same meaning as backward_grads, from ws.states, ws.dstates, ws.u, ws.z, ws.dr and the
// inputs (nothing from the tensor-core workspace).
template <DType D>
void backward_grads_tc(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream);

// The backward with all three passes on tensor cores (the group sum is shared with the SIMT backward). tws.t must
// be set.
template <DType D>
inline void chunk_backward_tc(const BwdParams& p, const TcFwdWorkspace& tws, const BwdWorkspace& ws,
                              cudaStream_t stream) {
  backward_states_tc<D>(p, tws, ws, stream);
  backward_dstates_tc<D>(p, tws, ws, stream);
  backward_grads_tc<D>(p, ws, stream);
}

}  // namespace linattn::delta::gpu
