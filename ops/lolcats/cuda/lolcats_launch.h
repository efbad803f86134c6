#pragma once
// Torch-free launchers of the LoLCATs hybrid attention CUDA kernels (fp32 SIMT, fp32 accumulation). The glue
// (ops/lolcats/lolcats_cuda.cpp) checks the arguments, fills the params, allocates outputs and workspaces
// and picks the dtype.
//
// Every launcher is asynchronous on `stream`, performs no device->host synchronisation and throws
// std::runtime_error (LINATTN_CUDA_CHECK / LINATTN_CHECK_LAUNCH) on a launch failure.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "csrc/cuda/dtype.h"
#include "csrc/cuda/tile_shape.h"
#include "ops/lolcats/lolcats_params.h"

namespace linattn::lolcats::gpu {

// Input dtype of q, k, v, fq, fk, window_factor, o, do and the gradients. m, z and workspaces are fp32.
using DType = cuda_utils::DType;

constexpr int64_t kMaxDim = 256;     // largest D, V and F the kernels take
constexpr int64_t kStateChunk = 64;  // tokens per chunk of the linear-attention prefix / suffix sums

inline int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t num_state_chunks(const Params& p) { return ceil_div64(p.seqlen, kStateChunk); }
// One chunk slot holds an [F x V] sum (row-major) followed by an [F] sum.
inline int64_t state_slot_elems(const Params& p) { return p.dim_f * p.dim_v + p.dim_f; }
// Padded feature width of the tiles (the largest of D, V, F rounded up to 32, 64, 128 or 256).
inline int tile_width(const Params& p) {
  int64_t d = p.dim_qk > p.dim_v ? p.dim_qk : p.dim_v;
  d = d > p.dim_f ? d : p.dim_f;
  return cuda_utils::simt::width_bucket(d);
}
inline int64_t num_query_tiles(const Params& p) {
  return ceil_div64(p.seqlen, cuda_utils::simt::tile_rows_for(tile_width(p)));
}

// fp32 workspace of the forward: [B*H, chunks, F*V + F] exclusive prefix sums (sum fk v^T, sum fk) over the
// chunks before each chunk.
inline int64_t fwd_workspace_elems(const Params& p) {
  return p.batch * p.heads * num_state_chunks(p) * state_slot_elems(p);
}

// Forward: o, m, z.
template <DType D>
void forward(const Params& p, float* states_ws, cudaStream_t stream);

// fp32 workspaces of the backward, allocated by the caller (e.g. the caching allocator).
struct BwdWorkspace {
  float* states = nullptr;      // [B*H, chunks, F*V + F]: prefix sums of (fk v^T, fk), then suffix sums of
                                // (fq dN^T, fq dZ) from each chunk on
  float* dz = nullptr;          // [B*T, H]: dZ_i = -(do_i . o_i) / z_i
  float* tie_grad = nullptr;    // [B*T, H]: dm_i / (number of tied window maxima of row i)
  float* dv_linear = nullptr;   // [B*T, H, V]: linear-attention part of dv
  float* dm_partial = nullptr;  // [B, H, query tiles]: per-CTA sums of dm_i (for dwindow_factor)
};

struct BwdWorkspaceSizes {
  int64_t states = 0;      // elements of BwdWorkspace::states
  int64_t rows = 0;        // elements of dz and of tie_grad (each)
  int64_t dv_linear = 0;   // elements of dv_linear
  int64_t dm_partial = 0;  // elements of dm_partial
};

inline BwdWorkspaceSizes bwd_workspace_sizes(const Params& p) {
  BwdWorkspaceSizes s;
  s.states = fwd_workspace_elems(p);
  s.rows = p.batch * p.seqlen * p.heads;
  s.dv_linear = s.rows * p.dim_v;
  s.dm_partial = p.batch * p.heads * num_query_tiles(p);
  return s;
}

// Backward, in three parts that must run in this order on one stream:
// dZ and the linear-attention part (dfq, dfk, ws.dv_linear) ...
template <DType D>
void backward_linear(const Params& p, const BwdWorkspace& ws, cudaStream_t stream);
// ... then the window part (dq, dk, dv = window part + ws.dv_linear) and dwindow_factor.
template <DType D>
void backward_window(const Params& p, const BwdWorkspace& ws, cudaStream_t stream);

template <DType D>
void backward(const Params& p, const BwdWorkspace& ws, cudaStream_t stream) {
  backward_linear<D>(p, ws, stream);
  backward_window<D>(p, ws, stream);
}

}  // namespace linattn::lolcats::gpu
