#pragma once
// Sequences and chunk-boundary state slots of the chunked kernels (GLA, delta rule): the token span of
// sequence n and the slot layout of num_state_slots in ops/gla/cuda/gla_launch.h and
// ops/delta_rule/cuda/delta_launch.h, which reserves slot_base(n) = bos / Chunk + 2 n onwards for sequence n.
//
// Params is a family's params struct; it needs
//   const int64_t* cu_seqlens  (packed offsets [N+1], or nullptr: sequence n is batch row n),
//   int64_t seqlen             (T, tokens per batch row),
//   int64_t num_seqs           (N).
#include <cuda_runtime.h>

#include <cstdint>

namespace linattn::cuda_utils {

struct SeqSpan {
  int64_t bos, len;
};

template <typename Params>
__device__ __forceinline__ SeqSpan seq_span(const Params& p, int64_t n) {
  if (p.cu_seqlens != nullptr) {
    const int64_t b = p.cu_seqlens[n];
    return {b, p.cu_seqlens[n + 1] - b};
  }
  return {n * p.seqlen, p.seqlen};
}

// The + 2 n keeps the bases strictly increasing, also across empty sequences, and gives sequence n at least
// ceil(len / Chunk) + 1 slots before base(n + 1) (floor((bos + len) / Chunk) - floor(bos / Chunk) >=
// ceil(len / Chunk) - 1): one per chunk plus a final state, with no prefix sum over the device-resident offsets.
template <int Chunk>
__device__ __forceinline__ int64_t slot_base(int64_t bos, int64_t n) {
  return bos / Chunk + 2 * n;
}

// Maps a state slot to (sequence n, chunk c); false when the slot holds no chunk start (a final-state slot
// or an unused gap slot). The binary search looks for the last n with slot_base(n) <= slot, which is
// well defined because the bases strictly increase.
template <int Chunk, typename Params>
__device__ __forceinline__ bool locate_chunk(const Params& p, int64_t slot, int64_t& n, int64_t& c,
                                             SeqSpan& seq) {
  int64_t lo = 0, hi = p.num_seqs - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (slot_base<Chunk>(seq_span(p, mid).bos, mid) <= slot) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  n = lo;
  seq = seq_span(p, n);
  c = slot - slot_base<Chunk>(seq.bos, n);
  return c >= 0 && c * Chunk < seq.len;
}

}  // namespace linattn::cuda_utils
