#pragma once
// LoLCATs backward on CUDA, window part (fp32 SIMT; runs after backward_linear, which writes dZ and the
// linear part of dv). Window weights e_ij = gamma e^{s_ij - m_i} with s_ij = scale q_i . k_j, and
//   de_ij = dN_i . v_j + dZ_i,  dv_j += sum_i e_ij dN_i,  ds_ij = de_ij e_ij,  dm_i = -sum_j ds_ij,
// and m_i = max_j s_ij passes dm_i to the maximal scores, split evenly among ties as autograd through amax:
// ds_ij += dm_i / ties_i where s_ij == m_i. Scores are recomputed with the forward's fma chain, so the
// comparison with the saved m_i finds exactly the forward's maxima. Launches:
//  1. per query tile: dq_i = scale (sum_j ds_ij k_j + dm_i / ties_i sum_{tied j} k_j), writing
//     g_i = dm_i / ties_i and the tile's sum of dm_i (for dwindow_factor);
//  2. per key tile over the query tiles whose windows contain it: dk_j = scale sum_i ds_ij q_i (ties
//     included through g_i), dv_j = sum_i e_ij dN_i + the linear part;
//  3. dwindow_factor_h = -(1 - gamma_h) sum dm (dgamma = sum de e / gamma = -sum dm / gamma).
#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/lolcats/cuda/lolcats_common.cuh"
#include "ops/lolcats/cuda/lolcats_state.cuh"

namespace linattn::lolcats::gpu {

// q, dN, k, v tiles, the ds and tie tiles, 1/z and the per-row dm of the query tile.
template <int kP>
constexpr int win_q_smem_floats() {
  return 4 * simt::Tiles<kP>::kTile + 2 * simt::Tiles<kP>::kScore + 2 * simt::Tiles<kP>::kRows;
}

// k, v (keys), q, dN (queries) tiles, the e and ds tiles, 1/z, m, dZ and g of the query tile.
template <int kP>
constexpr int win_k_smem_floats() {
  return 4 * simt::Tiles<kP>::kTile + 2 * simt::Tiles<kP>::kScore + 4 * simt::Tiles<kP>::kRows;
}

template <typename T, int kP>
__global__ void __launch_bounds__(simt::kThreads)
    lolcats_bwd_win_q_kernel(const Params p, BwdWorkspace ws) {
  using Cfg = simt::Tiles<kP>;
  constexpr int R = Cfg::kRows, RM = Cfg::kRM, CN = Cfg::kCN, NC = Cfg::kNC, LD = Cfg::kLd, LDP = Cfg::kLdp;
  extern __shared__ float smem[];
  float* __restrict__ sq = smem;
  float* __restrict__ sdn = sq + Cfg::kTile;
  float* __restrict__ sk = sdn + Cfg::kTile;
  float* __restrict__ sv = sk + Cfg::kTile;
  float* __restrict__ sds = sv + Cfg::kTile;
  float* __restrict__ stie = sds + Cfg::kScore;
  float* __restrict__ sinvz = stie + Cfg::kScore;
  float* __restrict__ sdm = sinvz + R;

  const RowTile t = row_tile(p, R);
  const int64_t H = p.heads, w = p.window;
  const int D = static_cast<int>(p.dim_qk), V = static_cast<int>(p.dim_v);
  const int ty = simt::thread_row(), tx = simt::thread_col();
  const float scale = static_cast<float>(p.scale);
  const float gamma = gamma_of<T>(p, t.h);
  const int64_t kbase = t.b * p.seqlen;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + t.h * p.qk_head_stride + kbase * p.qk_tok_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + t.h * p.v_head_stride + kbase * p.v_tok_stride;

  for (int i = threadIdx.x; i < R; i += simt::kThreads) sinvz[i] = i < t.rows ? 1.f / p.z[(t.tok0 + i) * H + t.h] : 0.f;
  __syncthreads();
  simt::load_rows<T, kP>(sq, LD, static_cast<const T*>(p.q) + t.h * p.qk_head_stride + t.tok0 * p.qk_tok_stride,
                         p.qk_tok_stride, t.rows, D, R);
  simt::load_rows<T, kP>(sdn, LD, static_cast<const T*>(p.do_) + t.h * p.v_head_stride + t.tok0 * p.v_tok_stride,
                         p.v_tok_stride, t.rows, V, R, sinvz);
  float m[RM], dz[RM], dm[RM], ties[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int i = ty + simt::kSide * r;
    const int64_t row = (t.tok0 + i) * H + t.h;
    m[r] = i < t.rows ? p.m[row] : 0.f;
    dz[r] = i < t.rows ? ws.dz[row] : 0.f;
    dm[r] = 0.f;
    ties[r] = 0.f;
  }
  float dq[RM][NC], tk[RM][NC];  // sum_j ds_ij k_j and the sum of the tied keys
  simt::zero(dq);
  simt::zero(tk);

  const int64_t last = t.r0 + t.rows - 1;
  for (int64_t j0 = max(int64_t(0), t.r0 - w + 1); j0 <= last; j0 += R) {
    const int kr = static_cast<int>(min(int64_t(R), last - j0 + 1));
    simt::load_rows<T, kP, kLoadBatch>(sk, LD, kh + j0 * p.qk_tok_stride, p.qk_tok_stride, kr, D, R);
    simt::load_rows<T, kP, kLoadBatch>(sv, LD, vh + j0 * p.v_tok_stride, p.v_tok_stride, kr, V, R);
    __syncthreads();
    float s[RM][CN], dp[RM][CN];
    simt::zero(s);
    simt::zero(dp);
    simt::tile_dot(s, sq, sk, LD, D);
    simt::tile_dot(dp, sdn, sv, LD, V);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int64_t i = t.r0 + ty + simt::kSide * r;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        const int jj = tx + simt::kSide * c;
        const int64_t j = j0 + jj;
        const bool ok = jj < kr && j <= i && i - j < w && i <= last;
        const float sc = __fmul_rn(s[r][c], scale);
        const float ds = ok ? (dp[r][c] + dz[r]) * (gamma * expf(sc - m[r])) : 0.f;
        const bool tie = ok && sc == m[r];
        dm[r] -= ds;
        ties[r] += tie ? 1.f : 0.f;
        s[r][c] = ds;
        dp[r][c] = tie ? 1.f : 0.f;
      }
    }
    simt::store_block(sds, LDP, s);
    simt::store_block(stie, LDP, dp);
    __syncthreads();
    simt::tile_pv(dq, sds, LDP, sk, LD, kr);
    simt::tile_pv(tk, stie, LDP, sk, LD, kr);
    __syncthreads();
  }

  float mul[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    dm[r] = simt::row_sum16(dm[r]);
    ties[r] = simt::row_sum16(ties[r]);
    const float g = ties[r] > 0.f ? dm[r] / ties[r] : 0.f;
#pragma unroll
    for (int c = 0; c < NC; ++c) dq[r][c] = fmaf(g, tk[r][c], dq[r][c]);
    mul[r] = scale;
    const int i = ty + simt::kSide * r;
    if (tx == 0) {
      if (i < t.rows) ws.tie_grad[(t.tok0 + i) * H + t.h] = g;
      sdm[i] = i < t.rows ? dm[r] : 0.f;
    }
  }
  simt::store_rows<T>(static_cast<T*>(p.dq) + t.h * p.qk_head_stride + t.tok0 * p.qk_tok_stride, p.qk_tok_stride, dq,
                      mul, t.rows, D);
  __syncthreads();
  if (threadIdx.x == 0) {  // fixed order: deterministic
    float s = 0.f;
    for (int i = 0; i < R; ++i) s += sdm[i];
    ws.dm_partial[(t.b * H + t.h) * gridDim.x + blockIdx.x] = s;
  }
}

template <typename T, int kP>
__global__ void __launch_bounds__(simt::kThreads)
    lolcats_bwd_win_k_kernel(const Params p, BwdWorkspace ws) {
  using Cfg = simt::Tiles<kP>;
  constexpr int R = Cfg::kRows, RM = Cfg::kRM, CN = Cfg::kCN, NC = Cfg::kNC, LD = Cfg::kLd, LDP = Cfg::kLdp;
  extern __shared__ float smem[];
  float* __restrict__ sk = smem;
  float* __restrict__ sv = sk + Cfg::kTile;
  float* __restrict__ sq = sv + Cfg::kTile;
  float* __restrict__ sdn = sq + Cfg::kTile;
  float* __restrict__ se = sdn + Cfg::kTile;
  float* __restrict__ sds = se + Cfg::kScore;
  float* __restrict__ sinvz = sds + Cfg::kScore;
  float* __restrict__ sm = sinvz + R;
  float* __restrict__ sdz = sm + R;
  float* __restrict__ sg = sdz + R;

  const RowTile t = row_tile(p, R);  // a tile of keys
  const int64_t H = p.heads, w = p.window, T_ = p.seqlen;
  const int D = static_cast<int>(p.dim_qk), V = static_cast<int>(p.dim_v);
  const int ty = simt::thread_row(), tx = simt::thread_col();
  const float scale = static_cast<float>(p.scale);
  const float gamma = gamma_of<T>(p, t.h);
  const int64_t kbase = t.b * T_;
  const T* __restrict__ qh = static_cast<const T*>(p.q) + t.h * p.qk_head_stride + kbase * p.qk_tok_stride;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + t.h * p.v_head_stride + kbase * p.v_tok_stride;

  simt::load_rows<T, kP>(sk, LD, static_cast<const T*>(p.k) + t.h * p.qk_head_stride + t.tok0 * p.qk_tok_stride,
                         p.qk_tok_stride, t.rows, D, R);
  simt::load_rows<T, kP>(sv, LD, static_cast<const T*>(p.v) + t.h * p.v_head_stride + t.tok0 * p.v_tok_stride,
                         p.v_tok_stride, t.rows, V, R);
  float dk[RM][NC], dv[RM][NC];
  simt::zero(dk);
  simt::zero(dv);

  // Queries that see a key of this tile: r0 .. (last key) + w - 1 (w <= T, clamped by the glue).
  const int64_t qlast = min(t.r0 + t.rows - 1 + w - 1, T_ - 1);
  for (int64_t q0 = t.r0; q0 <= qlast; q0 += R) {
    const int qr = static_cast<int>(min(int64_t(R), qlast - q0 + 1));
    for (int i = threadIdx.x; i < R; i += simt::kThreads) {
      const int64_t row = (kbase + q0 + i) * H + t.h;
      sinvz[i] = i < qr ? 1.f / p.z[row] : 0.f;
      sm[i] = i < qr ? p.m[row] : 0.f;
      sdz[i] = i < qr ? ws.dz[row] : 0.f;
      sg[i] = i < qr ? ws.tie_grad[row] : 0.f;
    }
    __syncthreads();
    simt::load_rows<T, kP, kLoadBatch>(sq, LD, qh + q0 * p.qk_tok_stride, p.qk_tok_stride, qr, D, R);
    simt::load_rows<T, kP, kLoadBatch>(sdn, LD, doh + q0 * p.v_tok_stride, p.v_tok_stride, qr, V, R, sinvz);
    __syncthreads();
    float s[RM][CN], dp[RM][CN];  // transposed: rows are keys, columns queries
    simt::key_tile_scores(s, dp, sk, sq, D, sv, sdn, V, LD);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int jj = ty + simt::kSide * r;
      const int64_t j = t.r0 + jj;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        const int ii = tx + simt::kSide * c;
        const int64_t i = q0 + ii;
        const bool ok = ii < qr && jj < t.rows && j <= i && i - j < w;
        const float sc = __fmul_rn(s[r][c], scale);
        const float e = ok ? gamma * expf(sc - sm[ii]) : 0.f;
        float ds = (dp[r][c] + sdz[ii]) * e;
        if (ok && sc == sm[ii]) ds += sg[ii];
        s[r][c] = e;
        dp[r][c] = ds;
      }
    }
    simt::key_tile_accumulate(dk, dv, s, dp, se, sds, LDP, sq, sdn, LD, qr);
  }

  float mul[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) mul[r] = scale;
  simt::store_rows<T>(static_cast<T*>(p.dk) + t.h * p.qk_head_stride + t.tok0 * p.qk_tok_stride, p.qk_tok_stride, dk,
                      mul, t.rows, D);
  T* __restrict__ dvh = static_cast<T*>(p.dv) + t.h * p.v_head_stride + t.tok0 * p.v_tok_stride;
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int i = ty + simt::kSide * r;
    if (i >= t.rows) continue;
    const float* __restrict__ lin = ws.dv_linear + ((t.tok0 + i) * H + t.h) * V;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = tx + simt::kSide * c;
      if (d < V) dvh[int64_t(i) * p.v_tok_stride + d] = from_float<T>(dv[r][c] + lin[d]);
    }
  }
}

template <typename T, int kP>
void launch_bwd_window(const Params& p, const BwdWorkspace& ws, cudaStream_t stream) {
  constexpr int R = simt::tile_rows_for(kP);
  const int64_t tiles = ceil_div(p.seqlen, R);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.heads), static_cast<unsigned>(p.batch));
  {
    const size_t smem = sizeof(float) * win_q_smem_floats<kP>();
    auto kernel = lolcats_bwd_win_q_kernel<T, kP>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, simt::kThreads, smem, stream>>>(p, ws);
    LINATTN_CHECK_LAUNCH();
  }
  {
    const size_t smem = sizeof(float) * win_k_smem_floats<kP>();
    auto kernel = lolcats_bwd_win_k_kernel<T, kP>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, simt::kThreads, smem, stream>>>(p, ws);
    LINATTN_CHECK_LAUNCH();
  }
  dwf_reduce_kernel<T><<<static_cast<unsigned>(p.heads), simt::kThreads, 0, stream>>>(p, ws.dm_partial, tiles);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void backward_window(const Params& p, const BwdWorkspace& ws, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  if (p.batch * p.seqlen * p.heads == 0) return;
  // tile_width is already a bucket; dispatch_width buckets it again, which changes nothing.
  simt::dispatch_width(tile_width(p),
                       [&](auto width) { launch_bwd_window<T, decltype(width)::value>(p, ws, stream); });
}

}  // namespace linattn::lolcats::gpu
