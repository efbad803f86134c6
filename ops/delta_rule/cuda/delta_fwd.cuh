#pragma once
// Chunked (gated) delta-rule forward on CUDA (fp32 SIMT). One CTA of 256 threads per (sequence, value head,
// 32-column V tile): the V columns of the state evolve independently (the update u_t = beta_t (v_t - S^T k_t)
// is column-wise), so each CTA keeps its [K x 32] slice of S in shared memory and walks the chunks of its
// sequence in order. Per chunk of L <= 64 rows entering with S0 (b = in-chunk cumulative log decay,
// Gamma_i = e^{b_i}, Dm_ij = e^{b_i - b_j}), exactly the CPU kernel's steps:
//   R = diag(beta) (V - diag(Gamma) K S0)
//   U = (I + M)^{-1} R,  M_ij = beta_i Dm_ij k_i . k_j (i > j)      forward substitution (the UT transform)
//   O = scale (diag(Gamma) Q S0 + (Dm o Q K^T) U)
//   S <- Gamma_L S0 + sum_j Dm_Lj k_j u_j^T
// K K^T and Q K^T need all of K, so every V tile recomputes them (K in tiles of 32). With kStatesOnly the
// same kernel skips the output and stores, for the backward, the state entering every chunk (ws.states),
// U (ws.u) and Z = diag(Gamma) K S0 (ws.z).
#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/delta_rule/cuda/delta_common.cuh"

namespace linattn::delta::gpu {

// Dynamic shared memory of chunk_fwd_kernel, in floats, for Kp = K rounded up to 32.
struct FwdSmem {
  int s, q, k, u, m, pm, b, gam, beta, graw, total;
  __host__ __device__ explicit FwdSmem(int kp) {
    s = 0;                    // [Kp x kBV] state slice
    q = s + kp * kBV;         // [64 x kLD] q tile
    k = q + kChunk * kLD;     // [64 x kLD] k tile, then k_j Dm_Lj for the state update
    u = k + kChunk * kLD;     // [64 x kLD] v tile, then R, then U
    m = u + kChunk * kLD;     // [64 x kLDA] M
    pm = m + kChunk * kLDA;   // [64 x kLDA] P = Dm o Q K^T
    b = pm + kChunk * kLDA;   // [64] cumulative log decays
    gam = b + kChunk;         // [64] Gamma
    beta = gam + kChunk;      // [64] beta
    graw = beta + kChunk;     // [64] raw log decays (scratch)
    total = graw + kChunk;
  }
};

template <typename T, bool kStatesOnly>
__global__ void __launch_bounds__(kThreads) chunk_fwd_kernel(const FwdParams p, const BwdWorkspace ws) {
  extern __shared__ float smem[];
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int k_tiles = static_cast<int>(ceil_div(K, kBK));
  const FwdSmem lay(k_tiles * kBK);
  float* __restrict__ sS = smem + lay.s;
  float* __restrict__ sq = smem + lay.q;
  float* __restrict__ sk = smem + lay.k;
  float* __restrict__ sU = smem + lay.u;
  float* __restrict__ sM = smem + lay.m;
  float* __restrict__ sP = smem + lay.pm;
  float* __restrict__ sb = smem + lay.b;
  float* __restrict__ sgam = smem + lay.gam;
  float* __restrict__ sbeta = smem + lay.beta;

  const int64_t H = p.heads, HV = p.value_heads;
  const int64_t nh = blockIdx.x;  // n * HV + hv
  const int64_t n = nh / HV, hv = nh % HV, h = hv / (HV / H);
  const int v0 = blockIdx.y * kBV;
  const int vcols = min(kBV, V - v0);
  const int tid = threadIdx.x;
  const int row = tid % kChunk, cg = tid / kChunk;  // row-tile map
  const float scale = static_cast<float>(p.scale);
  const SeqSpan seq = seq_span(p, n);
  const int64_t KV = int64_t(K) * V;
  const int64_t q_tok = H * K, v_tok = HV * V;
  // Loads in flight per thread when staging a tile: the largest batch with which ptxas (nvcc 13) spills
  // nothing, sm_80 and sm_90a. The states pass spills with 4 (its 80-register target) but not with 8; the
  // forward spills with 8.
  constexpr int kRowBatch = kStatesOnly ? 8 : kTileBatch;

  // S <- h0 (or 0); rows >= K and columns >= V stay 0.
  load_state_smem(sS, static_cast<const float*>(p.h0), nh, KV, K, V, v0, vcols, k_tiles * kBK * kBV);

  const int64_t nchunks = ceil_div(seq.len, kChunk);
  const int64_t base = slot_base(seq.bos, n);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * K;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * K;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + hv * V + v0;

  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t t0 = seq.bos + c * kChunk;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    if (kStatesOnly) {
      float* __restrict__ dst = ws.states + ((base + c) * HV + hv) * KV;
      for (int e = tid; e < K * kBV; e += kThreads) {
        const int d = e / kBV, cc = e % kBV;
        if (cc < vcols) dst[int64_t(d) * V + v0 + cc] = sS[e];
      }
    }
    load_row_tile<T, kRowBatch>(sU, vh + t0 * v_tok, v_tok, L, vcols);
    load_chunk_gates(p, t0, hv, L, sbeta, sb, sgam, smem + lay.graw);

    float akk[kBlk], aqk[kBlk], aks[8], aqs[8];
#pragma unroll
    for (int m = 0; m < kBlk; ++m) akk[m] = aqk[m] = 0.f;
#pragma unroll
    for (int m = 0; m < 8; ++m) aks[m] = aqs[m] = 0.f;

    // K K^T, Q K^T, K S0 and Q S0 over the K tiles.
    for (int kt = 0; kt < k_tiles; ++kt) {
      const int d0 = kt * kBK, kcols = min(kBK, K - d0);
      load_row_tile<T, kRowBatch>(sk, kh + t0 * q_tok + d0, q_tok, L, kcols);
      if (!kStatesOnly) load_row_tile<T, kRowBatch>(sq, qh + t0 * q_tok + d0, q_tok, L, kcols);
      __syncthreads();
      accumulate_gram<!kStatesOnly>(akk, aqk, sq, sk);
      for (int d = 0; d < kBK; ++d) {
        const float ki = sk[row * kLD + d];
        const float qi = kStatesOnly ? 0.f : sq[row * kLD + d];
        const float* __restrict__ srow = sS + (d0 + d) * kBV + cg * 8;
#pragma unroll
        for (int m = 0; m < 8; ++m) {
          aks[m] += ki * srow[m];
          if (!kStatesOnly) aqs[m] += qi * srow[m];
        }
      }
      __syncthreads();
    }
    store_gram<false>(sM, akk, sb, sbeta);
    if (!kStatesOnly) store_gram<true>(sP, aqk, sb, nullptr);

    // R = beta (v - Gamma K S0), in place of the v tile (each thread its own entries).
    {
      const float gi = sgam[row], bi = sbeta[row];
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        const int col = cg * 8 + m;
        const float z = gi * aks[m];
        sU[row * kLD + col] = bi * (sU[row * kLD + col] - z);
        if (kStatesOnly && row < L && col < vcols) ws.z[(t0 + row) * v_tok + hv * V + v0 + col] = z;
      }
    }
    __syncthreads();
    forward_substitute(sU, sM, L);
    __syncthreads();

    if (!kStatesOnly) {
      // o_i = scale (Gamma_i q_i . S0 + sum_{j<=i} P_ij u_j)
      float acc[8];
      const float gi = sgam[row];
#pragma unroll
      for (int m = 0; m < 8; ++m) acc[m] = gi * aqs[m];
      for (int j = 0; j <= row; ++j) {
        const float a = sP[row * kLDA + j];
        const float* __restrict__ urow = sU + j * kLD + cg * 8;
#pragma unroll
        for (int m = 0; m < 8; ++m) acc[m] += a * urow[m];
      }
      if (row < L) {
        T* __restrict__ orow = static_cast<T*>(p.o) + (t0 + row) * v_tok + hv * V + v0;
#pragma unroll
        for (int m = 0; m < 8; ++m) {
          const int col = cg * 8 + m;
          if (col < vcols) orow[col] = from_float<T>(scale * acc[m]);
        }
      }
    } else if (row < L) {
      float* __restrict__ urow = ws.u + (t0 + row) * v_tok + hv * V + v0;
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        const int col = cg * 8 + m;
        if (col < vcols) urow[col] = sU[row * kLD + col];
      }
    }

    // S <- Gamma_L S + sum_j (k_j Dm_Lj) u_j^T, K tile by K tile (the k tiles are reloaded, scaled).
    {
      const float bl = sb[kChunk - 1], gl = sgam[kChunk - 1];
      float* __restrict__ sdl = smem + lay.graw;  // Dm_Lj (graw is free after load_chunk_gates)
      if (tid < kChunk) sdl[tid] = expf(bl - sb[tid]);
      __syncthreads();
      const int col = tid % kBV;
      for (int kt = 0; kt < k_tiles; ++kt) {
        const int d0 = kt * kBK, kcols = min(kBK, K - d0);
        load_row_tile<T, kRowBatch>(sk, kh + t0 * q_tok + d0, q_tok, L, kcols, sdl);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < kBK / 8; ++r) {
          const int d = tid / kBV + 8 * r;
          float s = gl * sS[(d0 + d) * kBV + col];
          for (int j = 0; j < kChunk; ++j) s += sk[j * kLD + d] * sU[j * kLD + col];
          sS[(d0 + d) * kBV + col] = s;
        }
        __syncthreads();
      }
    }
  }

  if (!kStatesOnly && p.ht != nullptr) {
    float* __restrict__ out = static_cast<float*>(p.ht) + nh * KV;
    for (int e = tid; e < K * kBV; e += kThreads) {
      const int d = e / kBV, cc = e % kBV;
      if (cc < vcols) out[int64_t(d) * V + v0 + cc] = sS[e];
    }
  }
}

template <typename T, bool kStatesOnly>
void launch_chunk_fwd(const FwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  const int64_t nh = p.num_seqs * p.value_heads;
  if (nh == 0) return;
  const int k_tiles = static_cast<int>(ceil_div(p.dim_k, kBK));
  const size_t smem = sizeof(float) * static_cast<size_t>(FwdSmem(k_tiles * kBK).total);
  auto kernel = chunk_fwd_kernel<T, kStatesOnly>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(nh), static_cast<unsigned>(ceil_div(p.dim_v, kBV)));
  kernel<<<grid, kThreads, smem, stream>>>(p, ws);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void chunk_forward(const FwdParams& p, cudaStream_t stream) {
  launch_chunk_fwd<typename StorageOf<D>::type, false>(p, BwdWorkspace{}, stream);
}

template <DType D>
void backward_states(const FwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  launch_chunk_fwd<typename StorageOf<D>::type, true>(p, ws, stream);
}

}  // namespace linattn::delta::gpu
