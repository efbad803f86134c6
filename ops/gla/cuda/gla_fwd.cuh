#pragma once
// Chunked GLA forward on CUDA (fp32 SIMT). One CTA of 256 threads per (sequence, head, 32-column V tile):
// the V columns of the state are independent, so each CTA keeps its [K x 32] slice of S in shared memory
// and walks the chunks of its sequence in order. Per chunk (rows 0..L-1, b = in-chunk cumulative gate):
//   o_i = scale * [ (q_i e^{b_i})^T S + sum_{j<=i} A_ij v_j ],  A_ij = sum_d q_id k_jd e^{b_id - b_jd}
//   S  <- e^{bL} S + sum_j (k_j e^{bL - b_j}) v_j^T
// K is processed in tiles of 32 columns: per K tile the CTA adds to A (registers), adds the inter-chunk
// term with the old state rows of that tile, then advances those rows. With kStatesOnly the same kernel
// skips the output and stores the state entering every chunk (and the final state) into the backward's
// workspace instead.
#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "ops/gla/cuda/gla_common.cuh"

namespace linattn::gla::gpu {

// Dynamic shared memory of chunk_fwd_kernel, in floats, for Kp = K rounded up to 32.
struct FwdSmem {
  int s, q, k, b, qg, kg, v, seg, dec, total;
  __host__ __device__ explicit FwdSmem(int kp) {
    s = 0;                    // [Kp x kBV] state slice
    q = s + kp * kBV;         // [64 x kLD] q tile
    k = q + kChunk * kLD;     // [64 x kLD] k tile
    b = k + kChunk * kLD;     // [64 x kLD] cumulative gates
    qg = b + kChunk * kLD;    // [64 x kLD] re-based q, then scale * q e^{b}; with kg: the [64 x kLDA] scores
    kg = qg + kChunk * kLD;   // [96 x kLD] re-based keys, then k e^{bL - b} (first 64 rows)
    v = kg + kKgRows * kLD;   // [64 x kBV] v tile
    seg = v + kChunk * kBV;   // [kSegs x kBK] scan scratch
    dec = seg + kSegs * kBK;  // [kBK] e^{bL}
    total = dec + kBK;
  }
};
static_assert(kChunk * kLD + kKgRows * kLD >= kChunk * kLDA, "the score tile must fit in the qg + kg region");

// Eight consecutive outputs of one row with Liger's mix (FwdParams::o_mix): lin_w * x + mix_w * o_mix, one
// rounding. Out of line on purpose: with this store inlined behind the branch on o_mix, nvcc 13 gave the fp16 /
// bf16 kernels 128 registers and 20-28 bytes of spills (80 and none before the hook, 80 and none this way).
struct Float8 {
  float v[8];
};

template <typename T>
__device__ __noinline__ void store_mixed8(const FwdParams& p, T* __restrict__ orow, const T* __restrict__ mrow,
                                          Float8 x, int c0, int vcols) {
#pragma unroll
  for (int m = 0; m < 8; ++m) {
    const int col = c0 + m;
    if (col < vcols) orow[col] = output_value<T>(p, mrow, col, x.v[m]);
  }
}

template <typename T, bool kStatesOnly>
__global__ void __launch_bounds__(kThreads)
    chunk_fwd_kernel(const FwdParams p, float* __restrict__ states_ws) {
  extern __shared__ float smem[];
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int k_tiles = static_cast<int>(ceil_div(K, kBK));
  const FwdSmem lay(k_tiles * kBK);
  float* __restrict__ sS = smem + lay.s;
  float* __restrict__ sq = smem + lay.q;
  float* __restrict__ sk = smem + lay.k;
  float* __restrict__ sb = smem + lay.b;
  float* __restrict__ sqg = smem + lay.qg;
  float* __restrict__ skg = smem + lay.kg;
  float* __restrict__ sA = smem + lay.qg;  // aliases qg + kg once the K loop is done
  float* __restrict__ sv = smem + lay.v;
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
  const int64_t state_off = nh * KV;  // (n * H + h) * K * V

  // S <- h0 (or 0); rows >= K and columns >= V stay 0.
  const float* __restrict__ h0 = static_cast<const float*>(p.h0);
  state_to_slice(sS, h0, state_off, K, V, v0, vcols, k_tiles * kBK);
  __syncthreads();

  const int64_t nchunks = ceil_div(seq.len, kChunk);
  const int64_t base = slot_base(seq.bos, n);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride + v0;

  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t t0 = seq.bos + c * kChunk;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    if (kStatesOnly) {
      slice_to_state(states_ws + ((base + c) * H + h) * KV, sS, K, V, v0, vcols);
    }
    load_row_tile<T, kBV>(sv, kBV, vh + t0 * p.v_tok_stride, p.v_tok_stride, L, vcols);

    float acc[kSub];
    float oacc[8];
#pragma unroll
    for (int m = 0; m < kSub; ++m) acc[m] = 0.f;
#pragma unroll
    for (int m = 0; m < 8; ++m) oacc[m] = 0.f;
    const int row = tid % kChunk, cgrp = tid / kChunk;  // output mapping: row, columns cgrp*8 .. cgrp*8+7

    for (int kt = 0; kt < k_tiles; ++kt) {
      const int d0 = kt * kBK;
      const int kcols = min(kBK, K - d0);
      if (!kStatesOnly) load_row_tile<T, kBK>(sq, kLD, qh + t0 * p.q_tok_stride + d0, p.q_tok_stride, L, kcols);
      load_row_tile<T, kBK>(sk, kLD, kh + t0 * p.k_tok_stride + d0, p.k_tok_stride, L, kcols);
      load_gate_tile(sb, p, t0, h, d0, L, kcols);
      __syncthreads();
      column_scan<false>(sb, sseg);  // b = in-chunk cumulative gate; ends synchronised

      if (!kStatesOnly) {
        rebase_tiles(sq, sk, sb, sqg, skg);
        __syncthreads();
        accumulate_scores(acc, sq, sk, sb, sqg, skg);
        __syncthreads();  // qg / kg are overwritten next
      }
      // Inter-chunk factors: scale * q e^{b} (into qg), k e^{bL - b} (into kg), e^{bL}.
      for (int e = tid; e < kChunk * kBK; e += kThreads) {
        const int i = e / kBK, d = e % kBK;
        const float bi = sb[i * kLD + d], bl = sb[(kChunk - 1) * kLD + d];
        if (!kStatesOnly) sqg[i * kLD + d] = scale * sq[i * kLD + d] * expf(bi);
        skg[i * kLD + d] = sk[i * kLD + d] * expf(bl - bi);
      }
      if (tid < kBK) sdec[tid] = expf(sb[(kChunk - 1) * kLD + tid]);
      __syncthreads();

      if (!kStatesOnly) {
        // o_i += (scale q_i e^{b_i}) . S[d0 .. d0+31, :] with the state before this chunk.
        for (int d = 0; d < kBK; ++d) {
          const float x = sqg[row * kLD + d];
          const float* __restrict__ srow = sS + (d0 + d) * kBV + cgrp * 8;
#pragma unroll
          for (int m = 0; m < 8; ++m) oacc[m] += x * srow[m];
        }
        __syncthreads();  // the state rows are advanced next
      }
      // S[d0 + d][col] <- e^{bL_d} S + sum_j (k_j e^{bL - b_j})_d v_j[col]
      {
        const int col = tid % kBV;
#pragma unroll
        for (int r = 0; r < kBK / 8; ++r) {
          const int d = tid / kBV + 8 * r;
          float s = sdec[d] * sS[(d0 + d) * kBV + col];
          for (int j = 0; j < kChunk; ++j) s += skg[j * kLD + d] * sv[j * kBV + col];
          sS[(d0 + d) * kBV + col] = s;
        }
      }
      __syncthreads();
    }

    if (!kStatesOnly) {
      store_scores(sA, acc, scale);
      __syncthreads();
      // o_i += sum_j A_ij v_j (A is 0 above the diagonal and in padded rows / columns).
      for (int j = 0; j < kChunk; ++j) {
        const float a = sA[row * kLDA + j];
        const float* __restrict__ vrow = sv + j * kBV + cgrp * 8;
#pragma unroll
        for (int m = 0; m < 8; ++m) oacc[m] += a * vrow[m];
      }
      if (row < L) {
        const int64_t off = (t0 + row) * p.v_tok_stride + h * p.v_head_stride + v0;
        T* __restrict__ orow = static_cast<T*>(p.o) + off;
        if (p.o_mix == nullptr) {
#pragma unroll
          for (int m = 0; m < 8; ++m) {
            const int col = cgrp * 8 + m;
            if (col < vcols) orow[col] = from_float<T>(oacc[m]);
          }
        } else {
          const Float8 x = {{oacc[0], oacc[1], oacc[2], oacc[3], oacc[4], oacc[5], oacc[6], oacc[7]}};
          store_mixed8<T>(p, orow, static_cast<const T*>(p.o_mix) + off, x, cgrp * 8, vcols);
        }
      }
      __syncthreads();  // sv and the score tile are reloaded by the next chunk
    }
  }

  float* __restrict__ out = nullptr;
  if (kStatesOnly) {
    out = states_ws + ((base + nchunks) * H + h) * KV;
  } else if (p.ht != nullptr) {
    out = static_cast<float*>(p.ht) + state_off;
  }
  if (out != nullptr) slice_to_state(out, sS, K, V, v0, vcols);
}

template <typename T, bool kStatesOnly>
void launch_chunk_fwd(const FwdParams& p, float* states_ws, cudaStream_t stream) {
  const int64_t nh = p.num_seqs * p.heads;
  if (nh == 0) return;
  const int k_tiles = static_cast<int>(ceil_div(p.dim_k, kBK));
  const size_t smem = sizeof(float) * static_cast<size_t>(FwdSmem(k_tiles * kBK).total);
  auto kernel = chunk_fwd_kernel<T, kStatesOnly>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(nh), static_cast<unsigned>(ceil_div(p.dim_v, kBV)));
  kernel<<<grid, kThreads, smem, stream>>>(p, states_ws);
  LINATTN_CHECK_LAUNCH();
}

template <DType D>
void chunk_forward(const FwdParams& p, cudaStream_t stream) {
  launch_chunk_fwd<typename StorageOf<D>::type, false>(p, nullptr, stream);
}

}  // namespace linattn::gla::gpu
