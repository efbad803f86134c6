#pragma once
// Sliding-window attention forward on CUDA (fp32 SIMT, flash style). One CTA of 256 threads per (query tile of
// R rows, head): the tile's queries stay in shared memory while the CTA walks the key tiles that intersect
// the union of its windows, [r0 - w + 1, r0 + R - 1], keeping a running max m, a running sum l and the
// unnormalised output in registers (online softmax, fp32). Work O(T w (K + V)), no T x T scores; the CTA
// writes o = acc / l and lse = m + log l.
#include <cmath>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/swa/cuda/swa_common.cuh"

namespace linattn::swa::gpu {

// Shared memory of the forward, in floats: q, k, v tiles and the probability tile.
template <int kP>
constexpr int fwd_smem_floats() {
  return 3 * simt::Tiles<kP>::kTile + simt::Tiles<kP>::kScore;
}

template <typename T, int kP>
__global__ void __launch_bounds__(simt::kThreads) swa_fwd_kernel(const Params p) {
  using Cfg = simt::Tiles<kP>;
  constexpr int R = Cfg::kRows, RM = Cfg::kRM, CN = Cfg::kCN, NC = Cfg::kNC, LD = Cfg::kLd, LDP = Cfg::kLdp;
  extern __shared__ float smem[];
  float* __restrict__ sq = smem;
  float* __restrict__ sk = sq + Cfg::kTile;
  float* __restrict__ sv = sk + Cfg::kTile;
  float* __restrict__ sp = sv + Cfg::kTile;

  TileSpan t;
  if (!locate_tile(p, R, blockIdx.x, t)) return;  // uniform over the CTA
  const int64_t h = blockIdx.y;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int rows = static_cast<int>(min(int64_t(R), t.len - t.r0));
  const int ty = simt::thread_row(), tx = simt::thread_col();
  const float scale = static_cast<float>(p.scale);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.qk_head_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.qk_head_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride;

  simt::load_rows<T, kP>(sq, LD, qh + (t.bos + t.r0) * p.qk_tok_stride, p.qk_tok_stride, rows, K, R);

  float m[RM], l[RM], acc[RM][NC];
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;  // this thread's columns only; the row total is reduced at the end
  }
  simt::zero(acc);

  const int64_t last = t.r0 + rows - 1;  // last query row of the tile (< len)
  for (int64_t j0 = max(int64_t(0), t.r0 - p.window + 1); j0 <= last; j0 += R) {
    const int kr = static_cast<int>(min(int64_t(R), last - j0 + 1));
    simt::load_rows<T, kP>(sk, LD, kh + (t.bos + j0) * p.qk_tok_stride, p.qk_tok_stride, kr, K, R);
    simt::load_rows<T, kP>(sv, LD, vh + (t.bos + j0) * p.v_tok_stride, p.v_tok_stride, kr, V, R);
    __syncthreads();

    float s[RM][CN];
    simt::zero(s);
    simt::tile_dot(s, sq, sk, LD, K);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int64_t i = t.r0 + ty + simt::kSide * r;
      float tile_max = -INFINITY;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        const int jj = tx + simt::kSide * c;
        const int64_t j = j0 + jj;
        const bool ok = jj < kr && j <= i && i - j < p.window && i <= last;
        s[r][c] = ok ? __fmul_rn(s[r][c], scale) : -INFINITY;
        tile_max = fmaxf(tile_max, s[r][c]);
      }
      const float m_new = fmaxf(m[r], simt::row_max16(tile_max));
      // A row with no key yet keeps m = -inf; exponents are then taken against 0 and give 0.
      const float base = m_new == -INFINITY ? 0.f : m_new;
      const float alpha = expf(m[r] - base);
      m[r] = m_new;
      float psum = 0.f;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        s[r][c] = expf(s[r][c] - base);
        psum += s[r][c];
      }
      l[r] = l[r] * alpha + psum;
#pragma unroll
      for (int c = 0; c < NC; ++c) acc[r][c] *= alpha;
    }
    simt::store_block(sp, LDP, s);
    __syncthreads();
    simt::tile_pv(acc, sp, LDP, sv, LD, kr);
    __syncthreads();  // k, v and p are overwritten by the next key tile
  }

  float inv[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const float total = simt::row_sum16(l[r]);
    inv[r] = 1.f / total;
    const int i = ty + simt::kSide * r;
    if (tx == 0 && i < rows) static_cast<float*>(p.lse)[(t.bos + t.r0 + i) * p.heads + h] = m[r] + logf(total);
  }
  T* __restrict__ oh = static_cast<T*>(p.o) + h * p.v_head_stride + (t.bos + t.r0) * p.v_tok_stride;
  simt::store_rows<T>(oh, p.v_tok_stride, acc, inv, rows, V);
}

template <typename T, int kP>
void launch_fwd(const Params& p, cudaStream_t stream) {
  constexpr int R = simt::tile_rows_for(kP);
  const int64_t slots = num_tile_slots(p, R);
  if (slots == 0 || p.heads == 0) return;
  const size_t smem = sizeof(float) * fwd_smem_floats<kP>();
  auto kernel = swa_fwd_kernel<T, kP>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  kernel<<<dim3(static_cast<unsigned>(slots), static_cast<unsigned>(p.heads)), simt::kThreads, smem, stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void forward(const Params& p, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  simt::dispatch_width(p.dim_k > p.dim_v ? p.dim_k : p.dim_v,
                       [&](auto width) { launch_fwd<T, decltype(width)::value>(p, stream); });
}

}  // namespace linattn::swa::gpu
