#pragma once
// Torch-free launchers of the GLA CUDA kernels (fp32 SIMT, plus tensor-core forwards and backwards for scalar and
// per-key gates; fp32 accumulation everywhere). The glue (ops/gla/gla_cuda.cpp) fills the params, allocates the
// workspaces and picks the dtype and the path.
//
// Every launcher is asynchronous on `stream`, performs no device->host synchronisation and throws
// std::runtime_error (LINATTN_CUDA_CHECK) on a launch failure.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "csrc/cuda/dtype.h"
#include "ops/gla/gla_params.h"

namespace linattn::gla::gpu {

// Input dtype of q, k, v, o, do, dq, dk, dv. Gates and states are always fp32 on CUDA.
using DType = cuda_utils::DType;

constexpr int64_t kChunkSize = 64;   // rows per chunk (same as the CPU kernels)
constexpr int64_t kMaxHeadDim = 256;  // largest K and V the kernels take

// Chunk-boundary state slots: sequence n (tokens bos..bos+len) owns slots
//   slot_base(n) = bos / 64 + 2 n  ..  slot_base(n) + ceil(len / 64)
// (the state entering each of its chunks, then its final state). The bases are strictly increasing and
// the ranges never overlap, so no prefix sum over the (device-resident) cu_seqlens is needed; the total is
// total_tokens / 64 + 2 N slots.
inline int64_t num_state_slots(const FwdParams& p) { return (p.batch * p.seqlen) / kChunkSize + 2 * p.num_seqs; }

// fp32 workspaces of the chunked backward, allocated by the caller (e.g. the caching allocator).
struct BwdWorkspace {
  float* states = nullptr;      // [slots, H, K, V]: the state entering every chunk (+ final state)
  float* dstates = nullptr;     // [slots, H, K, V]: gradient w.r.t. the state leaving every chunk
  float* dg_partial = nullptr;  // [ceil(K/32), B*T, H]: per-K-tile partial sums of dg (scalar gates only)
};

struct BwdWorkspaceSizes {
  int64_t state_elems = 0;       // elements of states and of dstates (each)
  int64_t dg_partial_elems = 0;  // 0 when not needed
};

inline BwdWorkspaceSizes bwd_workspace_sizes(const BwdParams& p) {
  BwdWorkspaceSizes s;
  s.state_elems = num_state_slots(p) * p.heads * p.dim_k * p.dim_v;
  const int64_t k_tiles = (p.dim_k + 31) / 32;
  if (p.dg != nullptr && p.dg_sum_k && k_tiles > 1) s.dg_partial_elems = k_tiles * p.batch * p.seqlen * p.heads;
  return s;
}

// Chunked forward (chunk_gla / chunk_simple_gla): o and, when p.ht is set, the final state.
template <DType D>
void chunk_forward(const FwdParams& p, cudaStream_t stream);

// Tensor-core chunked forward (ops/gla/cuda/gla_fwd_tc.cuh) for fp16 / bf16 inputs and a scalar gate per
// (token, head), a per-head constant or no gate (p.g_k_stride == 0). Same outputs as chunk_forward.
constexpr int64_t kTcTileK = 64;  // key rows per state tile
constexpr int64_t kTcTileV = 64;  // value columns per state / output tile

inline bool tc_forward_supported(DType d, const FwdParams& p) { return d != DType::kFloat32 && p.g_k_stride == 0; }

// fp32 workspace of chunk_forward_tc, allocated by the caller: the state entering every chunk,
// [slots, H, K, V] (the layout of BwdWorkspace::states), then max |state| per (slot, head, K tile, V tile)
// (fp16 keeps each state tile in range with it).
inline int64_t chunk_forward_tc_workspace_floats(const FwdParams& p) {
  const int64_t tiles = ((p.dim_k + kTcTileK - 1) / kTcTileK) * ((p.dim_v + kTcTileV - 1) / kTcTileV);
  return num_state_slots(p) * p.heads * (p.dim_k * p.dim_v + tiles);
}

template <DType D>
void chunk_forward_tc(const FwdParams& p, float* workspace, cudaStream_t stream);

// Tensor-core chunked forward (ops/gla/cuda/gla_fwd_tc_vec.cuh) for fp16 / bf16 inputs with per-key (vector)
// log gates (p.g_k_stride != 0, chunk_gla). Same outputs as chunk_forward; its workspace has the size and
// layout of chunk_forward_tc's (chunk_forward_tc_workspace_floats). Its backward: chunk_backward_tc_vec.
inline bool tc_vec_forward_supported(DType d, const FwdParams& p) {
  return d != DType::kFloat32 && p.g != nullptr && p.g_k_stride != 0;
}

template <DType D>
void chunk_forward_tc_vec(const FwdParams& p, float* workspace, cudaStream_t stream);

// Tensor-core chunked backward (ops/gla/cuda/gla_bwd_tc.cuh) for the inputs the tensor-core forward takes:
// fp16 / bf16 with a scalar, per-head constant or no gate. Same outputs as chunk_backward (dq, dk, dv, dg
// summed over K, dh0).
inline bool tc_backward_supported(DType d, const FwdParams& p) { return tc_forward_supported(d, p); }

// Offsets (floats) of the regions of chunk_backward_tc's fp32 workspace, allocated by the caller as one buffer.
struct TcBwdWorkspaceLayout {
  int64_t states = 0;      // [slots, H, K, V]: the state entering every chunk, then each sequence's final state
  int64_t dstates = 0;     // [slots, H, K, V]: gradient w.r.t. the state leaving every chunk
  int64_t state_max = 0;   // [slots, H, K tiles, V tiles]: max |state| per tile (fp16 range scaling)
  int64_t dstate_max = 0;  // [slots, H, K tiles, V tiles]: max |dstate| per tile
  int64_t dg_partial = 0;  // [K tiles, B*T, H]: per-K-tile partial sums of dg (only with dg and K > 64)
  int64_t total = 0;
};

inline TcBwdWorkspaceLayout chunk_backward_tc_workspace(const BwdParams& p) {
  const int64_t ntk = (p.dim_k + kTcTileK - 1) / kTcTileK, ntv = (p.dim_v + kTcTileV - 1) / kTcTileV;
  const int64_t slots_h = num_state_slots(p) * p.heads;
  TcBwdWorkspaceLayout w;
  w.states = 0;
  w.dstates = w.states + slots_h * p.dim_k * p.dim_v;
  w.state_max = w.dstates + slots_h * p.dim_k * p.dim_v;
  w.dstate_max = w.state_max + slots_h * ntk * ntv;
  w.dg_partial = w.dstate_max + slots_h * ntk * ntv;
  w.total = w.dg_partial + ((p.dg != nullptr && ntk > 1) ? ntk * p.batch * p.seqlen * p.heads : 0);
  return w;
}

template <DType D>
void chunk_backward_tc(const BwdParams& p, float* workspace, cudaStream_t stream);

// Tensor-core chunked backward (ops/gla/cuda/gla_bwd_tc_vec.cuh) for the inputs of the per-key-gate tensor-core
// forward (fp16 / bf16, p.g_k_stride != 0). Same outputs as chunk_backward (dq, dk, dv, dg per key, dh0).
inline bool tc_vec_backward_supported(DType d, const FwdParams& p) { return tc_vec_forward_supported(d, p); }

// Its workspace: the regions of chunk_backward_tc_workspace without the dg partials (dg is per key, written once
// by the (chunk, K tile) that owns it).
inline TcBwdWorkspaceLayout chunk_backward_tc_vec_workspace(const BwdParams& p) {
  BwdParams no_partials = p;
  no_partials.dg = nullptr;
  return chunk_backward_tc_workspace(no_partials);
}

template <DType D>
void chunk_backward_tc_vec(const BwdParams& p, float* workspace, cudaStream_t stream);

// Step-by-step recurrence (fused_recurrent_*), meant for decoding: reads h0 once, writes ht once.
template <DType D>
void recurrent_forward(const FwdParams& p, cudaStream_t stream);

// Chunked backward shared by the chunked and recurrent ops: dq, dk, dv, dg (when p.dg), dh0 (when p.dh0).
template <DType D>
void chunk_backward(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream);

}  // namespace linattn::gla::gpu
