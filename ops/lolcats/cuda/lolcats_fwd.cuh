#pragma once
// LoLCATs hybrid attention forward on CUDA (fp32 SIMT). Launches:
//  1. chunk sums of (fk v^T, fk) per chunk of 64 tokens and their exclusive prefix over chunks (workspace
//     [B*H, chunks, F*V + F]);
//  2. one CTA per (query tile, head, batch row):
//     a. m_i = max of the scaled scores over the window (a pass over the window's key tiles);
//     b. one pass over the key tiles cb*64 .. last row: window keys get gamma e^{s_ij - m_i}, keys with
//        j <= i - w (inside the tile's explicit range) get fq_i . fk_j; both go through one weight tile into
//        num_i = sum_j weight_ij v_j and z_i = sum_j weight_ij;
//     c. the keys before chunk cb through the prefix sums: num_i += fq_i^T S_cb, z_i += fq_i . s_cb;
//     o_i = num_i / z_i; m_i and z_i are saved for the backward.
// The exact max (pass a) keeps a single fp32 accumulator (no online rescaling of a linear term that has no
// e^{-m} factor) and gives the backward bitwise the same scores and maxima (ties).
#include <cmath>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/lolcats/cuda/lolcats_common.cuh"
#include "ops/lolcats/cuda/lolcats_state.cuh"

namespace linattn::lolcats::gpu {

// q, fq, k-or-fk (one buffer, reloaded), v tiles and the weight tile.
template <int kP>
constexpr int fwd_smem_floats() {
  return 4 * simt::Tiles<kP>::kTile + simt::Tiles<kP>::kScore;
}

template <typename T, int kP>
__global__ void __launch_bounds__(simt::kThreads)
    lolcats_fwd_kernel(const Params p, const float* __restrict__ states) {
  using Cfg = simt::Tiles<kP>;
  constexpr int R = Cfg::kRows, RM = Cfg::kRM, CN = Cfg::kCN, NC = Cfg::kNC, LD = Cfg::kLd, LDP = Cfg::kLdp;
  extern __shared__ float smem[];
  float* __restrict__ sq = smem;
  float* __restrict__ sfq = sq + Cfg::kTile;
  float* __restrict__ skf = sfq + Cfg::kTile;  // k for the window scores, fk for the linear ones, S chunks
  float* __restrict__ sv = skf + Cfg::kTile;
  float* __restrict__ sw = sv + Cfg::kTile;

  const RowTile t = row_tile(p, R);
  const int64_t H = p.heads, w = p.window;
  const int D = static_cast<int>(p.dim_qk), V = static_cast<int>(p.dim_v), F = static_cast<int>(p.dim_f);
  const int ty = simt::thread_row(), tx = simt::thread_col();
  const float scale = static_cast<float>(p.scale);
  const float gamma = gamma_of<T>(p, t.h);
  const int64_t kbase = t.b * p.seqlen;  // token of position 0 of this batch row
  const T* __restrict__ kh = static_cast<const T*>(p.k) + t.h * p.qk_head_stride + kbase * p.qk_tok_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + t.h * p.v_head_stride + kbase * p.v_tok_stride;
  const T* __restrict__ fkh = static_cast<const T*>(p.fk) + t.h * p.f_head_stride + kbase * p.f_tok_stride;

  simt::load_rows<T, kP>(sq, LD, static_cast<const T*>(p.q) + t.h * p.qk_head_stride + t.tok0 * p.qk_tok_stride,
                         p.qk_tok_stride, t.rows, D, R);
  simt::load_rows<T, kP>(sfq, LD, static_cast<const T*>(p.fq) + t.h * p.f_head_stride + t.tok0 * p.f_tok_stride,
                         p.f_tok_stride, t.rows, F, R);

  const int64_t last = t.r0 + t.rows - 1;
  const int64_t wbeg = max(int64_t(0), t.r0 - w + 1);

  // a. window max
  float m[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) m[r] = -INFINITY;
  for (int64_t j0 = wbeg; j0 <= last; j0 += R) {
    const int kr = static_cast<int>(min(int64_t(R), last - j0 + 1));
    simt::load_rows<T, kP, kLoadBatch>(skf, LD, kh + j0 * p.qk_tok_stride, p.qk_tok_stride, kr, D, R);
    __syncthreads();
    float s[RM][CN];
    simt::zero(s);
    simt::tile_dot(s, sq, skf, LD, D);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int64_t i = t.r0 + ty + simt::kSide * r;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        const int jj = tx + simt::kSide * c;
        const int64_t j = j0 + jj;
        if (jj < kr && j <= i && i - j < w && i <= last) m[r] = fmaxf(m[r], __fmul_rn(s[r][c], scale));
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < RM; ++r) m[r] = simt::row_max16(m[r]);

  // b. weights of the window keys and of the explicit linear keys
  const int64_t cb = linear_base_chunk(t.r0, w);
  float acc[RM][NC], den[RM];
  simt::zero(acc);
#pragma unroll
  for (int r = 0; r < RM; ++r) den[r] = 0.f;
  for (int64_t j0 = cb * kChunk; j0 <= last; j0 += R) {
    const int kr = static_cast<int>(min(int64_t(R), last - j0 + 1));
    const bool need_win = j0 + kr - 1 >= wbeg;  // some key of the tile is in some row's window
    const bool need_lin = j0 <= last - w;       // some key of the tile has left the last row's window
    simt::load_rows<T, kP, kLoadBatch>(sv, LD, vh + j0 * p.v_tok_stride, p.v_tok_stride, kr, V, R);
    float wt[RM][CN];
    simt::zero(wt);
    if (need_win) {
      simt::load_rows<T, kP, kLoadBatch>(skf, LD, kh + j0 * p.qk_tok_stride, p.qk_tok_stride, kr, D, R);
      __syncthreads();
      float s[RM][CN];
      simt::zero(s);
      simt::tile_dot(s, sq, skf, LD, D);
#pragma unroll
      for (int r = 0; r < RM; ++r) {
        const int64_t i = t.r0 + ty + simt::kSide * r;
#pragma unroll
        for (int c = 0; c < CN; ++c) {
          const int jj = tx + simt::kSide * c;
          const int64_t j = j0 + jj;
          if (jj < kr && j <= i && i - j < w && i <= last) wt[r][c] = gamma * expf(__fmul_rn(s[r][c], scale) - m[r]);
        }
      }
      __syncthreads();  // skf is reloaded with fk next
    }
    if (need_lin) {
      simt::load_rows<T, kP, kLoadBatch>(skf, LD, fkh + j0 * p.f_tok_stride, p.f_tok_stride, kr, F, R);
      __syncthreads();
      float a[RM][CN];
      simt::zero(a);
      simt::tile_dot(a, sfq, skf, LD, F);
#pragma unroll
      for (int r = 0; r < RM; ++r) {
        const int64_t i = t.r0 + ty + simt::kSide * r;
#pragma unroll
        for (int c = 0; c < CN; ++c) {
          const int jj = tx + simt::kSide * c;
          if (jj < kr && i - (j0 + jj) >= w && i <= last) wt[r][c] += a[r][c];
        }
      }
    }
#pragma unroll
    for (int r = 0; r < RM; ++r)
#pragma unroll
      for (int c = 0; c < CN; ++c) den[r] += wt[r][c];
    simt::store_block(sw, LDP, wt);
    __syncthreads();
    simt::tile_pv(acc, sw, LDP, sv, LD, kr);
    __syncthreads();
  }

  // c. keys before chunk cb: prefix sums (S [F x V] row-major, then s [F])
  if (cb > 0) {
    const float* __restrict__ st = state_slot(p, states, t.b, t.h, cb);
    for (int f0 = 0; f0 < F; f0 += R) {
      const int fr = min(R, F - f0);
      simt::load_matrix_rows<kP, kLoadBatch>(skf, LD, st, V, f0, fr, V, R);
      __syncthreads();
      simt::tile_pv(acc, sfq + f0, LD, skf, LD, fr);
      __syncthreads();
    }
    const float* __restrict__ zs = st + int64_t(F) * V;
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int i = ty + simt::kSide * r;
      for (int f = tx; f < F; f += simt::kSide) den[r] = fmaf(sfq[i * LD + f], zs[f], den[r]);
    }
  }

  float inv[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const float z = simt::row_sum16(den[r]);
    inv[r] = 1.f / z;
    const int i = ty + simt::kSide * r;
    if (tx == 0 && i < t.rows) {
      p.m[(t.tok0 + i) * H + t.h] = m[r];
      p.z[(t.tok0 + i) * H + t.h] = z;
    }
  }
  simt::store_rows<T>(static_cast<T*>(p.o) + t.h * p.v_head_stride + t.tok0 * p.v_tok_stride, p.v_tok_stride, acc,
                      inv, t.rows, V);
}

template <typename T, int kP>
void launch_fwd(const Params& p, const float* states, cudaStream_t stream) {
  constexpr int R = simt::tile_rows_for(kP);
  const size_t smem = sizeof(float) * fwd_smem_floats<kP>();
  auto kernel = lolcats_fwd_kernel<T, kP>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(ceil_div(p.seqlen, R)), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, simt::kThreads, smem, stream>>>(p, states);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void forward(const Params& p, float* states_ws, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  if (p.batch * p.seqlen * p.heads == 0) return;
  // Row-major operands of the chunk sums: fk (F columns) and v (V columns).
  const RowOperand<T> x{static_cast<const T*>(p.fk), p.f_tok_stride, p.f_head_stride, static_cast<int>(p.dim_f)};
  const RowOperand<T> y{static_cast<const T*>(p.v), p.v_tok_stride, p.v_head_stride, static_cast<int>(p.dim_v)};
  launch_chunk_states<T, false>(p, x, y, nullptr, nullptr, states_ws, stream);
  // tile_width is already a bucket; dispatch_width buckets it again, which changes nothing.
  simt::dispatch_width(tile_width(p),
                       [&](auto width) { launch_fwd<T, decltype(width)::value>(p, states_ws, stream); });
}

}  // namespace linattn::lolcats::gpu
