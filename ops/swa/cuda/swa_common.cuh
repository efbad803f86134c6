#pragma once
// Device pieces shared by the sliding-window attention kernels: the mapping from a CTA to (sequence, 64- or
// 32-row tile) with and without cu_seqlens.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "csrc/cuda/simt_tiles.cuh"
#include "csrc/cuda/type_utils.cuh"
#include "ops/swa/cuda/swa_launch.h"

namespace linattn::swa::gpu {

using cuda_utils::ceil_div;
using cuda_utils::StorageOf;
namespace simt = cuda_utils::simt;

// Tile slots of `rows` rows: without cu_seqlens slot = n * ceil(T / rows) + tile. With cu_seqlens sequence n
// owns slots base(n) = bos / rows + n .. base(n) + ceil(len / rows) - 1: base(n+1) - base(n) =
// floor((bos + len) / rows) - floor(bos / rows) + 1 >= ceil(len / rows), so the ranges never overlap and no
// prefix sum over the device-resident offsets is needed; floor(T / rows) + N slots in all.
inline int64_t num_tile_slots(const Params& p, int rows) {
  return p.cu_seqlens != nullptr ? p.seqlen / rows + p.num_seqs : p.batch * ceil_div(p.seqlen, rows);
}

struct TileSpan {
  int64_t bos;  // first token of the sequence (flat index over B*T)
  int64_t len;  // tokens of the sequence
  int64_t r0;   // first row of the tile, relative to bos
};

// false when the slot holds no rows (a gap slot, an empty sequence, or past the end).
__device__ __forceinline__ bool locate_tile(const Params& p, int rows, int64_t slot, TileSpan& t) {
  if (p.cu_seqlens == nullptr) {
    const int64_t per_seq = ceil_div(p.seqlen, rows);
    const int64_t n = slot / per_seq;
    t = {n * p.seqlen, p.seqlen, (slot % per_seq) * rows};
    return n < p.batch;
  }
  // Last n with base(n) <= slot.
  int64_t lo = 0, hi = p.num_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (p.cu_seqlens[mid] / rows + mid <= slot) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int64_t bos = p.cu_seqlens[lo];
  t = {bos, p.cu_seqlens[lo + 1] - bos, (slot - (bos / rows + lo)) * rows};
  return t.r0 >= 0 && t.r0 < t.len;
}

}  // namespace linattn::swa::gpu
