#pragma once
// Sliding-window attention backward on CUDA (fp32 SIMT, flash style). Probabilities are recomputed from the
// saved log-sum-exp, p_ij = exp(scale q_i.k_j - lse_i), and ds_ij = p_ij (do_i.v_j - delta_i) with
// delta_i = do_i . o_i. Three launches, no atomics (deterministic):
//  1. delta: one warp per (token, head);
//  2. dq: one CTA per (query tile, head) over the key tiles of its windows, dq_i = scale sum_j ds_ij k_j;
//  3. dk, dv: one CTA per (key tile, head) over the query tiles whose windows contain its keys (key j is
//     seen by queries j .. j+w-1): dv_j = sum_i p_ij do_i, dk_j = scale sum_i ds_ij q_i.
#include <cmath>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/swa/cuda/swa_common.cuh"

namespace linattn::swa::gpu {

// q, do, k, v tiles and the ds tile.
template <int kP>
constexpr int dq_smem_floats() {
  return 4 * simt::Tiles<kP>::kTile + simt::Tiles<kP>::kScore;
}

// k, v, q, do tiles, the p and ds tiles, lse and delta of the query tile.
template <int kP>
constexpr int dkdv_smem_floats() {
  return 4 * simt::Tiles<kP>::kTile + 2 * simt::Tiles<kP>::kScore + 2 * simt::Tiles<kP>::kRows;
}

template <typename T, int kP>
__global__ void __launch_bounds__(simt::kThreads) swa_bwd_dq_kernel(const Params p, const float* __restrict__ delta) {
  using Cfg = simt::Tiles<kP>;
  constexpr int R = Cfg::kRows, RM = Cfg::kRM, CN = Cfg::kCN, NC = Cfg::kNC, LD = Cfg::kLd, LDP = Cfg::kLdp;
  extern __shared__ float smem[];
  float* __restrict__ sq = smem;
  float* __restrict__ sdo = sq + Cfg::kTile;
  float* __restrict__ sk = sdo + Cfg::kTile;
  float* __restrict__ sv = sk + Cfg::kTile;
  float* __restrict__ sds = sv + Cfg::kTile;

  TileSpan t;
  if (!locate_tile(p, R, blockIdx.x, t)) return;
  const int64_t h = blockIdx.y, H = p.heads;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int rows = static_cast<int>(min(int64_t(R), t.len - t.r0));
  const int ty = simt::thread_row(), tx = simt::thread_col();
  const float scale = static_cast<float>(p.scale);
  const int64_t tok0 = t.bos + t.r0;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.qk_head_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride;

  simt::load_rows<T, kP>(sq, LD, static_cast<const T*>(p.q) + h * p.qk_head_stride + tok0 * p.qk_tok_stride,
                         p.qk_tok_stride, rows, K, R);
  simt::load_rows<T, kP>(sdo, LD, static_cast<const T*>(p.do_) + h * p.v_head_stride + tok0 * p.v_tok_stride,
                         p.v_tok_stride, rows, V, R, nullptr, static_cast<float>(p.do_scale));
  float lse[RM], dlt[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int i = ty + simt::kSide * r;
    lse[r] = i < rows ? static_cast<const float*>(p.lse)[(tok0 + i) * H + h] : 0.f;
    dlt[r] = i < rows ? delta[(tok0 + i) * H + h] : 0.f;
  }
  float acc[RM][NC];
  simt::zero(acc);

  const int64_t last = t.r0 + rows - 1;
  for (int64_t j0 = max(int64_t(0), t.r0 - p.window + 1); j0 <= last; j0 += R) {
    const int kr = static_cast<int>(min(int64_t(R), last - j0 + 1));
    simt::load_rows<T, kP>(sk, LD, kh + (t.bos + j0) * p.qk_tok_stride, p.qk_tok_stride, kr, K, R);
    simt::load_rows<T, kP>(sv, LD, vh + (t.bos + j0) * p.v_tok_stride, p.v_tok_stride, kr, V, R);
    __syncthreads();
    float s[RM][CN], dp[RM][CN];
    simt::zero(s);
    simt::zero(dp);
    simt::tile_dot(s, sq, sk, LD, K);
    simt::tile_dot(dp, sdo, sv, LD, V);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int64_t i = t.r0 + ty + simt::kSide * r;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        const int jj = tx + simt::kSide * c;
        const int64_t j = j0 + jj;
        const bool ok = jj < kr && j <= i && i - j < p.window && i <= last;
        const float pij = ok ? expf(__fmul_rn(s[r][c], scale) - lse[r]) : 0.f;
        s[r][c] = pij * (dp[r][c] - dlt[r]);
      }
    }
    simt::store_block(sds, LDP, s);
    __syncthreads();
    simt::tile_pv(acc, sds, LDP, sk, LD, kr);
    __syncthreads();
  }
  float mul[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) mul[r] = scale;
  simt::store_rows<T>(static_cast<T*>(p.dq) + h * p.qk_head_stride + tok0 * p.qk_tok_stride, p.qk_tok_stride, acc,
                      mul, rows, K);
}

template <typename T, int kP>
__global__ void __launch_bounds__(simt::kThreads)
    swa_bwd_dkdv_kernel(const Params p, const float* __restrict__ delta) {
  using Cfg = simt::Tiles<kP>;
  constexpr int R = Cfg::kRows, RM = Cfg::kRM, CN = Cfg::kCN, NC = Cfg::kNC, LD = Cfg::kLd, LDP = Cfg::kLdp;
  extern __shared__ float smem[];
  float* __restrict__ sk = smem;
  float* __restrict__ sv = sk + Cfg::kTile;
  float* __restrict__ sq = sv + Cfg::kTile;
  float* __restrict__ sdo = sq + Cfg::kTile;
  float* __restrict__ sp = sdo + Cfg::kTile;
  float* __restrict__ sds = sp + Cfg::kScore;
  float* __restrict__ slse = sds + Cfg::kScore;
  float* __restrict__ sdelta = slse + R;

  TileSpan t;  // here a tile of keys
  if (!locate_tile(p, R, blockIdx.x, t)) return;
  const int64_t h = blockIdx.y, H = p.heads;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kr = static_cast<int>(min(int64_t(R), t.len - t.r0));
  const int ty = simt::thread_row(), tx = simt::thread_col();
  const float scale = static_cast<float>(p.scale);
  const int64_t tok0 = t.bos + t.r0;
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.qk_head_stride;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride;
  const float* __restrict__ lse = static_cast<const float*>(p.lse);

  simt::load_rows<T, kP>(sk, LD, static_cast<const T*>(p.k) + h * p.qk_head_stride + tok0 * p.qk_tok_stride,
                         p.qk_tok_stride, kr, K, R);
  simt::load_rows<T, kP>(sv, LD, static_cast<const T*>(p.v) + h * p.v_head_stride + tok0 * p.v_tok_stride,
                         p.v_tok_stride, kr, V, R);
  float dk[RM][NC], dv[RM][NC];
  simt::zero(dk);
  simt::zero(dv);

  // Queries that see a key of this tile: r0 .. (r0 + kr - 1) + w - 1, within the sequence.
  const int64_t jlast = t.r0 + kr - 1;
  const int64_t qlast = p.window - 1 >= t.len - 1 - jlast ? t.len - 1 : jlast + p.window - 1;
  for (int64_t q0 = t.r0; q0 <= qlast; q0 += R) {
    const int qr = static_cast<int>(min(int64_t(R), qlast - q0 + 1));
    simt::load_rows<T, kP>(sq, LD, qh + (t.bos + q0) * p.qk_tok_stride, p.qk_tok_stride, qr, K, R);
    simt::load_rows<T, kP>(sdo, LD, doh + (t.bos + q0) * p.v_tok_stride, p.v_tok_stride, qr, V, R, nullptr,
                           static_cast<float>(p.do_scale));
    for (int e = threadIdx.x; e < R; e += simt::kThreads) {
      slse[e] = e < qr ? lse[(t.bos + q0 + e) * H + h] : 0.f;
      sdelta[e] = e < qr ? delta[(t.bos + q0 + e) * H + h] : 0.f;
    }
    __syncthreads();
    float s[RM][CN], dp[RM][CN];  // transposed: rows are keys, columns queries
    simt::key_tile_scores(s, dp, sk, sq, K, sv, sdo, V, LD);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int jj = ty + simt::kSide * r;
      const int64_t j = t.r0 + jj;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        const int ii = tx + simt::kSide * c;
        const int64_t i = q0 + ii;
        const bool ok = ii < qr && jj < kr && j <= i && i - j < p.window;
        const float pij = ok ? expf(__fmul_rn(s[r][c], scale) - slse[ii]) : 0.f;
        dp[r][c] = pij * (dp[r][c] - sdelta[ii]);
        s[r][c] = pij;
      }
    }
    simt::key_tile_accumulate(dk, dv, s, dp, sp, sds, LDP, sq, sdo, LD, qr);
  }
  float one[RM], mul[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    one[r] = 1.f;
    mul[r] = scale;
  }
  simt::store_rows<T>(static_cast<T*>(p.dk) + h * p.qk_head_stride + tok0 * p.qk_tok_stride, p.qk_tok_stride, dk,
                      mul, kr, K);
  simt::store_rows<T>(static_cast<T*>(p.dv) + h * p.v_head_stride + tok0 * p.v_tok_stride, p.v_tok_stride, dv, one,
                      kr, V);
}

template <typename T, int kP>
void launch_bwd(const Params& p, float* delta, cudaStream_t stream) {
  constexpr int R = simt::tile_rows_for(kP);
  const int64_t slots = num_tile_slots(p, R);
  if (slots == 0 || p.heads == 0) return;
  const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(p.heads));
  {
    const size_t smem = sizeof(float) * dq_smem_floats<kP>();
    auto kernel = swa_bwd_dq_kernel<T, kP>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, simt::kThreads, smem, stream>>>(p, delta);
    LINATTN_CHECK_LAUNCH();
  }
  {
    const size_t smem = sizeof(float) * dkdv_smem_floats<kP>();
    auto kernel = swa_bwd_dkdv_kernel<T, kP>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, simt::kThreads, smem, stream>>>(p, delta);
    LINATTN_CHECK_LAUNCH();
  }
}

template <DType D>
void backward(const Params& p, float* delta_ws, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  const int64_t rows = p.batch * p.seqlen * p.heads;
  if (rows == 0) return;
  // delta_i = do_scale do_i . o_i (o and do are contiguous [B*T, H, V]: row (token, head) at (token * H + head) * V).
  constexpr int kWarps = simt::kThreads / 32;
  simt::row_dot_kernel<T><<<static_cast<unsigned>(ceil_div(rows, kWarps)), simt::kThreads, 0, stream>>>(
      static_cast<const T*>(p.do_), static_cast<const T*>(p.o), nullptr, static_cast<float>(p.do_scale), rows,
      static_cast<int>(p.dim_v), delta_ws);
  LINATTN_CHECK_LAUNCH();
  simt::dispatch_width(p.dim_k > p.dim_v ? p.dim_k : p.dim_v,
                       [&](auto width) { launch_bwd<T, decltype(width)::value>(p, delta_ws, stream); });
}

}  // namespace linattn::swa::gpu
