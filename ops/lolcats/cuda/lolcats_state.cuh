#pragma once
// Chunk-level sums of the linear-attention part of LoLCATs (fp32):
//   chunk_sums:  per (batch, head, chunk of 64 tokens) S_c = sum_i x_i y_i^T / div_i  ([F x V]) and
//                s_c = sum_i x_i wz_i  ([F]); forward: x = fk, y = v, div = wz = 1; backward: x = fq,
//                y = do, div = z (so y / div = dN), wz = dZ.
//   scan:        in place over the chunks of each (batch, head): exclusive prefix (the sums of the chunks
//                before c) or inclusive suffix (the sums of chunks c, c+1, ...). One thread per element of a
//                slot, chunks in order: deterministic.
//   dwf_reduce:  dwindow_factor_h = -(1 - gamma_h) sum_{b, tiles} dm_partial (fixed-order tree in shared
//                memory, no atomics).
#include "csrc/cuda/cuda_check.h"
#include "ops/lolcats/cuda/lolcats_common.cuh"

namespace linattn::lolcats::gpu {

constexpr int kSumCols = 64;               // F and V columns per chunk_sums CTA
constexpr int kSumLd = kSumCols + 1;       // leading dim of its shared tiles
constexpr int kSumNC = kSumCols / simt::kSide;

// Token-major operand of chunk_sums: element (token, head, d) at ptr[token * tok_stride + head * head_stride + d].
template <typename T>
struct RowOperand {
  const T* ptr;         // base pointer
  int64_t tok_stride;   // elements between tokens
  int64_t head_stride;  // elements between heads
  int cols;             // F for x, V for y
};

template <typename T>
__global__ void __launch_bounds__(simt::kThreads)
    chunk_sums_kernel(const Params p, RowOperand<T> x, RowOperand<T> y, const float* __restrict__ div,
                      const float* __restrict__ wz, float* __restrict__ states) {
  __shared__ float sx[kChunk * kSumLd];
  __shared__ float sy[kChunk * kSumLd];
  __shared__ float sdiv[kChunk];
  __shared__ float sw[kChunk];
  const int64_t chunks = ceil_div(p.seqlen, kChunk);
  const int64_t bh = blockIdx.x / chunks, c = blockIdx.x % chunks;
  const int64_t b = bh / p.heads, h = bh % p.heads;
  const int v_blocks = y.cols > 0 ? static_cast<int>(ceil_div(y.cols, kSumCols)) : 1;  // V = 0 still sums x
  const int f0 = (blockIdx.y / v_blocks) * kSumCols, v0 = (blockIdx.y % v_blocks) * kSumCols;
  const int F = x.cols, V = y.cols;
  const int64_t tok0 = b * p.seqlen + c * kChunk;
  const int rows = static_cast<int>(min(int64_t(kChunk), p.seqlen - c * kChunk));
  const int tid = threadIdx.x;

  for (int i = tid; i < kChunk; i += simt::kThreads) {
    const int64_t row = (tok0 + i) * p.heads + h;
    sdiv[i] = i < rows ? (div != nullptr ? 1.f / div[row] : 1.f) : 0.f;
    sw[i] = i < rows ? (wz != nullptr ? wz[row] : 1.f) : 0.f;
  }
  __syncthreads();
  simt::load_rows<T, kSumCols, kLoadBatch>(sx, kSumLd, x.ptr + h * x.head_stride + tok0 * x.tok_stride + f0, x.tok_stride, rows,
                               F - f0, kChunk);
  simt::load_rows<T, kSumCols, kLoadBatch>(sy, kSumLd, y.ptr + h * y.head_stride + tok0 * y.tok_stride + v0, y.tok_stride, rows,
                               V - v0, kChunk, sdiv);
  __syncthreads();

  // Thread (ty, tx) owns S[f0 + ty + 16 r][v0 + tx + 16 c].
  const int ty = simt::thread_row(), tx = simt::thread_col();
  float acc[kSumNC][kSumNC];
  simt::zero(acc);
  for (int i = 0; i < rows; ++i) {
    float a[kSumNC];
#pragma unroll
    for (int r = 0; r < kSumNC; ++r) a[r] = sx[i * kSumLd + ty + simt::kSide * r];
#pragma unroll
    for (int cc = 0; cc < kSumNC; ++cc) {
      const float yv = sy[i * kSumLd + tx + simt::kSide * cc];
#pragma unroll
      for (int r = 0; r < kSumNC; ++r) acc[r][cc] = fmaf(a[r], yv, acc[r][cc]);
    }
  }
  float* __restrict__ slot = states + blockIdx.x * (int64_t(F) * V + F);  // blockIdx.x = bh * chunks + c
#pragma unroll
  for (int r = 0; r < kSumNC; ++r) {
    const int f = f0 + ty + simt::kSide * r;
#pragma unroll
    for (int cc = 0; cc < kSumNC; ++cc) {
      const int v = v0 + tx + simt::kSide * cc;
      if (f < F && v < V) slot[int64_t(f) * V + v] = acc[r][cc];
    }
  }
  if (v0 == 0 && tid < kSumCols && f0 + tid < F) {
    float s = 0.f;
    for (int i = 0; i < rows; ++i) s = fmaf(sx[i * kSumLd + tid], sw[i], s);
    slot[int64_t(F) * V + f0 + tid] = s;
  }
}

// kSuffix = false: slot c <- sum of chunks < c; true: slot c <- sum of chunks >= c.
template <bool kSuffix>
__global__ void __launch_bounds__(simt::kThreads)
    chunk_scan_kernel(float* __restrict__ states, int64_t chunks, int64_t slot_elems, int64_t blocks_per_bh) {
  const int64_t bh = blockIdx.x / blocks_per_bh;
  const int64_t e = (blockIdx.x % blocks_per_bh) * simt::kThreads + threadIdx.x;
  if (e >= slot_elems) return;
  float* __restrict__ base = states + bh * chunks * slot_elems + e;
  float run = 0.f;
  if (kSuffix) {
    for (int64_t c = chunks - 1; c >= 0; --c) {
      run += base[c * slot_elems];
      base[c * slot_elems] = run;
    }
  } else {
    for (int64_t c = 0; c < chunks; ++c) {
      const float x = base[c * slot_elems];
      base[c * slot_elems] = run;
      run += x;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(simt::kThreads)
    dwf_reduce_kernel(const Params p, const float* __restrict__ dm_partial, int64_t tiles) {
  __shared__ float red[simt::kThreads];
  const int64_t h = blockIdx.x;
  const int64_t n = p.batch * tiles;
  float s = 0.f;
  for (int64_t e = threadIdx.x; e < n; e += simt::kThreads) {
    const int64_t b = e / tiles, t = e % tiles;
    s += dm_partial[(b * p.heads + h) * tiles + t];
  }
  red[threadIdx.x] = s;
  __syncthreads();
  for (int off = simt::kThreads / 2; off > 0; off /= 2) {
    if (static_cast<int>(threadIdx.x) < off) red[threadIdx.x] += red[threadIdx.x + off];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    // dgamma = sum_i sum_W de_ij e_ij / gamma = -sum_i dm_i / gamma; gamma' = gamma (1 - gamma).
    const float gamma = gamma_of<T>(p, h);
    static_cast<T*>(p.dwindow_factor)[h] = from_float<T>(-(1.f - gamma) * red[0]);
  }
}

// Launches chunk_sums then the scan. x = fk / fq (F columns), y = v / do (V columns).
template <typename T, bool kSuffix>
void launch_chunk_states(const Params& p, const RowOperand<T>& x, const RowOperand<T>& y, const float* div,
                         const float* wz, float* states, cudaStream_t stream) {
  const int64_t chunks = ceil_div(p.seqlen, kChunk);
  const int64_t bh = p.batch * p.heads;
  const int64_t slot = int64_t(x.cols) * y.cols + x.cols;
  if (chunks == 0 || bh == 0 || slot == 0) return;
  const int64_t col_blocks = ceil_div(x.cols, kSumCols) * ceil_div(y.cols > 0 ? y.cols : 1, kSumCols);
  chunk_sums_kernel<T><<<dim3(static_cast<unsigned>(bh * chunks), static_cast<unsigned>(col_blocks)),
                         simt::kThreads, 0, stream>>>(p, x, y, div, wz, states);
  LINATTN_CHECK_LAUNCH();
  const int64_t per_bh = ceil_div(slot, simt::kThreads);
  chunk_scan_kernel<kSuffix><<<static_cast<unsigned>(bh * per_bh), simt::kThreads, 0, stream>>>(states, chunks, slot,
                                                                                              per_bh);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace linattn::lolcats::gpu
