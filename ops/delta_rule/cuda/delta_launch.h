#pragma once
// Torch-free launchers of the delta-rule CUDA kernels (fp32 SIMT, fp32 accumulation). The glue
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

#include "ops/delta_rule/delta_params.h"

namespace linattn::delta::gpu {

// Input dtype of q, k, v, o, do, dq, dk, dv.
enum class DType { kFloat32, kFloat16, kBFloat16 };

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

}  // namespace linattn::delta::gpu
