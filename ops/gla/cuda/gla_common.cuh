#pragma once
// Device building blocks shared by the GLA CUDA kernels (fp32 SIMT, no tensor cores).
//
// Every chunk kernel runs 256 threads over one chunk of 64 rows and works on K in tiles of 32 columns and
// V in tiles of 32 columns. Tiles live in dynamic shared memory as fp32, zero-padded: rows past the chunk
// (or sequence) end and columns past K / V are loaded as 0 (gates too), so
//   * padded rows add nothing (q = k = v = 0) and leave the cumulative gate at b_{L-1}, hence b[63] = b_L;
//   * padded key columns keep the state rows at 0.
// Numerical stability (as the CPU kernels): every exponent is a difference b_i - b_j with i >= j, a
// cumulative gate b_i (<= 0) or bL - b_j; no exp(-b) of a cumulative gate is formed. Intra-chunk scores use
// 16-row secondary chunks: elementwise exp(b_i - b_j) on diagonal blocks, and below the diagonal the key
// factors are re-based to the first row p of the query block: exp(b_i - b_j) = exp(b_i - b_p) exp(b_p - b_j).
#include <cuda_runtime.h>

#include <cstdint>

#include "csrc/cuda/batched_copy.cuh"
#include "csrc/cuda/chunk_slots.cuh"
#include "csrc/cuda/type_utils.cuh"
#include "ops/gla/cuda/gla_launch.h"
#include "ops/gla/gla_params.h"

namespace linattn::gla::gpu {

using cuda_utils::ceil_div;
using cuda_utils::StorageOf;
using cuda_utils::from_float;
using cuda_utils::to_float;

constexpr int kChunk = 64;             // rows per chunk
constexpr int kSub = 16;               // rows per secondary chunk
constexpr int kNumSub = kChunk / kSub;  // secondary chunks per chunk
constexpr int kThreads = 256;          // threads per chunk CTA
constexpr int kBK = 32;                // key columns per K tile
constexpr int kBV = 32;                // value columns per V tile
constexpr int kLD = kBK + 1;           // leading dim of [64 x 32] row tiles (+1: conflict-free column reads)
constexpr int kLDA = kChunk + 1;       // leading dim of [64 x 64] score tiles
constexpr int kKgRows = kSub * (1 + 2 + 3);  // packed re-based keys for query blocks 1, 2, 3: 16 + 32 + 48 rows
constexpr int kSegs = kThreads / kBK;        // segments of the column scans
constexpr int kSegRows = kChunk / kSegs;     // rows per scan segment

static_assert(kChunk == 64 && int64_t(kChunk) == kChunkSize, "the kernels assume chunks of 64 rows");
static_assert(kChunk % kSub == 0 && kNumSub == 4, "a chunk is 4 secondary chunks of 16 rows");
static_assert(kThreads == kChunk * kNumSub, "score tiles map thread t to row t % 64 and key block t / 64");
static_assert(kThreads == kChunk * (kBV / 8), "row x V-tile products map thread t to row t % 64 and 8 columns");
static_assert(kThreads == kChunk * (kBK / 8), "row x K-tile products map thread t to row t % 64 and 8 columns");
static_assert(kThreads == kBV * 8 && kBK == kBV, "state updates map thread t to column t % 32 and 4 rows");
static_assert(kSegs * kSegRows == kChunk && kSegs * kBK == kThreads, "column scans: 8 segments x 32 columns");
static_assert(kBK % 8 == 0 && kThreads == kBK * 8, "the dg carry maps thread t to row t / 8 and lane t % 8");

// ---------------------------------------------------------------------------------------------------------
// Sequences and chunk slots (csrc/cuda/chunk_slots.cuh), bound to this family's chunk size and params. See
// num_state_slots in gla_launch.h.

using cuda_utils::SeqSpan;
using cuda_utils::seq_span;

__device__ __forceinline__ int64_t slot_base(int64_t bos, int64_t n) { return cuda_utils::slot_base<kChunk>(bos, n); }

__device__ __forceinline__ bool locate_chunk(const FwdParams& p, int64_t slot, int64_t& n, int64_t& c,
                                             SeqSpan& seq) {
  return cuda_utils::locate_chunk<kChunk>(p, slot, n, c, seq);
}

// ---------------------------------------------------------------------------------------------------------
// Tile loads (all threads; the caller synchronises afterwards). They run once per K / V tile of every chunk,
// so each keeps several global loads in flight (batched_copy): a plain loop pays one memory latency per
// element it stores. A thread stages 8 elements of a [64 x 32] tile, in two batches of 4: batches of 8 made
// ptxas spill (nvcc 13, sm_80 / sm_90a) in kernels that had no spills before.
constexpr int kTileBatch = 4;
static_assert(kChunk * kBK % (kTileBatch * kThreads) == 0, "[64 x 32] tiles are staged in whole batches");

// dst[i * ld + d] = mul * src[i * tok_stride + d] for i < rows, d < cols; 0 elsewhere in [kChunk x width].
// mul is do_scale for do tiles; the other callers leave it at 1, which the compiler folds away.
template <typename T, int kWidth>
__device__ __forceinline__ void load_row_tile(float* __restrict__ dst, int ld, const T* __restrict__ src,
                                              int64_t tok_stride, int rows, int cols, float mul = 1.f) {
  cuda_utils::batched_copy<kThreads, kTileBatch>(
      kChunk * kWidth,
      [&](int e) {
        const int i = e / kWidth, d = e % kWidth;
        return (i < rows && d < cols) ? src[int64_t(i) * tok_stride + d] : from_float<T>(0.f);
      },
      [&](int e, const T& x) { dst[(e / kWidth) * ld + e % kWidth] = to_float(x) * mul; });
}

// The value written to o at element `off` (o's layout) for the fp32 result x: x itself, or with Liger's mix
// (FwdParams::o_mix) lin_w * x + mix_w * o_mix[off], rounded once. mix is p.o_mix cast by the caller.
template <typename T>
__device__ __forceinline__ T output_value(const FwdParams& p, const T* __restrict__ mix, int64_t off, float x) {
  if (mix == nullptr) return from_float<T>(x);
  return from_float<T>(fmaf(static_cast<float>(p.mix_w), to_float(mix[off]), static_cast<float>(p.lin_w) * x));
}

// Raw log gates of rows t0..t0+63 and key columns d0..d0+31 (0 outside the chunk, past K, or with no gate).
__device__ __forceinline__ void load_gate_tile(float* __restrict__ sb, const FwdParams& p, int64_t t0, int64_t h,
                                               int d0, int rows, int cols) {
  const float* __restrict__ g = static_cast<const float*>(p.g);
  cuda_utils::batched_copy<kThreads, kTileBatch>(
      kChunk * kBK,
      [&](int e) {
        const int i = e / kBK, d = e % kBK;
        return (g != nullptr && i < rows && d < cols)
                   ? g[(t0 + i) * p.g_tok_stride + h * p.g_head_stride + int64_t(d0 + d) * p.g_k_stride]
                   : 0.f;
      },
      [&](int e, float x) { sb[(e / kBK) * kLD + e % kBK] = x; });
}

// [kBK x kBV] block of a [K, V] fp32 state at rows d0.., columns c0.. (0 outside). 4 elements per thread: a
// single batch.
__device__ __forceinline__ void load_state_tile(float* __restrict__ dst, const float* __restrict__ S, int V, int d0,
                                                int c0, int rows, int cols) {
  cuda_utils::batched_copy<kThreads, kBK * kBV / kThreads>(
      kBK * kBV,
      [&](int e) {
        const int d = e / kBV, c = e % kBV;
        return (d < rows && c < cols) ? S[int64_t(d0 + d) * V + c0 + c] : 0.f;
      },
      [&](int e, float x) { dst[e] = x; });
}

// In-place inclusive scan down (kReverse: up) each of the 32 columns of a [64 x kLD] tile: a prefix sum
// (cumulative gate) or a suffix sum (reverse cumsum of dg). All threads; the tile must be complete on entry
// (caller synchronised); ends synchronised. seg: kSegs * kBK floats of scratch.
template <bool kReverse>
__device__ __forceinline__ void column_scan(float* __restrict__ buf, float* __restrict__ seg) {
  const int d = threadIdx.x % kBK, s = threadIdx.x / kBK;
  float run = 0.f;
#pragma unroll
  for (int r = 0; r < kSegRows; ++r) {
    const int row = kReverse ? kChunk - 1 - (s * kSegRows + r) : s * kSegRows + r;
    run += buf[row * kLD + d];
    buf[row * kLD + d] = run;
  }
  seg[s * kBK + d] = run;
  __syncthreads();
  float offset = 0.f;
  for (int q = 0; q < s; ++q) offset += seg[q * kBK + d];
#pragma unroll
  for (int r = 0; r < kSegRows; ++r) {
    const int row = kReverse ? kChunk - 1 - (s * kSegRows + r) : s * kSegRows + r;
    buf[row * kLD + d] += offset;
  }
  __syncthreads();
}

// Packed row offset of the keys re-based for query block ib (1..3): 0, 16, 48.
__device__ __forceinline__ int kg_offset(int ib) { return kSub * ib * (ib - 1) / 2; }

// sqg[i][d] = q_id exp(b_id - b_pd), p = first row of i's secondary chunk;
// skg[kg_offset(ib) + j][d] = k_jd exp(b_pd - b_jd) for query block ib in 1..3, p = 16 ib, j < p.
// All threads; sq, sk, sb complete on entry; the caller synchronises afterwards.
__device__ __forceinline__ void rebase_tiles(const float* __restrict__ sq, const float* __restrict__ sk,
                                             const float* __restrict__ sb, float* __restrict__ sqg,
                                             float* __restrict__ skg) {
  for (int e = threadIdx.x; e < kChunk * kBK; e += kThreads) {
    const int i = e / kBK, d = e % kBK;
    const int p = (i / kSub) * kSub;
    sqg[i * kLD + d] = sq[i * kLD + d] * expf(sb[i * kLD + d] - sb[p * kLD + d]);
  }
  for (int e = threadIdx.x; e < kKgRows * kBK; e += kThreads) {
    const int r = e / kBK, d = e % kBK;
    const int ib = r < kSub ? 1 : (r < 3 * kSub ? 2 : 3);
    const int j = r - kg_offset(ib);
    const int p = ib * kSub;
    skg[r * kLD + d] = sk[j * kLD + d] * expf(sb[p * kLD + d] - sb[j * kLD + d]);
  }
}

// Adds one K tile to the unscaled intra-chunk scores A_ij = sum_d q_id k_jd exp(b_id - b_jd) (j <= i).
// Thread t owns row i = t % 64 and key block jg = t / 64: acc[jj] is A[i][16 jg + jj]; blocks above the
// diagonal stay 0. Needs sq, sk, sb (cumulative) and the re-based sqg, skg.
__device__ __forceinline__ void accumulate_scores(float (&acc)[kSub], const float* __restrict__ sq,
                                                  const float* __restrict__ sk, const float* __restrict__ sb,
                                                  const float* __restrict__ sqg, const float* __restrict__ skg) {
  const int i = threadIdx.x % kChunk, jg = threadIdx.x / kChunk, ib = i / kSub;
  if (ib == jg) {
    // Diagonal block: elementwise gate differences, only for j <= i (exp(b_i - b_j) <= 1).
    for (int d = 0; d < kBK; ++d) {
      const float qi = sq[i * kLD + d], bi = sb[i * kLD + d];
#pragma unroll
      for (int jj = 0; jj < kSub; ++jj) {
        const int j = jg * kSub + jj;
        if (j <= i) acc[jj] += qi * sk[j * kLD + d] * expf(bi - sb[j * kLD + d]);
      }
    }
  } else if (ib > jg) {
    // Below the diagonal: (q_i e^{b_i - b_p}) . (k_j e^{b_p - b_j}), p = 16 ib > j.
    const float* __restrict__ kgb = skg + (kg_offset(ib) + jg * kSub) * kLD;
    for (int d = 0; d < kBK; ++d) {
      const float qgi = sqg[i * kLD + d];
#pragma unroll
      for (int jj = 0; jj < kSub; ++jj) acc[jj] += qgi * kgb[jj * kLD + d];
    }
  }
}

// Writes alpha * acc into the [64 x kLDA] score tile (zeros above the diagonal). Pairs with accumulate_scores.
__device__ __forceinline__ void store_scores(float* __restrict__ sA, const float (&acc)[kSub], float alpha) {
  const int i = threadIdx.x % kChunk, jg = threadIdx.x / kChunk;
#pragma unroll
  for (int jj = 0; jj < kSub; ++jj) {
    const int j = jg * kSub + jj;
    sA[i * kLDA + j] = j <= i ? alpha * acc[jj] : 0.f;
  }
}

// The SIMT chunk kernels of the forward and the state-gradient pass keep the CTA's [K x kBV] slice of a state
// (column block v0 .. v0 + vcols - 1 of a [K, V] fp32 tensor) in shared memory, row d at slice[d * kBV].

// __restrict__ only where the kernels had it (the source of the initial slice): on every parameter it changed which
// global loads of the fp32 state-gradient kernel nvcc made read-only (LDG.CONSTANT), i.e. its code.

// slice <- rows d < K of src + off (a null src is a zero state); padded rows up to `rows` and columns stay 0.
// All threads; the caller synchronises afterwards.
__device__ __forceinline__ void state_to_slice(float* slice, const float* __restrict__ src, int64_t off, int K, int V,
                                               int v0, int vcols, int rows) {
  for (int e = threadIdx.x; e < rows * kBV; e += kThreads) {
    const int d = e / kBV, c = e % kBV;
    slice[e] = (src != nullptr && d < K && c < vcols) ? src[off + int64_t(d) * V + v0 + c] : 0.f;
  }
}

// The reverse copy of the real rows and columns.
__device__ __forceinline__ void slice_to_state(float* dst, const float* slice, int K, int V, int v0, int vcols) {
  for (int e = threadIdx.x; e < K * kBV; e += kThreads) {
    const int d = e / kBV, cc = e % kBV;
    if (cc < vcols) dst[int64_t(d) * V + v0 + cc] = slice[e];
  }
}

}  // namespace linattn::gla::gpu
