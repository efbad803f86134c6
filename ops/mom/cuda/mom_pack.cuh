#pragma once
// Where each (token, slot) copy lands in the packed layout, computed inside one CTA without waiting for any
// other CTA. Sequence e*B + b in token order is a stable counting sort of the flat copies c = n*k + j by
// memory e (flat order is batch-major, so within a memory the copies already come batch by batch):
//
//   row(c) = sum_{e' < e} count_all(e') + #{c' < c : e(c') = e}.
//
// A CTA owning tokens [n0, n1) first histograms ALL N*k indices (every CTA does this redundantly: no CTA
// waits for another, no grid sync, no look-back), splitting the counts into "before n0*k" and "all"; that
// gives each memory's next free row at n0. It then walks its tokens in chunks of at most 256 copies (whole
// tokens, never across a batch boundary): a warp vote groups equal memories inside each warp, per-warp
// counts are scanned across the 8 warps, and the cursors advance by the chunk's totals. Counts are integers
// in shared memory written by one lane each, so the result is the same on every run.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cassert>
#include <cstdint>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/type_utils.cuh"
#include "ops/mom/cuda/mom_launch.h"

namespace linattn::mom::gpu {

using cuda_utils::ceil_div;
using cuda_utils::StorageOf;
using cuda_utils::from_float;
using cuda_utils::to_float;

constexpr int kWarps = int(kThreads) / 32;

// Dynamic shared memory: two [kWarps][E] histograms, E cursors, and per-chunk row / order / weight slots.
inline size_t smem_bytes(int64_t memories) {
  return sizeof(int) * size_t(2 * kWarps * memories + memories + 2 * kThreads) + sizeof(float) * kThreads;
}

// A memory index, clamped so that a bad index can never address outside the buffers; the device assertion
// reports it (the emulator has none: it only checks that nothing is written out of bounds).
__device__ __forceinline__ int load_memory(const Params& p, int64_t c) {
  const int64_t e = p.indices[c];
#if defined(__CUDA_ARCH__)
  if (e < 0 || e >= p.memories) __assert_fail("mom: indices out of range [0, num_memories)", __FILE__, __LINE__, __func__);
#endif
  return int(e < 0 ? 0 : (e >= p.memories ? p.memories - 1 : e));
}

__device__ __forceinline__ float load_weight(const Params& p, int64_t i) {
  switch (p.weight_type) {
    case WeightType::kFloat16:
      return __half2float(static_cast<const __half*>(p.weights)[i]);
    case WeightType::kBFloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p.weights)[i]);
    default:
      return static_cast<const float*>(p.weights)[i];
  }
}

__device__ __forceinline__ void store_weight(const Params& p, int64_t i, float v) {
  switch (p.weight_type) {
    case WeightType::kFloat16:
      static_cast<__half*>(p.dweights)[i] = __float2half_rn(v);
      break;
    case WeightType::kBFloat16:
      static_cast<__nv_bfloat16*>(p.dweights)[i] = __float2bfloat16_rn(v);
      break;
    default:
      static_cast<float*>(p.dweights)[i] = v;
  }
}

// The lanes of the warp whose value equals this lane's (values below 2^bits): one vote per bit. Every lane
// of the warp must call it.
__device__ __forceinline__ unsigned match_lanes(int v, int bits) {
  unsigned peers = 0xffffffffu;
  for (int b = 0; b < bits; ++b) {
    const int bit = (v >> b) & 1;
    const unsigned ones = __ballot_sync(0xffffffffu, bit);
    peers &= bit ? ones : ~ones;
  }
  return peers;
}

struct Packer {
  int* wcount;     // [kWarps][E]: per-warp counts, then per-warp first rows of a chunk
  int* wpre;       // [kWarps][E]: per-warp counts of the copies before the CTA's first copy
  int* cursor;     // [E]: next free row of each memory
  int* chunk_row;  // [kThreads]: row of copy i of the current chunk
  int* chunk_aux;  // [kThreads]: free for the caller (combine: copy order inside a token)
  float* chunk_w;  // [kThreads]: free for the caller (combine: weights)
  int memories, bits, tid, warp, lane;

  __device__ Packer(int* smem, const Params& p)
      : memories(int(p.memories)), tid(int(threadIdx.x)), warp(int(threadIdx.x) / 32), lane(int(threadIdx.x) % 32) {
    wcount = smem;
    wpre = wcount + kWarps * memories;
    cursor = wpre + kWarps * memories;
    chunk_row = cursor + memories;
    chunk_aux = chunk_row + kThreads;
    chunk_w = reinterpret_cast<float*>(chunk_aux + kThreads);
    bits = 0;  // enough bits for 0..E (E marks an inactive lane)
    while ((1 << bits) <= memories) ++bits;
  }

  // Cursors at copy `first` (the CTA's first copy): the redundant histogram of all N*k indices.
  __device__ void start(const Params& p, int64_t first) {
    for (int i = tid; i < 2 * kWarps * memories; i += int(kThreads)) wcount[i] = 0;
    __syncthreads();
    const int64_t copies = p.batch * p.seqlen * p.topk;
    for (int64_t base = int64_t(warp) * 32; base < copies; base += kThreads) {
      const int64_t c = base + lane;
      const bool valid = c < copies;
      const int e = valid ? load_memory(p, c) : memories;
      const unsigned peers = match_lanes(e, bits);
      const unsigned before = __ballot_sync(0xffffffffu, valid && c < first);
      if (valid && __ffs(int(peers)) - 1 == lane) {  // one lane per distinct memory: no two write one bin
        wcount[warp * memories + e] += __popc(peers);
        wpre[warp * memories + e] += __popc(peers & before);
      }
      __syncwarp();
    }
    __syncthreads();
    for (int e = tid; e < memories; e += int(kThreads)) {
      int all = 0, pre = 0;
      for (int w = 0; w < kWarps; ++w) {
        all += wcount[w * memories + e];
        pre += wpre[w * memories + e];
      }
      wcount[e] = all;
      cursor[e] = pre;
    }
    __syncthreads();
    if (warp == 0) {  // cursor[e] += sum of the totals of memories before e (exclusive scan, 32 at a time)
      int carry = 0;
      for (int e0 = 0; e0 < memories; e0 += 32) {
        const int e = e0 + lane;
        const int v = e < memories ? wcount[e] : 0;
        int incl = v;
        for (int off = 1; off < 32; off <<= 1) {
          const int u = __shfl_sync(0xffffffffu, incl, lane >= off ? lane - off : 0);
          if (lane >= off) incl += u;
        }
        if (e < memories) cursor[e] += carry + incl - v;
        carry += __shfl_sync(0xffffffffu, incl, 31);
      }
    }
    __syncthreads();
  }

  // Rows of the chunk's copies first .. first+count-1 (count <= kThreads): thread i gets copy first+i's row
  // (-1 for i >= count). When the chunk starts batch b (batch_start = b, else -1) the cursors at that point
  // are cu_seqlens[e*B + b]. The caller must pass a __syncthreads before the next call.
  __device__ int place(const Params& p, int64_t first, int count, int64_t batch_start) {
    const bool active = tid < count;
    const int e = active ? load_memory(p, first + tid) : memories;
    const unsigned peers = match_lanes(e, bits);
    for (int i = lane; i < memories; i += 32) wcount[warp * memories + i] = 0;
    __syncwarp();
    if (active && __ffs(int(peers)) - 1 == lane) wcount[warp * memories + e] = __popc(peers);
    __syncthreads();
    for (int i = tid; i < memories; i += int(kThreads)) {
      int run = cursor[i];
      if (batch_start >= 0 && p.cu_seqlens != nullptr) p.cu_seqlens[i * p.batch + batch_start] = run;
      for (int w = 0; w < kWarps; ++w) {
        const int n = wcount[w * memories + i];
        wcount[w * memories + i] = run;
        run += n;
      }
      cursor[i] = run;
    }
    __syncthreads();
    return active ? wcount[warp * memories + e] + __popc(peers & ((1u << lane) - 1u)) : -1;
  }
};

// Drives a CTA over its tokens chunk by chunk; consume(n, count, row) runs once per chunk on every thread
// with the chunk's first token, its number of copies and this thread's row (-1 if none).
template <typename Consume>
__device__ __forceinline__ void for_each_chunk(const Params& p, Packer& pk, Consume&& consume) {
  const int64_t tokens = p.batch * p.seqlen, k = p.topk, chunk = chunk_tokens(k);
  const int64_t n_begin = int64_t(blockIdx.x) * p.tokens_per_block;
  const int64_t n_end = n_begin + p.tokens_per_block < tokens ? n_begin + p.tokens_per_block : tokens;
  pk.start(p, n_begin * k);
  for (int64_t n = n_begin; n < n_end;) {
    const int64_t batch_end = (n / p.seqlen + 1) * p.seqlen;
    int64_t stop = n + chunk < n_end ? n + chunk : n_end;
    stop = stop < batch_end ? stop : batch_end;
    const int count = int((stop - n) * k);
    const int row = pk.place(p, n * k, count, n % p.seqlen == 0 ? n / p.seqlen : -1);
    consume(n, count, row);
    __syncthreads();
    n = stop;
  }
}

}  // namespace linattn::mom::gpu
