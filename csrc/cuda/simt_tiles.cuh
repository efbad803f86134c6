#pragma once
// Torch-free SIMT (CUDA-core, fp32) tile building blocks for the attention-style kernels (sliding-window and
// LoLCATs): 256 threads seen as a 16 x 16 grid (ty = tid / 16, tx = tid % 16). A thread owns rows
// ty + 16 r and columns tx + 16 c of every [rows x cols] result, so
//   * the 16 threads of one row group are 16 consecutive lanes of a warp: row reductions are 4 shuffles;
//   * a warp reads 2 distinct rows of a row-major operand (broadcasts) and 16 consecutive rows (scores) or
//     16 consecutive columns (products) of the other: with an odd leading dimension both are conflict-free.
// Tiles live in shared memory as fp32 [rows x ld] with ld = width + 1 (odd for power-of-two widths) and are
// zero-padded, so padded rows and columns add nothing to dot products.
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "csrc/cuda/batched_copy.cuh"
#include "csrc/cuda/tile_shape.h"
#include "csrc/cuda/type_utils.cuh"

namespace linattn::cuda_utils::simt {

constexpr int kThreads = 256;  // threads per CTA
constexpr int kSide = 16;      // the CTA is a kSide x kSide thread grid

__device__ __forceinline__ int thread_row() { return static_cast<int>(threadIdx.x) / kSide; }
__device__ __forceinline__ int thread_col() { return static_cast<int>(threadIdx.x) % kSide; }

template <int kWidth>
struct Tiles {
  static constexpr int kRows = tile_rows_for(kWidth);  // rows of query and key tiles
  static constexpr int kRM = kRows / kSide;            // tile rows per thread
  static constexpr int kCN = kRows / kSide;            // score columns per thread
  static constexpr int kNC = kWidth / kSide;           // feature columns per thread
  static constexpr int kLd = kWidth + 1;               // leading dim of [kRows x kWidth] feature tiles
  static constexpr int kLdp = kRows + 1;               // leading dim of [kRows x kRows] score tiles
  static constexpr int kTile = kRows * kLd;            // floats per feature tile
  static constexpr int kScore = kRows * kLdp;          // floats per score tile
  static_assert(kWidth % kSide == 0 && kRows % kSide == 0, "tiles are multiples of the 16 x 16 thread grid");
};

// Sum / max over the 16 lanes that share a thread row (every lane of the warp must call).
__device__ __forceinline__ float row_sum16(float x) {
#pragma unroll
  for (int off = kSide / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}
__device__ __forceinline__ float row_max16(float x) {
#pragma unroll
  for (int off = kSide / 2; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}

// The tile loads below take kBatch, the global loads a thread keeps in flight (batched_copy): loads inside a
// loop over key / query tiles want several (a plain loop pays one memory latency per element it stores);
// kBatch = 1 is the plain loop (nvcc 13 gives the same SASS as before batched_copy), kept for one-off loads and
// for callers not yet measured with more.

// dst[i * ld + d] = src[i * tok_stride + d] * mul * (row_mul ? row_mul[i] : 1) for i < rows, d < cols; 0
// elsewhere in [total_rows x kWidth]. mul is a do_scale (1, compiled out, for every other tile). All threads;
// the caller synchronises afterwards.
template <typename T, int kWidth, int kBatch = 1>
__device__ __forceinline__ void load_rows(float* __restrict__ dst, int ld, const T* __restrict__ src,
                                          int64_t tok_stride, int rows, int cols, int total_rows,
                                          const float* __restrict__ row_mul = nullptr, float mul = 1.f) {
  batched_copy<kThreads, kBatch>(
      total_rows * kWidth,
      [&](int e) {
        const int i = e / kWidth, d = e % kWidth;
        return (i < rows && d < cols) ? to_float(src[int64_t(i) * tok_stride + d]) * mul : 0.f;
      },
      [&](int e, float x) {
        const int i = e / kWidth, d = e % kWidth;
        // Padding stays an exact 0 whatever row_mul holds there.
        if (row_mul != nullptr && i < rows && d < cols) x *= row_mul[i];
        dst[i * ld + d] = x;
      });
}

// Rows r0 .. r0 + rows - 1 of a row-major fp32 matrix S [*, ldS] (columns < cols) into dst [total_rows x
// kWidth], zero-padded. All threads; the caller synchronises afterwards.
template <int kWidth, int kBatch = 1>
__device__ __forceinline__ void load_matrix_rows(float* __restrict__ dst, int ld, const float* __restrict__ S,
                                                 int64_t ldS, int64_t r0, int rows, int cols, int total_rows) {
  batched_copy<kThreads, kBatch>(
      total_rows * kWidth,
      [&](int e) {
        const int i = e / kWidth, d = e % kWidth;
        return (i < rows && d < cols) ? S[(r0 + i) * ldS + d] : 0.f;
      },
      [&](int e, float x) { dst[(e / kWidth) * ld + e % kWidth] = x; });
}

// Transposed: dst[i][d] = S[d][c0 + i] for i < rows (columns of S), d < cols (rows of S); zero-padded to
// [total_rows x kWidth]. Consecutive threads read consecutive columns of S (coalesced) and write one column
// of dst (odd ld: conflict-free).
template <int kWidth, int kBatch = 1>
__device__ __forceinline__ void load_matrix_cols(float* __restrict__ dst, int ld, const float* __restrict__ S,
                                                 int64_t ldS, int64_t c0, int rows, int cols, int total_rows) {
  batched_copy<kThreads, kBatch>(
      total_rows * kWidth,
      [&](int e) {
        const int d = e / total_rows, i = e % total_rows;
        return (i < rows && d < cols) ? S[int64_t(d) * ldS + c0 + i] : 0.f;
      },
      [&](int e, float x) { dst[(e % total_rows) * ld + e / total_rows] = x; });
}

// acc[r][c] += sum_{d < depth} A[(ty + 16 r) * ld + d] * B[(tx + 16 c) * ld + d]: a [16 RM x 16 CN] block of
// A B^T. The per-element sum is one fma chain in d order, so every kernel that recomputes a score from the
// same operands gets the same bits (the LoLCATs backward relies on it to find the tied window maxima).
template <int RM, int CN>
__device__ __forceinline__ void tile_dot(float (&acc)[RM][CN], const float* __restrict__ A,
                                         const float* __restrict__ B, int ld, int depth) {
  const int ty = thread_row(), tx = thread_col();
  for (int d = 0; d < depth; ++d) {
    float a[RM], b[CN];
#pragma unroll
    for (int r = 0; r < RM; ++r) a[r] = A[(ty + kSide * r) * ld + d];
#pragma unroll
    for (int c = 0; c < CN; ++c) b[c] = B[(tx + kSide * c) * ld + d];
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
      for (int c = 0; c < CN; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
  }
}

// acc[r][c] += sum_{j < nrows} P[(ty + 16 r) * ldp + j] * X[j * ldx + tx + 16 c]: rows of P times a
// row-major operand X (values, keys, states), for the NC * 16 columns a thread owns.
template <int RM, int NC>
__device__ __forceinline__ void tile_pv(float (&acc)[RM][NC], const float* __restrict__ P, int ldp,
                                        const float* __restrict__ X, int ldx, int nrows) {
  const int ty = thread_row(), tx = thread_col();
  for (int j = 0; j < nrows; ++j) {
    float p[RM];
#pragma unroll
    for (int r = 0; r < RM; ++r) p[r] = P[(ty + kSide * r) * ldp + j];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const float x = X[j * ldx + tx + kSide * c];
#pragma unroll
      for (int r = 0; r < RM; ++r) acc[r][c] = fmaf(p[r], x, acc[r][c]);
    }
  }
}

// Writes a thread's [RM x CN] block into a row-major tile (row ty + 16 r, column tx + 16 c).
template <int RM, int CN>
__device__ __forceinline__ void store_block(float* __restrict__ dst, int ld, const float (&x)[RM][CN]) {
  const int ty = thread_row(), tx = thread_col();
#pragma unroll
  for (int r = 0; r < RM; ++r)
#pragma unroll
    for (int c = 0; c < CN; ++c) dst[(ty + kSide * r) * ld + tx + kSide * c] = x[r][c];
}

template <int RM, int NC>
__device__ __forceinline__ void zero(float (&x)[RM][NC]) {
#pragma unroll
  for (int r = 0; r < RM; ++r)
#pragma unroll
    for (int c = 0; c < NC; ++c) x[r][c] = 0.f;
}

// Stores rows i < rows, columns d < cols of mul * acc into a token-major output (row i at i * tok_stride).
template <typename T, int RM, int NC>
__device__ __forceinline__ void store_rows(T* __restrict__ dst, int64_t tok_stride, const float (&acc)[RM][NC],
                                           const float (&mul)[RM], int rows, int cols) {
  const int ty = thread_row(), tx = thread_col();
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int i = ty + kSide * r;
    if (i >= rows) continue;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = tx + kSide * c;
      if (d < cols) dst[int64_t(i) * tok_stride + d] = from_float<T>(mul[r] * acc[r][c]);
    }
  }
}

// The key side of a windowed attention backward (sliding-window dk / dv, LoLCATs' window dk / dv), one
// (key tile, query tile) step in two halves around the caller's own weight formula. First the transposed
// scores s = K Q^T and dp = V dO^T (rows are keys, columns queries), after the caller's barrier.
template <int RM, int CN>
__device__ __forceinline__ void key_tile_scores(float (&s)[RM][CN], float (&dp)[RM][CN], const float* __restrict__ sk,
                                                const float* __restrict__ sq, int dim_k, const float* __restrict__ sv,
                                                const float* __restrict__ sdo, int dim_v, int ld) {
  zero(s);
  zero(dp);
  tile_dot(s, sk, sq, ld, dim_k);
  tile_dot(dp, sv, sdo, ld, dim_v);
}

// Then, with s turned into the weight tile and dp into the score gradient: dv += s dO, dk += dp Q over the qr
// queries, through the [rows x ldp] scratch tiles sp and sds. Ends synchronised: the query tiles may be reloaded.
template <int RM, int CN, int NC>
__device__ __forceinline__ void key_tile_accumulate(float (&dk)[RM][NC], float (&dv)[RM][NC], const float (&s)[RM][CN],
                                                    const float (&dp)[RM][CN], float* __restrict__ sp,
                                                    float* __restrict__ sds, int ldp, const float* __restrict__ sq,
                                                    const float* __restrict__ sdo, int ld, int qr) {
  store_block(sp, ldp, s);
  store_block(sds, ldp, dp);
  __syncthreads();
  tile_pv(dv, sp, ldp, sdo, ld, qr);
  tile_pv(dk, sds, ldp, sq, ld, qr);
  __syncthreads();
}

// out[row] = coef * sum_c a[row, c] b[row, c] / (div ? div[row] : 1) for rows of `cols` contiguous elements
// (token-major [B*T, H, cols] tensors read as B*T*H rows): do . o for the attention backward. One warp per
// row, fp32 accumulation. A template so that headers included by several translation units link.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    row_dot_kernel(const T* __restrict__ a, const T* __restrict__ b, const float* __restrict__ div, float coef,
                   int64_t rows, int cols, float* __restrict__ out) {
  const int64_t row = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps leave together
  const T* __restrict__ ar = a + row * cols;
  const T* __restrict__ br = b + row * cols;
  float s = 0.f;
  for (int c = lane; c < cols; c += 32) s = fmaf(to_float(ar[c]), to_float(br[c]), s);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) out[row] = coef * s / (div != nullptr ? div[row] : 1.f);
}

// Host: launch(std::integral_constant<int, kP>{}) with kP = width_bucket(dim), the padded width the SIMT
// kernels are instantiated at. The one switch from a runtime width to that template argument, so every
// family instantiates the same four widths.
template <typename Launch>
inline void dispatch_width(int64_t dim, Launch&& launch) {
  switch (width_bucket(dim)) {
    case 32:
      launch(std::integral_constant<int, 32>{});
      break;
    case 64:
      launch(std::integral_constant<int, 64>{});
      break;
    case 128:
      launch(std::integral_constant<int, 128>{});
      break;
    default:
      launch(std::integral_constant<int, 256>{});
      break;
  }
}

}  // namespace linattn::cuda_utils::simt
