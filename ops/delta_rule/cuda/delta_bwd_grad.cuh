#pragma once
// Backward pass 3 (fp32 SIMT): every chunk on its own, one CTA of 256 threads per (chunk slot, value head),
// given what passes 1 and 2 stored: S0 (ws.states), dS (ws.dstates: gradient w.r.t. the state leaving the
// chunk), U (ws.u), Z = diag(Gamma) K S0 (ws.z) and dR (ws.dr). With P = Dm o Q K^T and E = Dm o K K^T
// (strictly lower), M = diag(beta) E, the CPU kernel's chain rule reads
//   dP = scale dO U^T (j <= i)       -> dq_i += sum_j dP_ij Dm_ij k_j,  dk_j += sum_i dP_ij Dm_ij q_i
//   dM = -dR U^T (j < i)             -> dbeta_i += sum_j dM_ij E_ij,  dE = diag(beta) dM,
//                                       dk_i += sum_j dE_ij Dm_ij k_j,  dk_j += sum_i dE_ij Dm_ij k_i
//   dq_i += scale Gamma_i (dO S0^T)_i
//   dk_j += Dm_Lj (U dS^T)_j - beta_j Gamma_j (dR S0^T)_j
//   dv_i = beta_i dr_i,  dbeta_i += dr_i . (v_i - z_i)
//   db_i = rowsum_i(X) - colsum_i(X) + scale Gamma_i q_i . (dO S0^T)_i - beta_i dr_i . z_i - term_i,
//     X = dP o P + dE o E,  term_j = Dm_Lj k_j . (U dS^T)_j,
//   db_{L-1} += dbL = sum_j term_j + Gamma_L <dS, S0>,  and dg_i = sum_{m >= i} db_m (gate gradients are
//   local to a chunk; whatever crosses chunks went through dS).
// Phase 0 forms P and E (K in tiles of 32); phase 1 walks the V tiles for dP, dM and the row dots; phase 2
// walks K tiles (and V tiles inside) for dq and dk; phase 3 assembles dbeta and dg. dq and dk are written per
// value head into fp32 workspaces; group_sum_kernel (delta_group_sum.cuh) sums each group of value heads into
// p.dq / p.dk.
#include <algorithm>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/delta_rule/cuda/delta_common.cuh"
#include "ops/delta_rule/cuda/delta_group_sum.cuh"

namespace linattn::delta::gpu {

struct GradSmem {
  int e, pm, q, k, dout, u, dr, s0, ds, b, gam, beta, graw, rowv, rowz, rowx, colx, term, db, red_dbeta, red_qdot,
      red_kterm, red_carry, total;
  __host__ __device__ GradSmem() {
    e = 0;                          // [64 x kLDA] E, then dE o Dm
    pm = e + kChunk * kLDA;         // [64 x kLDA] P, then dP o Dm
    q = pm + kChunk * kLDA;         // [64 x kLD] q tile; with k: X ([64 x kLDA]) between phases 1 and 2
    k = q + kChunk * kLD;           // [64 x kLD] k tile
    dout = k + kChunk * kLD;        // [64 x kLD] do tile
    u = dout + kChunk * kLD;        // [64 x kLD] U tile
    dr = u + kChunk * kLD;          // [64 x kLD] dR tile
    s0 = dr + kChunk * kLD;         // [32 x kLD] S0 tile
    ds = s0 + kBK * kLD;            // [32 x kLD] dS tile
    b = ds + kBK * kLD;             // [64] cumulative log decays
    gam = b + kChunk;               // [64] Gamma
    beta = gam + kChunk;            // [64] beta
    graw = beta + kChunk;           // [64] raw log decays (scratch)
    rowv = graw + kChunk;           // [64] dr_i . v_i
    rowz = rowv + kChunk;           // [64] dr_i . z_i
    rowx = rowz + kChunk;           // [64] row sums of X
    colx = rowx + kChunk;           // [64] column sums of X
    term = colx + kChunk;           // [64] term_j
    db = term + kChunk;             // [64] db_i without dbL
    red_dbeta = db + kChunk;        // [4 x 64] partial sums over the key blocks
    red_qdot = red_dbeta + 4 * kChunk;  // [4 x 64] partial q_i . (dO S0^T)_i
    red_kterm = red_qdot + 4 * kChunk;  // [4 x 64] partial term_i
    red_carry = red_kterm + 4 * kChunk;  // [8] per-warp partial <dS, S0>
    total = red_carry + kThreads / 32;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) chunk_bwd_grad_kernel(const BwdParams p, const BwdWorkspace ws) {
  extern __shared__ float smem[];
  const GradSmem lay;
  float* __restrict__ sE = smem + lay.e;
  float* __restrict__ sP = smem + lay.pm;
  float* __restrict__ sq = smem + lay.q;
  float* __restrict__ sk = smem + lay.k;
  float* __restrict__ sX = smem + lay.q;  // aliases the q and k tiles between phases 1 and 2
  float* __restrict__ sdo = smem + lay.dout;
  float* __restrict__ su = smem + lay.u;
  float* __restrict__ sdr = smem + lay.dr;
  float* __restrict__ ss0 = smem + lay.s0;
  float* __restrict__ sds = smem + lay.ds;
  float* __restrict__ sb = smem + lay.b;
  float* __restrict__ sgam = smem + lay.gam;
  float* __restrict__ sbeta = smem + lay.beta;

  const int64_t slot = blockIdx.x, hv = blockIdx.y;
  int64_t n, c;
  SeqSpan seq;
  if (!locate_chunk(p, slot, n, c, seq)) return;  // whole CTA: before any barrier
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int k_tiles = static_cast<int>(ceil_div(K, kBK)), v_tiles = static_cast<int>(ceil_div(V, kBV));
  const int64_t H = p.heads, HV = p.value_heads, h = hv / (HV / H);
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int64_t KV = int64_t(K) * V;
  const int64_t q_tok = H * K, v_tok = HV * V, dqk_tok = HV * K;
  const float* __restrict__ S0 = ws.states + (slot * HV + hv) * KV;
  const float* __restrict__ dS = ws.dstates + (slot * HV + hv) * KV;
  const int tid = threadIdx.x, row = tid % kChunk, grp = tid / kChunk, w = tid / 32, lane = tid % 32;
  const float scale = static_cast<float>(p.scale);

  const T* __restrict__ qc = static_cast<const T*>(p.q) + t0 * q_tok + h * K;
  const T* __restrict__ kc = static_cast<const T*>(p.k) + t0 * q_tok + h * K;
  const int64_t v_at0 = t0 * v_tok + hv * V;  // offset of (row 0, column 0) in the [B*T, HV, V] tensors
  const T* __restrict__ vin = static_cast<const T*>(p.v);
  const T* __restrict__ doin = static_cast<const T*>(p.do_);
  T* __restrict__ dvout = static_cast<T*>(p.dv);

  load_chunk_gates(p, t0, hv, L, sbeta, sb, sgam, smem + lay.graw);

  // Phase 0: P = Dm o Q K^T (j <= i), E = Dm o K K^T (j < i).
  {
    float akk[kBlk], aqk[kBlk];
#pragma unroll
    for (int m = 0; m < kBlk; ++m) akk[m] = aqk[m] = 0.f;
    for (int kt = 0; kt < k_tiles; ++kt) {
      const int d0 = kt * kBK, kcols = min(kBK, K - d0);
      load_row_tile<T>(sk, kc + d0, q_tok, L, kcols);
      load_row_tile<T>(sq, qc + d0, q_tok, L, kcols);
      __syncthreads();
      accumulate_gram<true>(akk, aqk, sq, sk);
      __syncthreads();
    }
    store_gram<false>(sE, akk, sb, nullptr);
    store_gram<true>(sP, aqk, sb, nullptr);
  }

  // Phase 1: dP' = dO U^T and dM' = dR U^T over the V tiles; row dots dr.v, dr.z; dv.
  float adp[kBlk], adm[kBlk], rv[8], rz[8];
#pragma unroll
  for (int m = 0; m < kBlk; ++m) adp[m] = adm[m] = 0.f;
#pragma unroll
  for (int m = 0; m < 8; ++m) rv[m] = rz[m] = 0.f;
  for (int vt = 0; vt < v_tiles; ++vt) {
    const int v0 = vt * kBV, vcols = min(kBV, V - v0);
    load_row_tile<T>(sdo, doin + v_at0 + v0, v_tok, L, vcols);
    load_row_tile<float>(su, ws.u + v_at0 + v0, v_tok, L, vcols);
    // Row w + 8 m, column lane: a warp owns whole rows, for the row dots. All 24 loads are issued before the
    // first store: interleaved with the dv stores, which the compiler may not move them past, each row cost
    // one memory latency.
    float drs[8], vs[8], zs[8];
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const int i = w + 8 * m;
      drs[m] = vs[m] = zs[m] = 0.f;
      if (i < L && lane < vcols) {
        const int64_t at = v_at0 + int64_t(i) * v_tok + v0 + lane;
        drs[m] = ws.dr[at];
        vs[m] = to_float(vin[at]);
        zs[m] = ws.z[at];
      }
    }
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const int i = w + 8 * m;
      const float dr = drs[m];
      if (i < L && lane < vcols) {
        rv[m] += dr * vs[m];
        rz[m] += dr * zs[m];
        dvout[v_at0 + int64_t(i) * v_tok + v0 + lane] = from_float<T>(sbeta[i] * dr);
      }
      sdr[i * kLD + lane] = dr;
    }
    __syncthreads();
    if (grp * kBlk <= row) {
      const float* __restrict__ ub = su + grp * kBlk * kLD;
      for (int cc = 0; cc < kBV; ++cc) {
        const float doi = sdo[row * kLD + cc], dri = sdr[row * kLD + cc];
#pragma unroll
        for (int jj = 0; jj < kBlk; ++jj) {
          const float uj = ub[jj * kLD + cc];
          adp[jj] += doi * uj;
          adm[jj] += dri * uj;
        }
      }
    }
    __syncthreads();
  }

  // End of phase 1: X, dP o Dm (into sP), dE o Dm (into sE), partial dbeta; each thread its own entries.
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    const float x = warp_sum(rv[m]), y = warp_sum(rz[m]);
    if (lane == 0) {
      smem[lay.rowv + w + 8 * m] = x;
      smem[lay.rowz + w + 8 * m] = y;
    }
  }
  {
    const float bi = sb[row], betai = sbeta[row];
    float dbm = 0.f;
#pragma unroll
    for (int jj = 0; jj < kBlk; ++jj) {
      const int j = grp * kBlk + jj;
      float x = 0.f, np = 0.f, ne = 0.f;
      if (j <= row) {
        const float dmij = expf(bi - sb[j]);
        const float dp = scale * adp[jj];
        x += dp * sP[row * kLDA + j];
        np = dp * dmij;
        if (j < row) {
          const float dm = -adm[jj], e = sE[row * kLDA + j];
          dbm += dm * e;
          const float de = betai * dm;
          x += de * e;
          ne = de * dmij;
        }
      }
      sX[row * kLDA + j] = x;
      sP[row * kLDA + j] = np;
      sE[row * kLDA + j] = ne;
    }
    smem[lay.red_dbeta + grp * kChunk + row] = dbm;
  }
  __syncthreads();
  if (tid < kChunk) {
    float s = 0.f;
    for (int j = 0; j < kChunk; ++j) s += sX[tid * kLDA + j];
    smem[lay.rowx + tid] = s;
  } else if (tid < 2 * kChunk) {
    const int j = tid - kChunk;
    float s = 0.f;
    for (int i = 0; i < kChunk; ++i) s += sX[i * kLDA + j];
    smem[lay.colx + j] = s;
  }
  __syncthreads();

  // Phase 2: dq, dk per K tile; the V tiles inside give dO S0^T, U dS^T, dR S0^T and <dS, S0>.
  float qdot = 0.f, kterm = 0.f, carry = 0.f;
  const float gi = sgam[row], dli = expf(sb[kChunk - 1] - sb[row]), bgi = sbeta[row] * gi;
  for (int kt = 0; kt < k_tiles; ++kt) {
    const int d0 = kt * kBK, kcols = min(kBK, K - d0);
    load_row_tile<T>(sk, kc + d0, q_tok, L, kcols);
    load_row_tile<T>(sq, qc + d0, q_tok, L, kcols);
    float aq[8], ak1[8], ak2[8];
#pragma unroll
    for (int m = 0; m < 8; ++m) aq[m] = ak1[m] = ak2[m] = 0.f;
    for (int vt = 0; vt < v_tiles; ++vt) {
      const int v0 = vt * kBV, vcols = min(kBV, V - v0);
      load_row_tile<T>(sdo, doin + v_at0 + v0, v_tok, L, vcols);
      load_row_tile<float>(su, ws.u + v_at0 + v0, v_tok, L, vcols);
      load_row_tile<float>(sdr, ws.dr + v_at0 + v0, v_tok, L, vcols);
      load_state_tile(ss0, S0, V, d0, v0, kcols, vcols);
      load_state_tile(sds, dS, V, d0, v0, kcols, vcols);
      __syncthreads();
      for (int cc = 0; cc < kBV; ++cc) {
        const float doi = sdo[row * kLD + cc], ui = su[row * kLD + cc], dri = sdr[row * kLD + cc];
#pragma unroll
        for (int m = 0; m < 8; ++m) {
          const int d = grp * 8 + m;
          const float s0 = ss0[d * kLD + cc];
          aq[m] += doi * s0;
          ak1[m] += ui * sds[d * kLD + cc];
          ak2[m] += dri * s0;
        }
      }
      for (int e = tid; e < kBK * kBV; e += kThreads) {
        const int at = (e / kBV) * kLD + e % kBV;
        carry += ss0[at] * sds[at];
      }
      __syncthreads();
    }
    float dq[8], dk[8];
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const int d = grp * 8 + m;
      dq[m] = scale * gi * aq[m];
      dk[m] = dli * ak1[m] - bgi * ak2[m];
      qdot += sq[row * kLD + d] * aq[m];
      kterm += dli * sk[row * kLD + d] * ak1[m];
    }
    for (int j = 0; j < kChunk; ++j) {
      const float* __restrict__ kj = sk + j * kLD + grp * 8;
      const float* __restrict__ qj = sq + j * kLD + grp * 8;
      const float a = j <= row ? sP[row * kLDA + j] : 0.f;  // dq_i += dP_ij k_j
      const float bq = j >= row ? sP[j * kLDA + row] : 0.f;  // dk_i += dP_ji q_j
      const float ek = (j < row ? sE[row * kLDA + j] : 0.f) + (j > row ? sE[j * kLDA + row] : 0.f);
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        dq[m] += a * kj[m];
        dk[m] += bq * qj[m] + ek * kj[m];
      }
    }
    if (row < L) {
      float* __restrict__ dqrow = ws.dq + (t0 + row) * dqk_tok + hv * K + d0;
      float* __restrict__ dkrow = ws.dk + (t0 + row) * dqk_tok + hv * K + d0;
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        const int d = grp * 8 + m;
        if (d < kcols) {
          dqrow[d] = dq[m];
          dkrow[d] = dk[m];
        }
      }
    }
    __syncthreads();  // the next K tile reloads q and k
  }

  // Phase 3: dbeta, db, dg.
  smem[lay.red_qdot + grp * kChunk + row] = qdot;
  smem[lay.red_kterm + grp * kChunk + row] = kterm;
  carry = warp_sum(carry);
  if (lane == 0) smem[lay.red_carry + w] = carry;
  __syncthreads();
  float dbeta = 0.f;
  if (tid < kChunk) {
    const int i = tid;
    float qd = 0.f, term = 0.f, dbm = 0.f;
    for (int g = 0; g < kThreads / kChunk; ++g) {
      qd += smem[lay.red_qdot + g * kChunk + i];
      term += smem[lay.red_kterm + g * kChunk + i];
      dbm += smem[lay.red_dbeta + g * kChunk + i];
    }
    const float rz_i = smem[lay.rowz + i];
    smem[lay.term + i] = term;
    smem[lay.db + i] = smem[lay.rowx + i] - smem[lay.colx + i] + scale * sgam[i] * qd - sbeta[i] * rz_i - term;
    dbeta = dbm + smem[lay.rowv + i] - rz_i;
  }
  __syncthreads();
  if (tid < L) {
    const int i = tid;
    float carried = 0.f;
    for (int q = 0; q < kThreads / 32; ++q) carried += smem[lay.red_carry + q];
    const int64_t at = (t0 + i) * HV + hv;
    static_cast<float*>(p.dbeta)[at] = dbeta;
    if (p.dg != nullptr) {
      float dbl = sgam[kChunk - 1] * carried;
      for (int j = 0; j < L; ++j) dbl += smem[lay.term + j];
      float dg = dbl;
      for (int m = i; m < L; ++m) dg += smem[lay.db + m];
      static_cast<float*>(p.dg)[at] = dg;
    }
  }
}

template <DType D>
void backward_grads(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  const int64_t slots = num_state_slots(p);
  const int64_t tokens = p.batch * p.seqlen;
  if (slots == 0 || tokens == 0 || p.value_heads == 0) return;
  {
    const size_t smem = sizeof(float) * static_cast<size_t>(GradSmem().total);
    auto kernel = chunk_bwd_grad_kernel<T>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(p.value_heads));
    kernel<<<grid, kThreads, smem, stream>>>(p, ws);
    LINATTN_CHECK_LAUNCH();
  }
  launch_group_sum<T>(p, ws, stream);
}

}  // namespace linattn::delta::gpu
