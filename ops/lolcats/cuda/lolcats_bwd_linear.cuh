#pragma once
// LoLCATs backward on CUDA, linear-attention part (fp32 SIMT). With dN_i = do_i / z_i and
// dZ_i = -(do_i . o_i) / z_i, the linear weights a_ij = fq_i . fk_j (j <= i - w) give
//   dfq_i = sum_{j <= i-w} (dN_i . v_j + dZ_i) fk_j        = S_{i-w}^T-side: s_{i-w} dZ_i + S_{i-w} dN_i
//   dfk_j = sum_{i >= j+w} (dN_i . v_j + dZ_i) fq_i         = G_{j+w} v_j + g_{j+w}
//   dv_j += sum_{i >= j+w} (fq_i . fk_j) dN_i               = G_{j+w}^T fk_j
// with prefix sums S_t = sum_{j<=t} fk_j v_j^T, s_t = sum fk_j and suffix sums G_t = sum_{i>=t} fq_i dN_i^T,
// g_t = sum_{i>=t} fq_i dZ_i. Launches:
//  1. dZ (one warp per row);
//  2. chunk prefix sums of (fk v^T, fk); 3. dfq per query tile: chunk prefix + explicit keys (as the forward);
//  4. chunk suffix sums of (fq dN^T, fq dZ); 5. dfk and the linear part of dv per key tile: chunk suffix from
//     chunk ce = ceil((last key + w) / 64) on + explicit queries j0 + w .. 64 ce - 1.
#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/lolcats/cuda/lolcats_common.cuh"
#include "ops/lolcats/cuda/lolcats_state.cuh"

namespace linattn::lolcats::gpu {

// dN, v, fk tiles, the weight tile, 1/z of the query tile.
template <int kP>
constexpr int lin_q_smem_floats() {
  return 3 * simt::Tiles<kP>::kTile + simt::Tiles<kP>::kScore + simt::Tiles<kP>::kRows;
}

// v, fk (keys), dN, fq (queries) tiles, two weight tiles, 1/z and dZ of the query tile.
template <int kP>
constexpr int lin_k_smem_floats() {
  return 4 * simt::Tiles<kP>::kTile + 2 * simt::Tiles<kP>::kScore + 2 * simt::Tiles<kP>::kRows;
}

template <typename T, int kP>
__global__ void __launch_bounds__(simt::kThreads)
    lolcats_bwd_lin_q_kernel(const Params p, const float* __restrict__ states, const float* __restrict__ dz_ws) {
  using Cfg = simt::Tiles<kP>;
  constexpr int R = Cfg::kRows, RM = Cfg::kRM, CN = Cfg::kCN, NC = Cfg::kNC, LD = Cfg::kLd, LDP = Cfg::kLdp;
  extern __shared__ float smem[];
  float* __restrict__ sdn = smem;
  float* __restrict__ sv = sdn + Cfg::kTile;  // v tiles, then columns of the prefix S
  float* __restrict__ sfk = sv + Cfg::kTile;
  float* __restrict__ sa = sfk + Cfg::kTile;
  float* __restrict__ sinvz = sa + Cfg::kScore;

  const RowTile t = row_tile(p, R);
  const int64_t H = p.heads, w = p.window;
  const int V = static_cast<int>(p.dim_v), F = static_cast<int>(p.dim_f);
  const int ty = simt::thread_row(), tx = simt::thread_col();
  const int64_t kbase = t.b * p.seqlen;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + t.h * p.v_head_stride + kbase * p.v_tok_stride;
  const T* __restrict__ fkh = static_cast<const T*>(p.fk) + t.h * p.f_head_stride + kbase * p.f_tok_stride;

  for (int i = threadIdx.x; i < R; i += simt::kThreads) sinvz[i] = i < t.rows ? 1.f / p.z[(t.tok0 + i) * H + t.h] : 0.f;
  __syncthreads();
  simt::load_rows<T, kP>(sdn, LD, static_cast<const T*>(p.do_) + t.h * p.v_head_stride + t.tok0 * p.v_tok_stride,
                         p.v_tok_stride, t.rows, V, R, sinvz);
  float dz[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) {
    const int i = ty + simt::kSide * r;
    dz[r] = i < t.rows ? dz_ws[(t.tok0 + i) * H + t.h] : 0.f;
  }
  float acc[RM][NC];  // over F
  simt::zero(acc);

  const int64_t last = t.r0 + t.rows - 1;
  const int64_t cb = linear_base_chunk(t.r0, w);
  for (int64_t j0 = cb * kChunk; j0 <= last - w; j0 += R) {
    const int kr = static_cast<int>(min(int64_t(R), last - w - j0 + 1));
    simt::load_rows<T, kP, kLoadBatch>(sv, LD, vh + j0 * p.v_tok_stride, p.v_tok_stride, kr, V, R);
    simt::load_rows<T, kP, kLoadBatch>(sfk, LD, fkh + j0 * p.f_tok_stride, p.f_tok_stride, kr, F, R);
    __syncthreads();
    float da[RM][CN];
    simt::zero(da);
    simt::tile_dot(da, sdn, sv, LD, V);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int64_t i = t.r0 + ty + simt::kSide * r;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        const int jj = tx + simt::kSide * c;
        const bool ok = jj < kr && i - (j0 + jj) >= w && i <= last;
        da[r][c] = ok ? da[r][c] + dz[r] : 0.f;
      }
    }
    simt::store_block(sa, LDP, da);
    __syncthreads();
    simt::tile_pv(acc, sa, LDP, sfk, LD, kr);
    __syncthreads();
  }

  if (cb > 0) {
    const float* __restrict__ st = state_slot(p, states, t.b, t.h, cb);
    const float* __restrict__ zs = st + int64_t(F) * V;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int f = tx + simt::kSide * c;
      const float zf = f < F ? zs[f] : 0.f;
#pragma unroll
      for (int r = 0; r < RM; ++r) acc[r][c] = fmaf(dz[r], zf, acc[r][c]);
    }
    // S dN_i: rows v0 .. of S^T against columns v0 .. of dN.
    for (int v0 = 0; v0 < V; v0 += R) {
      const int vr = min(R, V - v0);
      simt::load_matrix_cols<kP, kLoadBatch>(sv, LD, st, V, v0, vr, F, R);
      __syncthreads();
      simt::tile_pv(acc, sdn + v0, LD, sv, LD, vr);
      __syncthreads();
    }
  }
  float one[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) one[r] = 1.f;
  simt::store_rows<T>(static_cast<T*>(p.dfq) + t.h * p.f_head_stride + t.tok0 * p.f_tok_stride, p.f_tok_stride, acc,
                      one, t.rows, F);
}

template <typename T, int kP>
__global__ void __launch_bounds__(simt::kThreads)
    lolcats_bwd_lin_k_kernel(const Params p, const float* __restrict__ states, const float* __restrict__ dz_ws,
                             float* __restrict__ dv_linear) {
  using Cfg = simt::Tiles<kP>;
  constexpr int R = Cfg::kRows, RM = Cfg::kRM, CN = Cfg::kCN, NC = Cfg::kNC, LD = Cfg::kLd, LDP = Cfg::kLdp;
  extern __shared__ float smem[];
  float* __restrict__ sv = smem;
  float* __restrict__ sfk = sv + Cfg::kTile;
  float* __restrict__ sdn = sfk + Cfg::kTile;  // dN tiles, then rows / columns of the suffix G
  float* __restrict__ sfq = sdn + Cfg::kTile;
  float* __restrict__ sa = sfq + Cfg::kTile;
  float* __restrict__ sb = sa + Cfg::kScore;
  float* __restrict__ sinvz = sb + Cfg::kScore;
  float* __restrict__ sdz = sinvz + R;

  const RowTile t = row_tile(p, R);  // a tile of keys
  const int64_t H = p.heads, w = p.window, T_ = p.seqlen;
  const int V = static_cast<int>(p.dim_v), F = static_cast<int>(p.dim_f);
  const int ty = simt::thread_row(), tx = simt::thread_col();
  const int64_t kbase = t.b * T_;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + t.h * p.v_head_stride + kbase * p.v_tok_stride;
  const T* __restrict__ fqh = static_cast<const T*>(p.fq) + t.h * p.f_head_stride + kbase * p.f_tok_stride;

  simt::load_rows<T, kP>(sv, LD, static_cast<const T*>(p.v) + t.h * p.v_head_stride + t.tok0 * p.v_tok_stride,
                         p.v_tok_stride, t.rows, V, R);
  simt::load_rows<T, kP>(sfk, LD, static_cast<const T*>(p.fk) + t.h * p.f_head_stride + t.tok0 * p.f_tok_stride,
                         p.f_tok_stride, t.rows, F, R);
  float dfk[RM][NC], dv[RM][NC];
  simt::zero(dfk);
  simt::zero(dv);

  // Queries i >= j + w: explicitly j0 + w .. 64 ce - 1, then the suffix sums from chunk ce on.
  const int64_t jlast = t.r0 + t.rows - 1;
  const int64_t ce = ceil_div(jlast + w, kChunk);
  const int64_t qend = min(ce * kChunk, T_) - 1;
  for (int64_t q0 = t.r0 + w; q0 <= qend; q0 += R) {
    const int qr = static_cast<int>(min(int64_t(R), qend - q0 + 1));
    for (int i = threadIdx.x; i < R; i += simt::kThreads) {
      const int64_t row = (kbase + q0 + i) * H + t.h;
      sinvz[i] = i < qr ? 1.f / p.z[row] : 0.f;
      sdz[i] = i < qr ? dz_ws[row] : 0.f;
    }
    __syncthreads();
    simt::load_rows<T, kP, kLoadBatch>(sdn, LD, doh + q0 * p.v_tok_stride, p.v_tok_stride, qr, V, R, sinvz);
    simt::load_rows<T, kP, kLoadBatch>(sfq, LD, fqh + q0 * p.f_tok_stride, p.f_tok_stride, qr, F, R);
    __syncthreads();
    float da[RM][CN], a[RM][CN];  // transposed: rows are keys, columns queries
    simt::zero(da);
    simt::zero(a);
    simt::tile_dot(da, sv, sdn, LD, V);
    simt::tile_dot(a, sfk, sfq, LD, F);
#pragma unroll
    for (int r = 0; r < RM; ++r) {
      const int jj = ty + simt::kSide * r;
#pragma unroll
      for (int c = 0; c < CN; ++c) {
        const int ii = tx + simt::kSide * c;
        const bool ok = ii < qr && jj < t.rows && (q0 + ii) - (t.r0 + jj) >= w;
        da[r][c] = ok ? da[r][c] + sdz[ii] : 0.f;
        a[r][c] = ok ? a[r][c] : 0.f;
      }
    }
    simt::store_block(sa, LDP, da);
    simt::store_block(sb, LDP, a);
    __syncthreads();
    simt::tile_pv(dfk, sa, LDP, sfq, LD, qr);
    simt::tile_pv(dv, sb, LDP, sdn, LD, qr);
    __syncthreads();
  }

  if (ce < ceil_div(T_, kChunk)) {
    const float* __restrict__ st = state_slot(p, states, t.b, t.h, ce);  // G [F x V], then g [F]
    const float* __restrict__ gs = st + int64_t(F) * V;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int f = tx + simt::kSide * c;
      const float gf = f < F ? gs[f] : 0.f;
#pragma unroll
      for (int r = 0; r < RM; ++r) dfk[r][c] += gf;
    }
    // G v_j: columns v0 .. of v against rows v0 .. of G^T.
    for (int v0 = 0; v0 < V; v0 += R) {
      const int vr = min(R, V - v0);
      simt::load_matrix_cols<kP, kLoadBatch>(sdn, LD, st, V, v0, vr, F, R);
      __syncthreads();
      simt::tile_pv(dfk, sv + v0, LD, sdn, LD, vr);
      __syncthreads();
    }
    // G^T fk_j: columns f0 .. of fk against rows f0 .. of G.
    for (int f0 = 0; f0 < F; f0 += R) {
      const int fr = min(R, F - f0);
      simt::load_matrix_rows<kP, kLoadBatch>(sdn, LD, st, V, f0, fr, V, R);
      __syncthreads();
      simt::tile_pv(dv, sfk + f0, LD, sdn, LD, fr);
      __syncthreads();
    }
  }
  float one[RM];
#pragma unroll
  for (int r = 0; r < RM; ++r) one[r] = 1.f;
  simt::store_rows<T>(static_cast<T*>(p.dfk) + t.h * p.f_head_stride + t.tok0 * p.f_tok_stride, p.f_tok_stride, dfk,
                      one, t.rows, F);
  simt::store_rows<float>(dv_linear + (t.tok0 * H + t.h) * V, H * V, dv, one, t.rows, V);
}

template <typename T, int kP>
void launch_bwd_linear(const Params& p, const BwdWorkspace& ws, cudaStream_t stream) {
  constexpr int R = simt::tile_rows_for(kP);
  const dim3 grid(static_cast<unsigned>(ceil_div(p.seqlen, R)), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(p.batch));
  const RowOperand<T> fk{static_cast<const T*>(p.fk), p.f_tok_stride, p.f_head_stride, static_cast<int>(p.dim_f)};
  const RowOperand<T> fq{static_cast<const T*>(p.fq), p.f_tok_stride, p.f_head_stride, static_cast<int>(p.dim_f)};
  const RowOperand<T> v{static_cast<const T*>(p.v), p.v_tok_stride, p.v_head_stride, static_cast<int>(p.dim_v)};
  const RowOperand<T> d_o{static_cast<const T*>(p.do_), p.v_tok_stride, p.v_head_stride, static_cast<int>(p.dim_v)};

  launch_chunk_states<T, false>(p, fk, v, nullptr, nullptr, ws.states, stream);
  {
    const size_t smem = sizeof(float) * lin_q_smem_floats<kP>();
    auto kernel = lolcats_bwd_lin_q_kernel<T, kP>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, simt::kThreads, smem, stream>>>(p, ws.states, ws.dz);
    LINATTN_CHECK_LAUNCH();
  }
  launch_chunk_states<T, true>(p, fq, d_o, p.z, ws.dz, ws.states, stream);
  {
    const size_t smem = sizeof(float) * lin_k_smem_floats<kP>();
    auto kernel = lolcats_bwd_lin_k_kernel<T, kP>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, simt::kThreads, smem, stream>>>(p, ws.states, ws.dz, ws.dv_linear);
    LINATTN_CHECK_LAUNCH();
  }
}

template <DType D>
void backward_linear(const Params& p, const BwdWorkspace& ws, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  const int64_t rows = p.batch * p.seqlen * p.heads;
  if (rows == 0) return;
  // dZ_i = -(do_i . o_i) / z_i (o and do are contiguous [B*T, H, V]).
  constexpr int kWarps = simt::kThreads / 32;
  simt::row_dot_kernel<T><<<static_cast<unsigned>(ceil_div(rows, kWarps)), simt::kThreads, 0, stream>>>(
      static_cast<const T*>(p.do_), static_cast<const T*>(p.o), p.z, -1.f, rows, static_cast<int>(p.dim_v), ws.dz);
  LINATTN_CHECK_LAUNCH();
  // tile_width is already a bucket; dispatch_width buckets it again, which changes nothing.
  simt::dispatch_width(tile_width(p),
                       [&](auto width) { launch_bwd_linear<T, decltype(width)::value>(p, ws, stream); });
}

}  // namespace linattn::lolcats::gpu
