#pragma once
// Device building blocks shared by the delta-rule CUDA kernels (fp32 SIMT, no tensor cores).
//
// Chunk kernels run 256 threads over one chunk of 64 rows; K and V are walked in tiles of 32 columns. Tiles
// live in dynamic shared memory as fp32 and are zero-padded: rows past the chunk (or sequence) end load
// q = k = v = do = 0, beta = 0 and g = 0, so
//   * padded rows have u = 0, dR = 0 and contribute nothing;
//   * the cumulative decay stays at b_{L-1}, hence b[63] = b_L and Gamma[63] = Gamma_L;
// and padded key / value columns keep the state rows / columns at 0.
// Every exponent is a difference b_i - b_j with i >= j or a cumulative decay b_i (<= 0 for log decays), so no
// exp(-b) is formed (the CPU kernel's rule).
//
// Thread maps (tid = threadIdx.x):
//   * 64 x 64 matrices: row i = tid % 64, key block jg = tid / 64 (columns 16 jg .. 16 jg + 15);
//   * 64 x 32 row tiles: row i = tid % 64, column group cg = tid / 64 (columns 8 cg .. 8 cg + 7);
//   * 32 x 32 state tiles: column tid % 32, rows tid / 32 + 8 r (r < 4);
//   * substitutions: warp w owns columns 4 w .. 4 w + 3, 8 lanes per column split the inner sum.
#include <cuda_runtime.h>

#include <cstdint>

#include "csrc/cuda/batched_copy.cuh"
#include "csrc/cuda/chunk_slots.cuh"
#include "csrc/cuda/type_utils.cuh"
#include "ops/delta_rule/cuda/delta_launch.h"
#include "ops/delta_rule/delta_params.h"

namespace linattn::delta::gpu {

using cuda_utils::ceil_div;
using cuda_utils::StorageOf;
using cuda_utils::from_float;
using cuda_utils::to_float;

constexpr int kChunk = 64;        // rows per chunk
constexpr int kThreads = 256;     // threads per chunk CTA
constexpr int kBK = 32;           // key columns per K tile
constexpr int kBV = 32;           // value columns per V tile
constexpr int kLD = kBK + 1;      // leading dim of [64 x 32] and [32 x 32] tiles (+1: conflict-free columns)
constexpr int kLDA = kChunk + 1;  // leading dim of [64 x 64] matrices
constexpr int kBlk = 16;          // columns of a key block in the 64 x 64 map
constexpr unsigned kFullMask = 0xffffffffu;

static_assert(kChunk == 64 && int64_t(kChunk) == kChunkSize, "the kernels assume chunks of 64 rows");
static_assert(kBK == kBV, "K and V tiles share the [64 x kLD] buffers");
static_assert(kThreads == kChunk * (kChunk / kBlk), "64 x 64 map: 64 rows x 4 key blocks");
static_assert(kThreads == kChunk * (kBV / 8), "row-tile map: 64 rows x 4 groups of 8 columns");
static_assert(kThreads == kBV * 8, "state-tile map: 32 columns x 8 row groups of 4 rows");
static_assert((kThreads / 32) * 4 == kBV, "substitutions: 8 warps x 4 columns");
static_assert(2 * kChunk * kLD >= kChunk * kLDA, "a [64 x kLDA] matrix fits in two [64 x kLD] tiles");

// ---------------------------------------------------------------------------------------------------------
// Sequences and chunk slots (csrc/cuda/chunk_slots.cuh), bound to this family's chunk size and params. See
// num_state_slots in delta_launch.h.

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
// element it stores. A thread stages 8 elements of a [64 x 32] tile, by default in two batches of 4: batches of
// 8 made ptxas (nvcc 13, sm_80) spill in kernels that had no spills before. Kernels may pick another batch.
constexpr int kTileBatch = 4;

// dst[i * kLD + c] = alpha_i * src[i * tok_stride + c] for i < rows, c < cols; 0 elsewhere in [64 x 32].
// alpha: per-row factors in shared memory, or nullptr for 1. kBatch: loads in flight per thread.
template <typename T, int kBatch = kTileBatch>
__device__ __forceinline__ void load_row_tile(float* __restrict__ dst, const T* __restrict__ src, int64_t tok_stride,
                                              int rows, int cols, const float* __restrict__ alpha = nullptr) {
  static_assert(kChunk * kBK % (kBatch * kThreads) == 0, "[64 x 32] tiles are staged in whole batches");
  cuda_utils::batched_copy<kThreads, kBatch>(
      kChunk * kBK,
      [&](int e) {
        const int i = e / kBK, c = e % kBK;
        return (i < rows && c < cols) ? src[int64_t(i) * tok_stride + c] : from_float<T>(0.f);
      },
      [&](int e, const T& raw) {
        const int i = e / kBK, c = e % kBK;
        float x = to_float(raw);
        // Padding stays an exact 0 whatever alpha holds there.
        if (alpha != nullptr && i < rows && c < cols) x *= alpha[i];
        dst[i * kLD + c] = x;
      });
}

// [32 x 32] block of a [K, V] fp32 matrix at rows d0.., columns c0.. (0 outside): dst[d * kLD + c]. 4 elements
// per thread: a single batch.
__device__ __forceinline__ void load_state_tile(float* __restrict__ dst, const float* __restrict__ S, int64_t V,
                                                int d0, int c0, int rows, int cols) {
  cuda_utils::batched_copy<kThreads, kBK * kBV / kThreads>(
      kBK * kBV,
      [&](int e) {
        const int d = e / kBV, c = e % kBV;
        return (d < rows && c < cols) ? S[int64_t(d0 + d) * V + c0 + c] : 0.f;
      },
      [&](int e, float x) { dst[(e / kBV) * kLD + e % kBV] = x; });
}

// The fp32 [K x V] state the SIMT chunk kernels carry (S forward, dS backward), tile by tile in shared memory:
// dst[e] for e < elems, e = d kBV + col, from src[nh K V + d V + v0 + col] (src == nullptr: 0). Rows >= K and
// columns >= V stay 0 (their operands are 0). All threads; synchronised on return. nh and KV come apart so the
// product stays inside the null check, as the kernels had it.
__device__ __forceinline__ void load_state_smem(float* __restrict__ dst, const float* __restrict__ src, int64_t nh,
                                                int64_t KV, int K, int V, int v0, int vcols, int elems) {
  for (int e = threadIdx.x; e < elems; e += kThreads) {
    const int d = e / kBV, c = e % kBV;
    dst[e] = (src != nullptr && d < K && c < vcols) ? src[nh * KV + int64_t(d) * V + v0 + c] : 0.f;
  }
  __syncthreads();
}

// Per-row beta, cumulative log decay b and Gamma = e^b of the chunk's rows t0 .. t0 + L - 1 (padded rows:
// beta = 0, b = b_{L-1}). graw: 64 floats of scratch. Contains one barrier; the caller synchronises after.
__device__ __forceinline__ void load_chunk_gates(const FwdParams& p, int64_t t0, int64_t hv, int L,
                                                 float* __restrict__ sbeta, float* __restrict__ sb,
                                                 float* __restrict__ sgam, float* __restrict__ graw) {
  const int i = threadIdx.x;
  if (i < kChunk) {
    const int64_t at = (t0 + i) * p.value_heads + hv;
    const float* __restrict__ beta = static_cast<const float*>(p.beta);
    const float* __restrict__ g = static_cast<const float*>(p.g);
    sbeta[i] = i < L ? beta[at] : 0.f;
    graw[i] = (g != nullptr && i < L) ? g[at] : 0.f;
  }
  __syncthreads();
  if (i < kChunk) {
    // Every thread adds the same prefix in the same order, so b_i - b_j is consistent across threads.
    float b = 0.f;
    for (int m = 0; m <= i; ++m) b += graw[m];
    sb[i] = b;
    sgam[i] = expf(b);
  }
}

// ---------------------------------------------------------------------------------------------------------
// 64 x 64 Gram matrices over one K tile: akk[jj] += k_i . k_j and (kWithQ) aqk[jj] += q_i . k_j for
// j = 16 jg + jj; blocks entirely above the diagonal are skipped (they stay 0).
template <bool kWithQ>
__device__ __forceinline__ void accumulate_gram(float (&akk)[kBlk], float (&aqk)[kBlk], const float* __restrict__ sq,
                                                const float* __restrict__ sk) {
  const int i = threadIdx.x % kChunk, jg = threadIdx.x / kChunk;
  if (jg * kBlk > i) return;
  const float* __restrict__ kb = sk + jg * kBlk * kLD;
  for (int d = 0; d < kBK; ++d) {
    const float ki = sk[i * kLD + d];
    const float qi = kWithQ ? sq[i * kLD + d] : 0.f;
#pragma unroll
    for (int jj = 0; jj < kBlk; ++jj) {
      const float kj = kb[jj * kLD + d];
      akk[jj] += ki * kj;
      if (kWithQ) aqk[jj] += qi * kj;
    }
  }
}

// sA[i][j] = alpha_i e^{b_i - b_j} acc[jj] for j < i (kDiag: j <= i), else 0. alpha: per-row factors in
// shared memory or nullptr for 1. Pairs with accumulate_gram.
template <bool kDiag>
__device__ __forceinline__ void store_gram(float* __restrict__ sA, const float (&acc)[kBlk], const float* __restrict__ sb,
                                           const float* __restrict__ alpha) {
  const int i = threadIdx.x % kChunk, jg = threadIdx.x / kChunk;
  const float bi = sb[i], ai = alpha != nullptr ? alpha[i] : 1.f;
#pragma unroll
  for (int jj = 0; jj < kBlk; ++jj) {
    const int j = jg * kBlk + jj;
    const bool keep = kDiag ? j <= i : j < i;
    sA[i * kLDA + j] = keep ? ai * expf(bi - sb[j]) * acc[jj] : 0.f;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Triangular solves on [64 x 32] tiles, column by column (no block barrier inside; the caller synchronises
// before and after). M is strictly lower triangular, M_ij = beta_i e^{b_i - b_j} k_i . k_j.

// U <- (I + M)^{-1} U, in place: u_i = r_i - sum_{j<i} M_ij u_j.
__device__ __forceinline__ void forward_substitute(float* __restrict__ sU, const float* __restrict__ sM, int L) {
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int c = w * 4 + lane / 8, s = lane % 8;
  for (int i = 1; i < L; ++i) {
    float acc = 0.f;
    for (int j = s; j < i; j += 8) acc += sM[i * kLDA + j] * sU[j * kLD + c];
    acc += __shfl_xor_sync(kFullMask, acc, 1);
    acc += __shfl_xor_sync(kFullMask, acc, 2);
    acc += __shfl_xor_sync(kFullMask, acc, 4);
    if (s == 0) sU[i * kLD + c] -= acc;
    __syncwarp();
  }
}

// D <- (I + M)^{-T} D, in place: d_i = x_i - sum_{j>i} M_ji d_j.
__device__ __forceinline__ void back_substitute(float* __restrict__ sD, const float* __restrict__ sM, int L) {
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int c = w * 4 + lane / 8, s = lane % 8;
  for (int i = L - 2; i >= 0; --i) {
    float acc = 0.f;
    for (int j = i + 1 + s; j < L; j += 8) acc += sM[j * kLDA + i] * sD[j * kLD + c];
    acc += __shfl_xor_sync(kFullMask, acc, 1);
    acc += __shfl_xor_sync(kFullMask, acc, 2);
    acc += __shfl_xor_sync(kFullMask, acc, 4);
    if (s == 0) sD[i * kLD + c] -= acc;
    __syncwarp();
  }
}

// Sum over the 32 lanes of a warp (every lane gets the total).
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int m = 16; m >= 1; m /= 2) x += __shfl_xor_sync(kFullMask, x, m);
  return x;
}

}  // namespace linattn::delta::gpu
