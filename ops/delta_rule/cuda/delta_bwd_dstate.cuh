#pragma once
// Backward pass 2 (fp32 SIMT): the reverse sweep over the chunks of every sequence. One CTA of 256 threads
// per (sequence, value head, 32-column V tile) keeps its [K x 32] slice of dS (the gradient w.r.t. the state
// leaving the current chunk, starting at dht) in shared memory. Everything that carries dS from one chunk to
// the previous one is column-wise in V, so V tiles are independent. Per chunk, in reverse order:
//   ws.dstates[slot] <- dS
//   dU = scale P^T dO + diag(Dm_L) K dS          (P = Dm o Q K^T, Dm_Lj = e^{b_L - b_j})
//   dR = (I + M)^{-T} dU                          back substitution; stored in ws.dr for pass 3
//   dS <- Gamma_L dS + (scale diag(Gamma) Q)^T dO - (diag(beta Gamma) K)^T dR
// and finally dh0 = dS.
#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/delta_rule/cuda/delta_common.cuh"

namespace linattn::delta::gpu {

struct DStateSmem {
  int ds, q, k, dout, du, m, pm, b, gam, beta, graw, fk, total;
  __host__ __device__ explicit DStateSmem(int kp) {
    ds = 0;                   // [Kp x kBV] dS slice
    q = ds + kp * kBV;        // [64 x kLD] q tile, then scale Gamma_i q_i
    k = q + kChunk * kLD;     // [64 x kLD] k tile, then -beta_i Gamma_i k_i
    dout = k + kChunk * kLD;  // [64 x kLD] do tile
    du = dout + kChunk * kLD;  // [64 x kLD] dU, then dR
    m = du + kChunk * kLD;    // [64 x kLDA] M
    pm = m + kChunk * kLDA;   // [64 x kLDA] P
    b = pm + kChunk * kLDA;   // [64] cumulative log decays
    gam = b + kChunk;         // [64] Gamma
    beta = gam + kChunk;      // [64] beta
    graw = beta + kChunk;     // [64] raw log decays, then scale Gamma_i
    fk = graw + kChunk;       // [64] -beta_i Gamma_i
    total = fk + kChunk;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) chunk_bwd_dstate_kernel(const BwdParams p, const BwdWorkspace ws) {
  extern __shared__ float smem[];
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int k_tiles = static_cast<int>(ceil_div(K, kBK));
  const DStateSmem lay(k_tiles * kBK);
  float* __restrict__ sdS = smem + lay.ds;
  float* __restrict__ sq = smem + lay.q;
  float* __restrict__ sk = smem + lay.k;
  float* __restrict__ sdo = smem + lay.dout;
  float* __restrict__ sdu = smem + lay.du;
  float* __restrict__ sM = smem + lay.m;
  float* __restrict__ sP = smem + lay.pm;
  float* __restrict__ sb = smem + lay.b;
  float* __restrict__ sgam = smem + lay.gam;
  float* __restrict__ sbeta = smem + lay.beta;
  float* __restrict__ sfac = smem + lay.graw;

  const int64_t H = p.heads, HV = p.value_heads;
  const int64_t nh = blockIdx.x;
  const int64_t n = nh / HV, hv = nh % HV, h = hv / (HV / H);
  const int v0 = blockIdx.y * kBV;
  const int vcols = min(kBV, V - v0);
  const int tid = threadIdx.x;
  const int row = tid % kChunk, cg = tid / kChunk;
  const float scale = static_cast<float>(p.scale);
  const SeqSpan seq = seq_span(p, n);
  const int64_t KV = int64_t(K) * V;
  const int64_t q_tok = H * K, v_tok = HV * V;

  load_state_smem(sdS, static_cast<const float*>(p.dht), nh, KV, K, V, v0, vcols, k_tiles * kBK * kBV);

  const int64_t nchunks = ceil_div(seq.len, kChunk);
  const int64_t base = slot_base(seq.bos, n);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * K;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * K;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + hv * V + v0;

  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t t0 = seq.bos + c * kChunk;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    {
      float* __restrict__ dst = ws.dstates + ((base + c) * HV + hv) * KV;
      for (int e = tid; e < K * kBV; e += kThreads) {
        const int d = e / kBV, cc = e % kBV;
        if (cc < vcols) dst[int64_t(d) * V + v0 + cc] = sdS[e];
      }
    }
    load_row_tile<T>(sdo, doh + t0 * v_tok, v_tok, L, vcols);
    load_chunk_gates(p, t0, hv, L, sbeta, sb, sgam, sfac);

    float akk[kBlk], aqk[kBlk], akds[8];
#pragma unroll
    for (int m = 0; m < kBlk; ++m) akk[m] = aqk[m] = 0.f;
#pragma unroll
    for (int m = 0; m < 8; ++m) akds[m] = 0.f;
    for (int kt = 0; kt < k_tiles; ++kt) {
      const int d0 = kt * kBK, kcols = min(kBK, K - d0);
      load_row_tile<T>(sk, kh + t0 * q_tok + d0, q_tok, L, kcols);
      load_row_tile<T>(sq, qh + t0 * q_tok + d0, q_tok, L, kcols);
      __syncthreads();
      accumulate_gram<true>(akk, aqk, sq, sk);
      for (int d = 0; d < kBK; ++d) {
        const float ki = sk[row * kLD + d];
        const float* __restrict__ drow = sdS + (d0 + d) * kBV + cg * 8;
#pragma unroll
        for (int m = 0; m < 8; ++m) akds[m] += ki * drow[m];
      }
      __syncthreads();
    }
    store_gram<false>(sM, akk, sb, sbeta);
    store_gram<true>(sP, aqk, sb, nullptr);
    __syncthreads();

    // dU_i = scale sum_{j>=i} P_ji do_j + Dm_Li (k_i . dS)
    {
      const float dli = expf(sb[kChunk - 1] - sb[row]);
      float acc[8];
#pragma unroll
      for (int m = 0; m < 8; ++m) acc[m] = 0.f;
      for (int j = row; j < kChunk; ++j) {
        const float a = sP[j * kLDA + row];
        const float* __restrict__ drow = sdo + j * kLD + cg * 8;
#pragma unroll
        for (int m = 0; m < 8; ++m) acc[m] += a * drow[m];
      }
#pragma unroll
      for (int m = 0; m < 8; ++m) sdu[row * kLD + cg * 8 + m] = scale * acc[m] + dli * akds[m];
    }
    __syncthreads();
    back_substitute(sdu, sM, L);
    __syncthreads();
    if (row < L) {
      float* __restrict__ drow = ws.dr + (t0 + row) * v_tok + hv * V + v0;
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        const int col = cg * 8 + m;
        if (col < vcols) drow[col] = sdu[row * kLD + col];
      }
    }

    // dS <- Gamma_L dS + sum_i (scale Gamma_i q_i) do_i^T + (-beta_i Gamma_i k_i) dr_i^T
    {
      const float gl = sgam[kChunk - 1];
      float* __restrict__ sfk = smem + lay.fk;
      if (tid < kChunk) {
        sfac[tid] = scale * sgam[tid];
        sfk[tid] = -sbeta[tid] * sgam[tid];
      }
      __syncthreads();
      const int col = tid % kBV;
      for (int kt = 0; kt < k_tiles; ++kt) {
        const int d0 = kt * kBK, kcols = min(kBK, K - d0);
        load_row_tile<T>(sq, qh + t0 * q_tok + d0, q_tok, L, kcols, sfac);
        load_row_tile<T>(sk, kh + t0 * q_tok + d0, q_tok, L, kcols, sfk);
        __syncthreads();
#pragma unroll
        for (int r = 0; r < kBK / 8; ++r) {
          const int d = tid / kBV + 8 * r;
          float s = gl * sdS[(d0 + d) * kBV + col];
          for (int i = 0; i < kChunk; ++i) s += sq[i * kLD + d] * sdo[i * kLD + col] + sk[i * kLD + d] * sdu[i * kLD + col];
          sdS[(d0 + d) * kBV + col] = s;
        }
        __syncthreads();
      }
    }
  }

  if (p.dh0 != nullptr) {
    float* __restrict__ out = static_cast<float*>(p.dh0) + nh * KV;
    for (int e = tid; e < K * kBV; e += kThreads) {
      const int d = e / kBV, cc = e % kBV;
      if (cc < vcols) out[int64_t(d) * V + v0 + cc] = sdS[e];
    }
  }
}

template <DType D>
void backward_dstates(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  using T = typename StorageOf<D>::type;
  const int64_t nh = p.num_seqs * p.value_heads;
  if (nh == 0) return;
  const int k_tiles = static_cast<int>(ceil_div(p.dim_k, kBK));
  const size_t smem = sizeof(float) * static_cast<size_t>(DStateSmem(k_tiles * kBK).total);
  auto kernel = chunk_bwd_dstate_kernel<T>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(nh), static_cast<unsigned>(ceil_div(p.dim_v, kBV)));
  kernel<<<grid, kThreads, smem, stream>>>(p, ws);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace linattn::delta::gpu
