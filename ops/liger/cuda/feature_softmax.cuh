#pragma once
// Liger's feature maps q~ = softmax_D(q), k~ = softmax_D(k) and their backward dx = y (dy - <dy, y>), each pair
// in one launch over the 2 * rows rows of both tensors. One warp per row: D <= 256 values sit in registers
// (8 per lane, read and written coalesced), the max and the sums are warp shuffles in fp32, so every input
// element is read once and every output written once. A grid-stride loop with int64 row indices covers any
// B*T*H.
//
// Why not inside the GLA kernels' loads: the tensor-core GLA kernels load q and k in 64-column slabs (and the
// backward splits K across CTAs), so a row's softmax would need its own pass over the whole row first in every
// CTA that reads it, and its backward needs <dq~, q~> over all of K after the GLA backward has finished dq~.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/type_utils.cuh"
#include "ops/liger/cuda/liger_launch.h"

namespace linattn::liger::gpu {

using cuda_utils::ceil_div;
using cuda_utils::StorageOf;
using cuda_utils::from_float;
using cuda_utils::to_float;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPerLane = static_cast<int>(kMaxFeatureDim / 32);
constexpr int64_t kMaxBlocks = 65535;  // enough to fill any GPU; the loop takes the rest

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_pair_kernel(const SoftmaxPairParams p) {
  const int lane = threadIdx.x % 32, D = static_cast<int>(p.dim);
  const int64_t total = 2 * p.rows, step = int64_t(gridDim.x) * kWarps;
  // The loop bound is the same for the 32 lanes of a warp, so every lane reaches every shuffle.
  for (int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; row < total; row += step) {
    // Selects rather than indexes the pointer pairs: a runtime index into a kernel parameter array puts a copy
    // of it on the stack.
    const bool second = row >= p.rows;
    const int64_t off = (second ? row - p.rows : row) * p.dim;
    const T* __restrict__ x = static_cast<const T*>(second ? p.x[1] : p.x[0]) + off;
    T* __restrict__ y = static_cast<T*>(second ? p.y[1] : p.y[0]) + off;
    float v[kPerLane];
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      v[i] = c < D ? to_float(x[c]) : -INFINITY;
      m = fmaxf(m, v[i]);
    }
    m = warp_max(m);
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      v[i] = lane + 32 * i < D ? expf(v[i] - m) : 0.f;
      s += v[i];
    }
    const float inv = 1.f / warp_sum(s);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c < D) y[c] = from_float<T>(v[i] * inv);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_pair_bwd_kernel(const SoftmaxPairBwdParams p) {
  const int lane = threadIdx.x % 32, D = static_cast<int>(p.dim);
  const int64_t total = 2 * p.rows, step = int64_t(gridDim.x) * kWarps;
  for (int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; row < total; row += step) {
    const bool second = row >= p.rows;
    const int64_t off = (second ? row - p.rows : row) * p.dim;
    const T* __restrict__ y = static_cast<const T*>(second ? p.y[1] : p.y[0]) + off;
    const T* __restrict__ dy = static_cast<const T*>(second ? p.dy[1] : p.dy[0]) + off;
    T* __restrict__ dx = static_cast<T*>(second ? p.dx[1] : p.dx[0]) + off;
    float yv[kPerLane], gv[kPerLane];
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      yv[i] = c < D ? to_float(y[c]) : 0.f;
      gv[i] = c < D ? to_float(dy[c]) : 0.f;
      dot = fmaf(yv[i], gv[i], dot);
    }
    dot = warp_sum(dot);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c < D) dx[c] = from_float<T>(yv[i] * (gv[i] - dot));
    }
  }
}

inline unsigned pair_blocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(2 * rows, kWarps), kMaxBlocks));
}

template <DType D>
void feature_softmax_forward(const SoftmaxPairParams& p, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  if (p.rows == 0) return;
  softmax_pair_kernel<T><<<pair_blocks(p.rows), kThreads, 0, stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void feature_softmax_backward(const SoftmaxPairBwdParams& p, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  if (p.rows == 0) return;
  softmax_pair_bwd_kernel<T><<<pair_blocks(p.rows), kThreads, 0, stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace linattn::liger::gpu
