#pragma once
// Device pieces shared by the LoLCATs CUDA kernels: the CTA -> (batch, head, row tile) map and the chunk that
// holds the linear-attention sums a query tile starts from.
//
// The linear part of row i sums the keys j <= i - w. A query tile (rows r0 .. r0 + R - 1) takes the prefix
// sums of the chunks before cb = floor(max(r0 - w + 1, 0) / 64) (every key there has j <= r0 - w) and adds
// the keys cb * 64 .. i - w (fewer than 64 + R) explicitly, tile by tile. The key side mirrors it with suffix
// sums over query chunks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "csrc/cuda/simt_tiles.cuh"
#include "csrc/cuda/type_utils.cuh"
#include "ops/lolcats/cuda/lolcats_launch.h"

namespace linattn::lolcats::gpu {

using cuda_utils::ceil_div;
using cuda_utils::StorageOf;
using cuda_utils::from_float;
using cuda_utils::to_float;
namespace simt = cuda_utils::simt;

constexpr int kChunk = static_cast<int>(kStateChunk);

// Global loads a thread keeps in flight when a loop over key / query tiles (or over the F / V tiles of a
// prefix state) stages its next tile: a plain loop pays one memory latency per element it stores. A thread
// stages 8 to 32 elements of a tile; with 8 in flight ptxas (nvcc 13, sm_90a) spilled in the 64-wide window
// backward, which had no spills before.
constexpr int kLoadBatch = 4;

// The tile of rows (queries or keys) of this CTA: grid (tiles, H, B).
struct RowTile {
  int64_t b, h;  // batch row and head
  int64_t r0;    // first row of the tile within the sequence
  int64_t tok0;  // its token index, b * T + r0
  int rows;      // rows of the tile inside the sequence (>= 1)
};

__device__ __forceinline__ RowTile row_tile(const Params& p, int R) {
  RowTile t;
  t.b = blockIdx.z;
  t.h = blockIdx.y;
  t.r0 = int64_t(blockIdx.x) * R;
  t.tok0 = t.b * p.seqlen + t.r0;
  t.rows = static_cast<int>(min(int64_t(R), p.seqlen - t.r0));
  return t;
}

// gamma_h = sigmoid(window_factor_h), in fp32.
template <typename T>
__device__ __forceinline__ float gamma_of(const Params& p, int64_t h) {
  const float x = to_float(static_cast<const T*>(p.window_factor)[h]);
  return 1.f / (1.f + expf(-x));
}

// First chunk whose keys a query tile starting at r0 adds explicitly (see the file comment).
__device__ __forceinline__ int64_t linear_base_chunk(int64_t r0, int64_t w) {
  const int64_t first = r0 - w + 1;
  return (first > 0 ? first : 0) / kChunk;
}

// The [F*V + F] slot of chunk c of (b, h) in the state workspace.
__device__ __forceinline__ const float* state_slot(const Params& p, const float* states, int64_t b, int64_t h,
                                                   int64_t c) {
  const int64_t chunks = ceil_div(p.seqlen, kChunk);
  return states + ((b * p.heads + h) * chunks + c) * (p.dim_f * p.dim_v + p.dim_f);
}

}  // namespace linattn::lolcats::gpu
