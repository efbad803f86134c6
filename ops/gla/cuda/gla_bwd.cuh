#pragma once
// Chunked GLA backward on CUDA (fp32 SIMT), shared by the chunked and the recurrent ops. Four passes:
//  1. states (chunk_fwd_kernel<kStatesOnly>): per (seq, head, V tile), the state entering every chunk and
//     the final state, into ws.states[slot] (slots: see num_state_slots in gla_launch.h).
//  2. dstates: per (seq, head, V tile), in reverse chunk order, dS = gradient w.r.t. the state leaving the
//     chunk (starts at dht): ws.dstates[slot] <- dS, then dS <- e^{bL} dS + sum_i (scale q_i e^{b_i}) do_i^T;
//     finally dh0 = dS.
//  3. dv: per (chunk slot, V tile, head), independent chunks: dv = A^T do + (k e^{bL - b}) dS.
//  4. dqk: per (chunk slot, K tile, head):
//       D  = scale * do v^T (lower triangle)
//       dq = scale e^{b} (do S0^T) + intra_q(D),  dk = e^{bL - b} (v dS^T) + intra_k(D)
//       dg_i = sum_{i' >= i in chunk} (q dq - k dk)_{i'} + rowsum(dS * S1)
//     with S0 / S1 the states entering / leaving the chunk. The last term is the reverse cumsum of
//     q dq - k dk over all later chunks plus rowsum(dht * S_T) of the CPU kernel: for any token t,
//     rowsum(dS'_t * S_t) = rowsum(dS'_{t+1} * S_{t+1}) + (q dq - k dk)_{t+1}, with dS'_t the gradient of
//     S_t from the tokens after t (and dht). dg over K for scalar gates: per-K-tile partial sums, reduced by
//     a 5th small kernel when K > 32.
#include <algorithm>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/gla/cuda/gla_common.cuh"
#include "ops/gla/cuda/gla_fwd.cuh"

namespace linattn::gla::gpu {

// ---------------------------------------------------------------------------------------------------------
// 2. dstates

struct DStateSmem {
  int ds, q, b, dout, seg, dec, total;
  __host__ __device__ explicit DStateSmem(int kp) {
    ds = 0;                    // [Kp x kBV] dS slice
    q = ds + kp * kBV;         // [64 x kLD] q tile, then scale * q e^{b}
    b = q + kChunk * kLD;      // [64 x kLD] cumulative gates
    dout = b + kChunk * kLD;   // [64 x kBV] do tile
    seg = dout + kChunk * kBV;  // scan scratch
    dec = seg + kSegs * kBK;   // [kBK] e^{bL}
    total = dec + kBK;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) chunk_bwd_dstate_kernel(const BwdParams p, float* __restrict__ dstates) {
  extern __shared__ float smem[];
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int k_tiles = static_cast<int>(ceil_div(K, kBK));
  const DStateSmem lay(k_tiles * kBK);
  float* __restrict__ sdS = smem + lay.ds;
  float* __restrict__ sq = smem + lay.q;
  float* __restrict__ sb = smem + lay.b;
  float* __restrict__ sdo = smem + lay.dout;
  float* __restrict__ sseg = smem + lay.seg;
  float* __restrict__ sdec = smem + lay.dec;

  const int64_t H = p.heads;
  const int64_t nh = blockIdx.x;
  const int64_t n = nh / H, h = nh % H;
  const int v0 = blockIdx.y * kBV;
  const int vcols = min(kBV, V - v0);
  const int tid = threadIdx.x;
  const float scale = static_cast<float>(p.scale);
  const SeqSpan seq = seq_span(p, n);
  const int64_t KV = int64_t(K) * V;
  const int64_t state_off = nh * KV;

  const float* __restrict__ dht = static_cast<const float*>(p.dht);
  state_to_slice(sdS, dht, state_off, K, V, v0, vcols, k_tiles * kBK);
  __syncthreads();

  const int64_t nchunks = ceil_div(seq.len, kChunk);
  const int64_t base = slot_base(seq.bos, n);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride + v0;
  const float do_scale = static_cast<float>(p.do_scale);

  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t t0 = seq.bos + c * kChunk;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    slice_to_state(dstates + ((base + c) * H + h) * KV, sdS, K, V, v0, vcols);
    load_row_tile<T, kBV>(sdo, kBV, doh + t0 * p.v_tok_stride, p.v_tok_stride, L, vcols, do_scale);
    for (int kt = 0; kt < k_tiles; ++kt) {
      const int d0 = kt * kBK;
      const int kcols = min(kBK, K - d0);
      load_row_tile<T, kBK>(sq, kLD, qh + t0 * p.q_tok_stride + d0, p.q_tok_stride, L, kcols);
      load_gate_tile(sb, p, t0, h, d0, L, kcols);
      __syncthreads();
      column_scan<false>(sb, sseg);
      for (int e = tid; e < kChunk * kBK; e += kThreads) {
        const int i = e / kBK, d = e % kBK;
        sq[i * kLD + d] *= scale * expf(sb[i * kLD + d]);
      }
      if (tid < kBK) sdec[tid] = expf(sb[(kChunk - 1) * kLD + tid]);
      __syncthreads();
      const int col = tid % kBV;
#pragma unroll
      for (int r = 0; r < kBK / 8; ++r) {
        const int d = tid / kBV + 8 * r;
        float s = sdec[d] * sdS[(d0 + d) * kBV + col];
        for (int i = 0; i < kChunk; ++i) s += sq[i * kLD + d] * sdo[i * kBV + col];
        sdS[(d0 + d) * kBV + col] = s;
      }
      __syncthreads();
    }
  }

  if (p.dh0 != nullptr) slice_to_state(static_cast<float*>(p.dh0) + state_off, sdS, K, V, v0, vcols);
}

// ---------------------------------------------------------------------------------------------------------
// 3. dv

struct DvSmem {
  int q, k, b, qg, kg, dout, ds, seg, total;
  __host__ __device__ DvSmem() {
    q = 0;                       // [64 x kLD]
    k = q + kChunk * kLD;        // [64 x kLD]
    b = k + kChunk * kLD;        // [64 x kLD] cumulative gates
    qg = b + kChunk * kLD;       // [64 x kLD] re-based q; with kg: the [64 x kLDA] scores after the K loop
    kg = qg + kChunk * kLD;      // [96 x kLD] re-based keys, then k e^{bL - b} (first 64 rows)
    dout = kg + kKgRows * kLD;   // [64 x kBV] do tile
    ds = dout + kChunk * kBV;    // [kBK x kBV] dS block
    seg = ds + kBK * kBV;        // scan scratch
    total = seg + kSegs * kBK;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    chunk_bwd_dv_kernel(const BwdParams p, const float* __restrict__ dstates) {
  int64_t n, c;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  extern __shared__ float smem[];
  const DvSmem lay;
  float* __restrict__ sq = smem + lay.q;
  float* __restrict__ sk = smem + lay.k;
  float* __restrict__ sb = smem + lay.b;
  float* __restrict__ sqg = smem + lay.qg;
  float* __restrict__ skg = smem + lay.kg;
  float* __restrict__ sA = smem + lay.qg;
  float* __restrict__ sdo = smem + lay.dout;
  float* __restrict__ sdS = smem + lay.ds;
  float* __restrict__ sseg = smem + lay.seg;

  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int k_tiles = static_cast<int>(ceil_div(K, kBK));
  const int64_t H = p.heads;
  const int64_t h = blockIdx.z;
  const int64_t slot = blockIdx.x;
  const int v0 = blockIdx.y * kBV;
  const int vcols = min(kBV, V - v0);
  const int tid = threadIdx.x;
  const float scale = static_cast<float>(p.scale);
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const float* __restrict__ dS = dstates + (slot * H + h) * int64_t(K) * V;

  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + t0 * p.q_tok_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + t0 * p.k_tok_stride;
  load_row_tile<T, kBV>(sdo, kBV, static_cast<const T*>(p.do_) + h * p.v_head_stride + t0 * p.v_tok_stride + v0,
                        p.v_tok_stride, L, vcols, static_cast<float>(p.do_scale));

  float acc[kSub];
  float dvacc[8];
#pragma unroll
  for (int m = 0; m < kSub; ++m) acc[m] = 0.f;
#pragma unroll
  for (int m = 0; m < 8; ++m) dvacc[m] = 0.f;
  const int row = tid % kChunk, cgrp = tid / kChunk;

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int d0 = kt * kBK;
    const int kcols = min(kBK, K - d0);
    load_row_tile<T, kBK>(sq, kLD, qh + d0, p.q_tok_stride, L, kcols);
    load_row_tile<T, kBK>(sk, kLD, kh + d0, p.k_tok_stride, L, kcols);
    load_gate_tile(sb, p, t0, h, d0, L, kcols);
    load_state_tile(sdS, dS, V, d0, v0, kcols, vcols);
    __syncthreads();
    column_scan<false>(sb, sseg);
    rebase_tiles(sq, sk, sb, sqg, skg);
    __syncthreads();
    accumulate_scores(acc, sq, sk, sb, sqg, skg);
    __syncthreads();
    for (int e = tid; e < kChunk * kBK; e += kThreads) {
      const int i = e / kBK, d = e % kBK;
      skg[i * kLD + d] = sk[i * kLD + d] * expf(sb[(kChunk - 1) * kLD + d] - sb[i * kLD + d]);
    }
    __syncthreads();
    // dv_j += (k_j e^{bL - b_j}) . dS[d0 .. d0+31, :]
    for (int d = 0; d < kBK; ++d) {
      const float x = skg[row * kLD + d];
      const float* __restrict__ srow = sdS + d * kBV + cgrp * 8;
#pragma unroll
      for (int m = 0; m < 8; ++m) dvacc[m] += x * srow[m];
    }
    __syncthreads();
  }
  store_scores(sA, acc, scale);
  __syncthreads();
  // dv_j += sum_{i >= j} A_ij do_i (A is 0 above the diagonal).
  for (int i = 0; i < kChunk; ++i) {
    const float a = sA[i * kLDA + row];
    const float* __restrict__ drow = sdo + i * kBV + cgrp * 8;
#pragma unroll
    for (int m = 0; m < 8; ++m) dvacc[m] += a * drow[m];
  }
  if (row < L) {
    T* __restrict__ dvrow = static_cast<T*>(p.dv) + (t0 + row) * p.v_tok_stride + h * p.v_head_stride + v0;
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const int col = cgrp * 8 + m;
      if (col < vcols) dvrow[col] = from_float<T>(dvacc[m]);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// 4. dq, dk, dg

constexpr int kLDV = kBV + 1;  // leading dim of the do / v tiles of the dqk kernel (rows read per lane)

struct DqkSmem {
  // V loop: dout, v, s0, ds, s1; after it the same region holds D, qg, kg.
  int dout, v, s0, ds, s1, dmat, qg, kg, q, k, b, seg, carry, total;
  __host__ __device__ DqkSmem() {
    dout = 0;                      // [64 x kLDV] do tile
    v = dout + kChunk * kLDV;      // [64 x kLDV] v tile
    s0 = v + kChunk * kLDV;        // [kBK x kBV] state entering the chunk
    ds = s0 + kBK * kBV;           // [kBK x kBV] gradient of the state leaving the chunk
    s1 = ds + kBK * kBV;           // [kBK x kBV] state leaving the chunk
    dmat = 0;                      // [64 x kLDA] D = scale * do v^T (lower)
    qg = dmat + kChunk * kLDA;     // [64 x kLD] re-based q, then q dq - k dk and its suffix sums
    kg = qg + kChunk * kLD;        // [96 x kLD] re-based keys
    const int region = (s1 + kBK * kBV) > (kg + kKgRows * kLD) ? (s1 + kBK * kBV) : (kg + kKgRows * kLD);
    q = region;                    // [64 x kLD]
    k = q + kChunk * kLD;          // [64 x kLD]
    b = k + kChunk * kLD;          // [64 x kLD] cumulative gates
    seg = b + kChunk * kLD;        // scan scratch
    carry = seg + kSegs * kBK;     // [kBK] rowsum(dS * S1)
    total = carry + kBK;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    chunk_bwd_dqk_kernel(const BwdParams p, const float* __restrict__ states, const float* __restrict__ dstates,
                         float* __restrict__ dg_partial) {
  int64_t n, c;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  extern __shared__ float smem[];
  const DqkSmem lay;
  float* __restrict__ sdo = smem + lay.dout;
  float* __restrict__ sv = smem + lay.v;
  float* __restrict__ sS0 = smem + lay.s0;
  float* __restrict__ sdS = smem + lay.ds;
  float* __restrict__ sS1 = smem + lay.s1;
  float* __restrict__ sD = smem + lay.dmat;
  float* __restrict__ sqg = smem + lay.qg;
  float* __restrict__ skg = smem + lay.kg;
  float* __restrict__ sq = smem + lay.q;
  float* __restrict__ sk = smem + lay.k;
  float* __restrict__ sb = smem + lay.b;
  float* __restrict__ sseg = smem + lay.seg;
  float* __restrict__ scarry = smem + lay.carry;

  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int64_t H = p.heads;
  const int64_t h = blockIdx.z;
  const int64_t slot = blockIdx.x;
  const int kt = blockIdx.y;
  const int d0 = kt * kBK;
  const int kcols = min(kBK, K - d0);
  const int tid = threadIdx.x;
  const float scale = static_cast<float>(p.scale);
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int64_t KV = int64_t(K) * V;
  const float* __restrict__ S0 = states + (slot * H + h) * KV;
  const float* __restrict__ S1 = states + ((slot + 1) * H + h) * KV;  // the next slot: state leaving the chunk
  const float* __restrict__ dS = dstates + (slot * H + h) * KV;

  const int row = tid % kChunk, grp = tid / kChunk, rb = row / kSub;  // grp: key block (D) or 8 K columns
  const int crow = tid / 8, clane = tid % 8;                          // carry mapping: K row, lane
  float Dacc[kSub], dqi[8], dki[8];
#pragma unroll
  for (int m = 0; m < kSub; ++m) Dacc[m] = 0.f;
#pragma unroll
  for (int m = 0; m < 8; ++m) dqi[m] = dki[m] = 0.f;
  float carry = 0.f;

  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride + t0 * p.v_tok_stride;
  const float do_scale = static_cast<float>(p.do_scale);
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride + t0 * p.v_tok_stride;
  const int v_tiles = static_cast<int>(ceil_div(V, kBV));
  for (int vt = 0; vt < v_tiles; ++vt) {
    const int c0 = vt * kBV;
    const int vcols = min(kBV, V - c0);
    load_row_tile<T, kBV>(sdo, kLDV, doh + c0, p.v_tok_stride, L, vcols, do_scale);
    load_row_tile<T, kBV>(sv, kLDV, vh + c0, p.v_tok_stride, L, vcols);
    load_state_tile(sS0, S0, V, d0, c0, kcols, vcols);
    load_state_tile(sdS, dS, V, d0, c0, kcols, vcols);
    load_state_tile(sS1, S1, V, d0, c0, kcols, vcols);
    __syncthreads();
    // D[row][16 grp + jj] += do_row . v_j  (blocks on or below the diagonal; masked to j <= row on store)
    if (rb >= grp) {
      for (int cc = 0; cc < kBV; ++cc) {
        const float x = sdo[row * kLDV + cc];
#pragma unroll
        for (int jj = 0; jj < kSub; ++jj) Dacc[jj] += x * sv[(grp * kSub + jj) * kLDV + cc];
      }
    }
    // dq_inter[row][d] += do_row . S0[d, :];  dk_inter[row][d] += v_row . dS[d, :]   (d = 8 grp + m)
    for (int cc = 0; cc < kBV; ++cc) {
      const float x = sdo[row * kLDV + cc], y = sv[row * kLDV + cc];
#pragma unroll
      for (int m = 0; m < 8; ++m) {
        dqi[m] += x * sS0[(grp * 8 + m) * kBV + cc];
        dki[m] += y * sdS[(grp * 8 + m) * kBV + cc];
      }
    }
    for (int cc = clane; cc < kBV; cc += 8) carry += sdS[crow * kBV + cc] * sS1[crow * kBV + cc];
    __syncthreads();
  }
  // The 8 lanes of a carry row are consecutive lanes of one warp.
  carry += __shfl_xor_sync(0xffffffffu, carry, 4);
  carry += __shfl_xor_sync(0xffffffffu, carry, 2);
  carry += __shfl_xor_sync(0xffffffffu, carry, 1);
  if (clane == 0) scarry[crow] = carry;

  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + t0 * p.q_tok_stride + d0;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + t0 * p.k_tok_stride + d0;
  load_row_tile<T, kBK>(sq, kLD, qh, p.q_tok_stride, L, kcols);
  load_row_tile<T, kBK>(sk, kLD, kh, p.k_tok_stride, L, kcols);
  load_gate_tile(sb, p, t0, h, d0, L, kcols);
  store_scores(sD, Dacc, scale);  // D = scale * do v^T, zero above the diagonal
  __syncthreads();
  column_scan<false>(sb, sseg);
  rebase_tiles(sq, sk, sb, sqg, skg);
  __syncthreads();

  float dq[8], dk[8];
  const int p0 = rb * kSub;  // first row of this row's secondary chunk
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    const int d = grp * 8 + m;
    const float bi = sb[row * kLD + d];
    const float bl = sb[(kChunk - 1) * kLD + d];
    // dq_row: diagonal block elementwise (j in p0..row), below it via the keys re-based to p0.
    float q_diag = 0.f;
    for (int j = p0; j <= row; ++j) q_diag += sD[row * kLDA + j] * sk[j * kLD + d] * expf(bi - sb[j * kLD + d]);
    float q_off = 0.f;
    if (rb > 0) {
      const float* __restrict__ kgb = skg + kg_offset(rb) * kLD;
      for (int j = 0; j < p0; ++j) q_off += sD[row * kLDA + j] * kgb[j * kLD + d];
      q_off *= expf(bi - sb[p0 * kLD + d]);
    }
    dq[m] = scale * expf(bi) * dqi[m] + q_diag + q_off;
    // dk_row (the row as a key j): diagonal block elementwise (i in row..block end), and for every later
    // query block ib with first row p: e^{b_p - b_j} sum_i D_ij (q_i e^{b_i - b_p}).
    float k_diag = 0.f;
    for (int i = row; i < p0 + kSub; ++i) k_diag += sD[i * kLDA + row] * sq[i * kLD + d] * expf(sb[i * kLD + d] - bi);
    float k_off = 0.f;
    for (int ib = rb + 1; ib < kNumSub; ++ib) {
      const int pb = ib * kSub;
      float part = 0.f;
#pragma unroll 4
      for (int i = pb; i < pb + kSub; ++i) part += sD[i * kLDA + row] * sqg[i * kLD + d];
      k_off += expf(sb[pb * kLD + d] - bi) * part;
    }
    dk[m] = expf(bl - bi) * dki[m] + k_diag + k_off;
  }

  if (row < L) {
    T* __restrict__ dqrow = static_cast<T*>(p.dq) + (t0 + row) * p.q_tok_stride + h * p.q_head_stride + d0;
    T* __restrict__ dkrow = static_cast<T*>(p.dk) + (t0 + row) * p.k_tok_stride + h * p.k_head_stride + d0;
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const int d = grp * 8 + m;
      if (d < kcols) {
        dqrow[d] = from_float<T>(dq[m]);
        dkrow[d] = from_float<T>(dk[m]);
      }
    }
  }
  if (p.dg == nullptr) return;  // uniform over the block

  __syncthreads();  // everyone is done reading qg
  float* __restrict__ sdg = sqg;
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    const int d = grp * 8 + m;
    sdg[row * kLD + d] = sq[row * kLD + d] * dq[m] - sk[row * kLD + d] * dk[m];
  }
  __syncthreads();
  column_scan<true>(sdg, sseg);  // suffix sums within the chunk

  float* __restrict__ dg = static_cast<float*>(p.dg);
  if (!p.dg_sum_k) {
    const int64_t Kl = K;
    for (int e = tid; e < kChunk * kBK; e += kThreads) {
      const int i = e / kBK, d = e % kBK;
      if (i < L && d < kcols) dg[((t0 + i) * H + h) * Kl + d0 + d] = sdg[i * kLD + d] + scarry[d];
    }
  } else {
    // Sum over this K tile's columns: 4 consecutive lanes per row, 8 columns each (padded columns are 0).
    const int i = tid / 4, part = tid % 4;
    float s = 0.f;
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const int d = part * 8 + m;
      s += sdg[i * kLD + d] + scarry[d];
    }
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if (part == 0 && i < L) {
      if (gridDim.y == 1) {
        dg[(t0 + i) * H + h] = s;
      } else {
        dg_partial[(int64_t(kt) * p.batch * p.seqlen + t0 + i) * H + h] = s;
      }
    }
  }
}

// 5. dg[e] = sum_kt dg_partial[kt][e] (scalar gates with K > 32). A template (with no real parameter) so
// that the three dtype instantiation units including this header share one weak definition instead of
// each defining the same strong symbol (a non-template __global__ in a header fails to link).
template <int kUnused = 0>
__global__ void __launch_bounds__(256)
    dg_reduce_kernel(const float* __restrict__ partial, float* __restrict__ dg, int64_t count, int k_tiles) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int kt = 0; kt < k_tiles; ++kt) s += partial[int64_t(kt) * count + e];
    dg[e] = s;
  }
}

static_assert(kThreads == kChunk * 4, "the dg row sums map 4 lanes to each of the 64 rows");

template <typename T>
void launch_chunk_backward(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  const int64_t nh = p.num_seqs * p.heads;
  if (nh == 0) return;
  const int k_tiles = static_cast<int>(ceil_div(p.dim_k, kBK));
  const int v_tiles = static_cast<int>(ceil_div(p.dim_v, kBV));
  const int64_t slots = num_state_slots(p);

  // 1. chunk-start states (and final states).
  launch_chunk_fwd<T, true>(p, ws.states, stream);

  // 2. state gradients, reverse over chunks; dh0.
  {
    const size_t smem = sizeof(float) * static_cast<size_t>(DStateSmem(k_tiles * kBK).total);
    auto kernel = chunk_bwd_dstate_kernel<T>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<dim3(static_cast<unsigned>(nh), static_cast<unsigned>(v_tiles)), kThreads, smem, stream>>>(p, ws.dstates);
    LINATTN_CHECK_LAUNCH();
  }
  if (p.batch * p.seqlen == 0) return;  // no tokens: nothing but dh0

  // 3. dv.
  {
    const size_t smem = sizeof(float) * static_cast<size_t>(DvSmem().total);
    auto kernel = chunk_bwd_dv_kernel<T>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(v_tiles), static_cast<unsigned>(p.heads));
    kernel<<<grid, kThreads, smem, stream>>>(p, ws.dstates);
    LINATTN_CHECK_LAUNCH();
  }
  // 4. dq, dk, dg.
  {
    const size_t smem = sizeof(float) * static_cast<size_t>(DqkSmem().total);
    auto kernel = chunk_bwd_dqk_kernel<T>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(k_tiles), static_cast<unsigned>(p.heads));
    kernel<<<grid, kThreads, smem, stream>>>(p, ws.states, ws.dstates, ws.dg_partial);
    LINATTN_CHECK_LAUNCH();
  }
  // 5. dg summed over K tiles.
  if (p.dg != nullptr && p.dg_sum_k && k_tiles > 1) {
    const int64_t count = p.batch * p.seqlen * p.heads;
    const int64_t blocks = std::min<int64_t>(ceil_div(count, 256), 65535);
    dg_reduce_kernel<><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(ws.dg_partial, static_cast<float*>(p.dg),
                                                                        count, k_tiles);
    LINATTN_CHECK_LAUNCH();
  }
}

template <DType D>
void chunk_backward(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  launch_chunk_backward<typename StorageOf<D>::type>(p, ws, stream);
}

}  // namespace linattn::gla::gpu
