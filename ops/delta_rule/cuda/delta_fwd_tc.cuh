#pragma once
// Tensor-core chunked forward of the (gated) delta rule, fp16 / bf16 inputs, fp32 accumulation and fp32 state.
// Per chunk of L <= 64 rows entering with state S0 (b = in-chunk cumulative log decay, Gamma_i = e^{b_i},
// Dm_ij = e^{b_i - b_j} for j <= i), the SIMT kernel's function rewritten in the WY / UT form:
//   A   = strictly-lower(diag(beta) (K K^T o Dm)),  T = (I + A)^{-1}
//   W   = T diag(beta Gamma) K,  U = T diag(beta) V                    (independent of S0: chunk-parallel)
//   Vn  = U - W S0                                                     (= the SIMT kernel's U)
//   O   = scale diag(Gamma) Q S0 + P Vn,  P = scale (Dm o Q K^T) on and below the diagonal
//   S1  = Gamma_L S0 + K^T diag(Dm_L) Vn
// Two launches:
//  1. tc_ut_kernel, per (chunk slot, value head), every chunk in parallel: K K^T and Q K^T on tensor cores,
//     the decay masks and T = (I + A)^{-1} in fp32 (blocked forward substitution), then W and U on tensor
//     cores. Writes W (input dtype), P (input dtype) and U (fp32) into per-slot workspaces, and T (input dtype)
//     when the backward asks for it (its tensor-core dstates pass, delta_bwd_dstate_tc.cuh, reads P and T).
//  2. tc_state_kernel, per (sequence, value head, 32-column V tile), chunks in order: the fp32 state slice
//     [K x 32] lives in wmma accumulators across chunks; per chunk W S0, Q S0, P Vn and K^T (Dm_L Vn) on
//     tensor cores, the outputs written directly (no per-chunk state workspace). Vn needs all K rows of S0,
//     so K is never split across CTAs; V tiles are independent (the update is column-wise in V).
//
// Precision (the choice and why): every tensor-core operand is rounded once to the input dtype. q, k, v reach
// the tensor cores exactly as given; the row/column factors (beta, Gamma, Dm_L) are folded into the fp32 side
// before rounding: into T (T diag(beta Gamma), T diag(beta)) and into Vn (Dm_L Vn), never into k or v. T is
// inverted in fp32 because the substitution is where errors would compound over 64 dependent rows; rounding
// the finished T once costs one input-precision ulp, the same as rounding W. U stays fp32 in the workspace
// because Vn = U - W S0 can cancel. S0 is rounded for W S0 and Q S0 each chunk, but the carried state never
// leaves fp32, so that rounding does not compound across chunks. Vn does enter the carried state (K^T Vn), so
// in bf16 (8 mantissa bits) it goes to the products as hi + lo, two bf16 operands (see tc_state_kernel); fp16
// keeps one rounding (11 bits). fp16 has 5 exponent bits: each chunk's S0 is scaled by an exact power of two
// from the CTA's max |S0| before the conversion (bf16 skips it). Not guarded:
// fp16 |P| or |W| above 65504 (scores above fp16's range; fla has the same limit).
// Stability: the only exponents are b_i - b_j with j <= i (masked before the exp), b_i and b_L - b_j, all
// <= 0 for log decays, so gates of -20 per step over long sequences underflow to 0 instead of overflowing.
#include <type_traits>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "csrc/cuda/wmma_tiles.cuh"
#include "ops/delta_rule/cuda/delta_common.cuh"

namespace linattn::delta::gpu {
namespace tc {

namespace wt = cuda_utils::wmma_tiles;
namespace wmma = nvcuda::wmma;
using wt::kFrag;

constexpr int kWarps = 4;
constexpr int kThreadsTc = 32 * kWarps;
constexpr int kRowBlocks = kChunk / kFrag;                       // 16-row blocks of a chunk
constexpr int kGramBlocks = kRowBlocks * (kRowBlocks + 1) / 2;   // blocks on and below the diagonal
constexpr int kTileV = static_cast<int>(kTcTileV);               // value columns per state-kernel CTA
constexpr int kColBlocksV = kTileV / kFrag;
constexpr float kFp16Headroom = 14.f;                            // scaled |S0| < 2^14 < fp16 max

static_assert(kRowBlocks == kWarps, "warp w owns chunk rows 16w .. 16w + 15 in every per-row product");
static_assert(kTileV % kFrag == 0, "the V tile must be whole fragments");
static_assert(kChunk == 64, "the gate scan gives two rows to each lane of one warp");

using F32Chunk = wt::SmemTile<float, kChunk, kChunk>;      // [64 x 64] fp32: Gram matrices, A, T
template <typename T>
using HalfChunk = wt::SmemTile<T, kChunk, kChunk>;         // [64 x 64] input dtype: T diag(..), P
template <typename T>
using HalfVTile = wt::SmemTile<T, kChunk, kTileV>;         // [64 x 32] input dtype: Vn, Dm_L Vn
using F32VTile = wt::SmemTile<float, kChunk, kTileV>;      // [64 x 32] fp32: W S0, outputs
using F32Frag = wt::SmemTile<float, kFrag, kFrag>;         // one fragment of per-warp scratch

// sb[i] = g_{t0} + .. + g_{t0+i} (0 without gates; rows i >= L add 0, so sb[63] = b_L), sbeta[i] = beta (0 for
// i >= L). Warp 0 only; the caller synchronises before the block reads them. Both kernels call this, so they
// see the same bits of b (the state kernel's Gamma_L and Dm_L must match the UT kernel's masks).
__device__ __forceinline__ void chunk_gates(float* __restrict__ sb, float* __restrict__ sbeta, const FwdParams& p,
                                            int64_t t0, int64_t hv, int L) {
  const int lane = threadIdx.x % 32, r0 = 2 * lane, r1 = r0 + 1;
  const int64_t HV = p.value_heads;
  const float* __restrict__ beta = static_cast<const float*>(p.beta);
  const float* __restrict__ g = static_cast<const float*>(p.g);
  float x0 = 0.f, x1 = 0.f;
  if (g != nullptr) {
    if (r0 < L) x0 = g[(t0 + r0) * HV + hv];
    if (r1 < L) x1 = g[(t0 + r1) * HV + hv];
  }
  sbeta[r0] = r0 < L ? beta[(t0 + r0) * HV + hv] : 0.f;
  sbeta[r1] = r1 < L ? beta[(t0 + r1) * HV + hv] : 0.f;
  float s = x0 + x1;  // inclusive scan over lanes (a shuffle from lane - off: no __shfl_up needed)
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const float y = __shfl_sync(kFullMask, s, max(lane - off, 0));
    if (lane >= off) s += y;
  }
  float before = __shfl_sync(kFullMask, s, max(lane - 1, 0));
  if (lane == 0) before = 0.f;
  sb[r0] = before + x0;
  sb[r1] = before + x0 + x1;
}

// ---------------------------------------------------------------------------------------------------------
// 1. UT transform, chunk-parallel

template <typename T>
struct UtSmem {  // byte offsets into the realigned dynamic buffer, for K padded to kp and V padded to vp
  int ldk, ldv;
  size_t k, qv, gram_kk, gram_qk, t1, t2, scratch, b, beta, launch_bytes;
  __host__ __device__ UtSmem(int kp, int vp) {
    ldk = wt::padded_ld<T>(kp);
    ldv = wt::padded_ld<T>(vp);
    wt::SmemCarver c;
    k = c.take<T>(int64_t(kChunk) * ldk);  // [64 x kp] keys
    // queries are dead once the Gram products are stored; the values are loaded after that
    const int64_t qv_elems = int64_t(kChunk) * (ldk > ldv ? ldk : ldv);
    qv = c.take<T>(qv_elems);                            // [64 x kp] queries, then [64 x vp] values
    gram_kk = c.take<float>(F32Chunk::kElems);           // K K^T, then A in place
    gram_qk = c.take<float>(F32Chunk::kElems);           // Q K^T, then T (fp32)
    t1 = c.take<T>(HalfChunk<T>::kElems);                // T diag(beta Gamma)
    t2 = c.take<T>(HalfChunk<T>::kElems);                // T diag(beta)
    scratch = c.take<float>(int64_t(kWarps) * F32Frag::kElems);  // one fragment per warp
    b = c.take<float>(kChunk);
    beta = c.take<float>(kChunk);
    launch_bytes = c.launch_bytes();
  }
};

// Block blk (0 .. kGramBlocks - 1) of the lower triangle of 16 x 16 blocks, row by row.
__device__ __forceinline__ void lower_block(int blk, int& i, int& j) {
  i = 0;
  while (blk > i) {
    blk -= i + 1;
    ++i;
  }
  j = blk;
}

// sT <- (I + A)^{-1} for a strictly lower A (both [64 x 64] fp32, ld F32Chunk::kLd), in fp32. Columns of the
// inverse are independent, so the 16 x 16 diagonal blocks are solved one warp each without barriers; the
// off-diagonal blocks follow by distance from the diagonal, T_IJ = -T_II sum_{J <= M < I} A_IM T_MJ, three
// rounds of two barriers. xs: 3 fragments of fp32 scratch. All threads; synchronised on return.
__device__ __forceinline__ void invert_unit_lower(float* __restrict__ sT, const float* __restrict__ sA,
                                                  float* __restrict__ xs) {
  constexpr int ld = F32Chunk::kLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Blocks above the diagonal are 0 (never computed, but later products and the rounding read them).
  for (int e = threadIdx.x; e < kChunk * kChunk; e += kThreadsTc) {
    const int i = e / kChunk, j = e % kChunk;
    if (j / kFrag > i / kFrag) sT[i * ld + j] = 0.f;
  }
  if (lane < kFrag) {  // diagonal block `warp`, column c: forward substitution down that column
    const int o = warp * kFrag, c = lane;
    for (int r = 0; r < kFrag; ++r) {
      float x = r == c ? 1.f : 0.f;
      for (int m = c; m < r; ++m) x -= sA[(o + r) * ld + o + m] * sT[(o + m) * ld + o + c];
      sT[(o + r) * ld + o + c] = x;
    }
  }
  __syncthreads();
  for (int d = 1; d < kRowBlocks; ++d) {
    const int nblk = kRowBlocks - d;  // blocks (J + d, J), J < nblk
    for (int e = threadIdx.x; e < nblk * kFrag * kFrag; e += kThreadsTc) {
      const int J = e / (kFrag * kFrag), r = (e / kFrag) % kFrag, c = e % kFrag, I = J + d;
      float x = 0.f;
      for (int m = J * kFrag; m < I * kFrag; ++m) x += sA[(I * kFrag + r) * ld + m] * sT[m * ld + J * kFrag + c];
      xs[e] = x;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < nblk * kFrag * kFrag; e += kThreadsTc) {
      const int J = e / (kFrag * kFrag), r = (e / kFrag) % kFrag, c = e % kFrag, I = J + d;
      float x = 0.f;
      for (int m = 0; m <= r; ++m) x -= sT[(I * kFrag + r) * ld + I * kFrag + m] * xs[J * kFrag * kFrag + m * kFrag + c];
      sT[(I * kFrag + r) * ld + J * kFrag + c] = x;
    }
    __syncthreads();
  }
}

// dst[i * ldd + c] = (rows 16 rb .., columns c0 .. c0 + 15 of a [64 x lda] row-major half tile a) x (b) where the
// warp's product runs over the causal key blocks jb <= rb: a [64 x 64] lower-triangular operand times a
// [64 x *] row-major tile. Writes the 16 x 16 result (columns < cols) to global memory as Out. Warp-wide.
template <typename T, typename Out>
__device__ __forceinline__ void lower_times_tile(Out* __restrict__ dst, int64_t ldd, const T* __restrict__ a, int lda,
                                                 const T* __restrict__ b, int ldb, int rb, int c0, int cols,
                                                 float* __restrict__ scratch) {
  using Fr = wt::Frag<T>;
  typename Fr::Acc acc;
  wmma::fill_fragment(acc, 0.f);
  for (int jb = 0; jb <= rb; ++jb) {
    typename Fr::ARow fa;
    typename Fr::BRow fb;
    wmma::load_matrix_sync(fa, a + rb * kFrag * lda + jb * kFrag, lda);
    wmma::load_matrix_sync(fb, b + jb * kFrag * ldb + c0, ldb);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(scratch, acc, F32Frag::kLd, wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32;
  for (int e = lane; e < kFrag * kFrag; e += 32) {
    const int r = e / kFrag, c = e % kFrag;
    if (c0 + c < cols) {
      const float x = scratch[r * F32Frag::kLd + c];
      if constexpr (std::is_same_v<Out, float>) {
        dst[int64_t(rb * kFrag + r) * ldd + c0 + c] = x;
      } else {
        dst[int64_t(rb * kFrag + r) * ldd + c0 + c] = from_float<Out>(x);
      }
    }
  }
  __syncwarp();  // the scratch is rewritten by the warp's next call
}

template <typename T>
__global__ void __launch_bounds__(kThreadsTc) tc_ut_kernel(const FwdParams p, const TcFwdWorkspace ws) {
  int64_t n = 0, c = 0;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  using Fr = wt::Frag<T>;
  constexpr int kLdf = F32Chunk::kLd, kLdh = HalfChunk<T>::kLd;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kp = wt::round_up_frag(K), vp = wt::round_up_frag(V), nks = kp / kFrag;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const UtSmem<T> lay(kp, vp);
  const int ldk = lay.ldk, ldv = lay.ldv;
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.qv);
  T* __restrict__ sv = reinterpret_cast<T*>(base + lay.qv);
  float* __restrict__ sA = reinterpret_cast<float*>(base + lay.gram_kk);
  float* __restrict__ sQK = reinterpret_cast<float*>(base + lay.gram_qk);
  float* __restrict__ sT = reinterpret_cast<float*>(base + lay.gram_qk);
  T* __restrict__ st1 = reinterpret_cast<T*>(base + lay.t1);
  T* __restrict__ st2 = reinterpret_cast<T*>(base + lay.t2);
  float* __restrict__ scratch = reinterpret_cast<float*>(base + lay.scratch);
  float* __restrict__ sb = reinterpret_cast<float*>(base + lay.b);
  float* __restrict__ sbeta = reinterpret_cast<float*>(base + lay.beta);

  const int64_t slot = blockIdx.x, hv = blockIdx.y, H = p.heads, HV = p.value_heads, h = hv / (HV / H);
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int nrb = static_cast<int>(ceil_div(L, kFrag));  // row blocks holding real rows
  const int warp = threadIdx.x / 32;
  const float scale = static_cast<float>(p.scale);
  const int64_t qk_tok = H * K, v_tok = HV * V;

  if (warp == 0) chunk_gates(sb, sbeta, p, t0, hv, L);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + t0 * qk_tok + h * K;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + t0 * qk_tok + h * K;
  wt::load_rows_padded<kThreadsTc>(sq, ldk, qh, qk_tok, L, K, kChunk, kp);
  wt::load_rows_padded<kThreadsTc>(sk, ldk, kh, qk_tok, L, K, kChunk, kp);
  __syncthreads();

  // K K^T and Q K^T over the blocks on and below the diagonal (20 block products, 5 per warp).
  for (int task = warp; task < 2 * kGramBlocks; task += kWarps) {
    int ib = 0, jb = 0;
    lower_block(task % kGramBlocks, ib, jb);
    if (ib >= nrb) continue;
    const bool qk = task >= kGramBlocks;
    const T* __restrict__ left = qk ? sq : sk;
    typename Fr::Acc acc;
    wmma::fill_fragment(acc, 0.f);
    for (int ks = 0; ks < nks; ++ks) {
      typename Fr::ARow a;
      typename Fr::BCol b;  // K^T: a column-major view of the row-major key tile
      wmma::load_matrix_sync(a, left + ib * kFrag * ldk + ks * kFrag, ldk);
      wmma::load_matrix_sync(b, sk + jb * kFrag * ldk + ks * kFrag, ldk);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync((qk ? sQK : sA) + ib * kFrag * kLdf + jb * kFrag, acc, kLdf, wmma::mem_row_major);
  }
  __syncthreads();

  // Masks before exps (every exponent b_i - b_j has j <= i); unwritten Gram blocks are never read.
  // P = scale Dm o Q K^T (j <= i < L) goes straight to the workspace; A = beta_i Dm o K K^T (j < i < L) in place.
  T* __restrict__ wp = static_cast<T*>(ws.p) + (slot * HV + hv) * int64_t(kChunk) * kChunk;
  for (int e = threadIdx.x; e < kChunk * kChunk; e += kThreadsTc) {
    const int i = e / kChunk, j = e % kChunk;
    float pij = 0.f, aij = 0.f;
    if (i < L && j <= i) {
      const float dm = expf(sb[i] - sb[j]);
      pij = scale * dm * sQK[i * kLdf + j];
      if (j < i) aij = sbeta[i] * dm * sA[i * kLdf + j];
    }
    wp[e] = from_float<T>(pij);
    sA[i * kLdf + j] = aij;
  }
  __syncthreads();  // Q K^T is dead: T takes its place, and the queries' region takes the values

  const T* __restrict__ vh = static_cast<const T*>(p.v) + t0 * v_tok + hv * V;
  wt::load_rows_padded<kThreadsTc>(sv, ldv, vh, v_tok, L, V, kChunk, vp);
  invert_unit_lower(sT, sA, scratch);

  // Column factors folded into T in fp32, rounded once: W = (T diag(beta Gamma)) K, U = (T diag(beta)) V.
  // The backward also keeps T itself (its pass 2 solves (I + A)^T dR = dU as dR = T^T dU on tensor cores).
  T* __restrict__ wt_out = ws.t != nullptr ? static_cast<T*>(ws.t) + (slot * HV + hv) * int64_t(kChunk) * kChunk
                                           : nullptr;
  for (int e = threadIdx.x; e < kChunk * kChunk; e += kThreadsTc) {
    const int i = e / kChunk, j = e % kChunk;
    const float tij = sT[i * kLdf + j];
    const float t = tij * sbeta[j];
    st1[i * kLdh + j] = from_float<T>(t * expf(sb[j]));
    st2[i * kLdh + j] = from_float<T>(t);
    if (wt_out != nullptr) wt_out[e] = from_float<T>(tij);
  }
  __syncthreads();

  // Warp w takes row block (w + cb) % 4 for column block cb, so the causal work (rb + 1 products) evens out.
  float* __restrict__ my_scratch = scratch + warp * F32Frag::kElems;
  T* __restrict__ ww = static_cast<T*>(ws.w) + (slot * HV + hv) * int64_t(kChunk) * K;
  float* __restrict__ wu = ws.u + (slot * HV + hv) * int64_t(kChunk) * V;
  for (int cb = 0; cb < nks; ++cb) {
    lower_times_tile<T, T>(ww, K, st1, kLdh, sk, ldk, (warp + cb) % kWarps, cb * kFrag, K, my_scratch);
  }
  for (int cb = 0; cb < vp / kFrag; ++cb) {
    lower_times_tile<T, float>(wu, V, st2, kLdh, sv, ldv, (warp + cb) % kWarps, cb * kFrag, V, my_scratch);
  }
}

// ---------------------------------------------------------------------------------------------------------
// 2. states and outputs, sequential over the chunks of a sequence

template <typename T>
struct StateSmem {  // byte offsets into the realigned dynamic buffer, for K padded to kp
  int ldx;
  size_t x, stage, s, s_lo, vn, vd, vn_lo, vd_lo, pm, f32, b, beta, red, launch_bytes;
  // states: the backward's states pass (no P, an S0 residual for the Z product when split).
  __host__ __device__ StateSmem(int kp, bool split, bool states) {
    ldx = wt::padded_ld<T>(kp);
    wt::SmemCarver c;
    // The fp32 state stage is dead once S0 is rounded; W, Q and K are loaded after that, one at a time.
    const int64_t x_bytes = int64_t(kChunk) * ldx * int64_t(sizeof(T));
    const int64_t stage_bytes = int64_t(kp) * F32VTile::kLd * int64_t(sizeof(float));
    x = stage = c.take<char>(x_bytes > stage_bytes ? x_bytes : stage_bytes);
    s = c.take<T>(int64_t(kp) * HalfVTile<T>::kLd);  // [kp x 32] S0 in the input dtype (range-scaled for fp16)
    s_lo = c.take<T>(split && states ? int64_t(kp) * HalfVTile<T>::kLd : 0);  // its rounding residual
    vn = c.take<T>(HalfVTile<T>::kElems);             // [64 x 32] Vn
    vd = c.take<T>(HalfVTile<T>::kElems);             // [64 x 32] Dm_Lj Vn_j
    vn_lo = c.take<T>(split ? HalfVTile<T>::kElems : 0);  // split: the rounding residuals of vn and vd
    vd_lo = c.take<T>(split ? HalfVTile<T>::kElems : 0);
    pm = c.take<T>(states ? 0 : HalfChunk<T>::kElems);  // [64 x 64] P
    f32 = c.take<float>(F32VTile::kElems);            // [64 x 32] W S0, then the output tile
    b = c.take<float>(kChunk);
    beta = c.take<float>(kChunk);
    red = c.take<float>(kWarps);
    launch_bytes = c.launch_bytes();
  }
};

// Warp w holds the state row blocks w, w + 4, .. (< kp / 16) x the kColBlocksV column blocks of its V tile:
// interleaved, so every warp has work at K <= 64 too.
__device__ __forceinline__ int state_row_block(int warp, int r) { return warp + kWarps * r; }

// fp16: exponent e with max |S0| 2^-e < 2^14 (0 for a zero or non-finite max).
__device__ __forceinline__ int fp16_range_exponent(float m) {
  if (!(m > 0.f) || !isfinite(m)) return 0;
  int e = 0;
  frexpf(m, &e);  // m < 2^e
  e -= static_cast<int>(kFp16Headroom);
  return e < -120 ? -120 : (e > 120 ? 120 : e);  // 2^e and 2^-e stay normal floats
}

// fp16: the exponent e such that the CTA-wide max |x| times 2^-e is below 2^14, from the per-warp maxima in
// red[0 .. kWarps - 1] (block_range_max). Read again where it is used (a few shared loads) rather than kept
// live across the tile loads and products, where registers are scarcest (K = 256 runs near the 255 cap).
__device__ __forceinline__ int red_range_exponent(const float* __restrict__ red) {
  float mm = red[0];
  for (int w = 1; w < kWarps; ++w) mm = fmaxf(mm, red[w]);
  return fp16_range_exponent(mm);
}

// red[w] = max of warp w's partial maxima m. All threads; one barrier inside, after which red_range_exponent
// reads the CTA-wide exponent until red is written again.
__device__ __forceinline__ void block_range_max(float m, float* __restrict__ red) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(kFullMask, m, off));
  if (lane == 0) red[warp] = m;
  __syncthreads();
}

// hi[at] = round(x); kSplit: lo[at] = round(x - hi), so hi + lo carries x to about twice the dtype's bits.
template <typename T, bool kSplit>
__device__ __forceinline__ void store_rounded(T* __restrict__ hi, T* __restrict__ lo, int at, float x) {
  const T h = from_float<T>(x);
  hi[at] = h;
  if constexpr (kSplit) lo[at] = from_float<T>(x - to_float(h));
}

// The fp32 [K x V] state of one CTA lives in wmma accumulators across the chunks (acc[r][cb]: row block
// state_row_block(warp, r), column block cb of the V tile) and passes through the fp32 stage ([kp x 32]) to
// enter, to leave and to be rounded once per chunk. These helpers are that traffic, shared by the forward's
// state kernel and the backward's dS kernel, which carry S and dS the same way.

// acc <- src[nh K V + d V + v0 + col] (src == nullptr: 0). Rows >= K and columns >= V are 0 and stay 0 forever
// (their operands are 0). All threads; the stage is free again when it returns. nh and KV come apart (not as
// nh * KV) so that the product stays inside the null check, where the kernels had it: the same code then.
template <typename Acc, int kBlocksPerWarp>
__device__ __forceinline__ void load_state(Acc (&acc)[kBlocksPerWarp][kColBlocksV], float* __restrict__ stage,
                                           const float* __restrict__ src, int64_t nh, int64_t KV, int K, int V,
                                           int v0, int vcols, int kp, int nks, int warp) {
  constexpr int kLdf = F32VTile::kLd;
  for (int e = threadIdx.x; e < kp * kTileV; e += kThreadsTc) {
    const int d = e / kTileV, col = e % kTileV;
    stage[d * kLdf + col] = (src != nullptr && d < K && col < vcols) ? src[nh * KV + int64_t(d) * V + v0 + col] : 0.f;
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < kBlocksPerWarp; ++r) {
    const int rb = state_row_block(warp, r);
#pragma unroll
    for (int cb = 0; cb < kColBlocksV; ++cb) {
      if (rb < nks) {
        wmma::load_matrix_sync(acc[r][cb], stage + rb * kFrag * kLdf + cb * kFrag, kLdf, wmma::mem_row_major);
      } else {
        wmma::fill_fragment(acc[r][cb], 0.f);
      }
    }
  }
}

// stage <- this warp's fragments of acc; kMax (fp16's range scale): returns their max |x| (a max over all
// elements does not depend on the fragment layout), else 0. No barrier.
template <bool kMax, typename Acc, int kBlocksPerWarp>
__device__ __forceinline__ float stage_state(Acc (&acc)[kBlocksPerWarp][kColBlocksV], float* __restrict__ stage,
                                             int nks, int warp) {
  constexpr int kLdf = F32VTile::kLd;
  float mx = 0.f;
#pragma unroll
  for (int r = 0; r < kBlocksPerWarp; ++r) {
    const int rb = state_row_block(warp, r);
#pragma unroll
    for (int cb = 0; cb < kColBlocksV; ++cb) {
      if (rb < nks) {
        wmma::store_matrix_sync(stage + rb * kFrag * kLdf + cb * kFrag, acc[r][cb], kLdf, wmma::mem_row_major);
        if constexpr (kMax) {
          for (int x = 0; x < acc[r][cb].num_elements; ++x) mx = fmaxf(mx, fabsf(acc[r][cb].x[x]));
        }
      }
    }
  }
  return mx;
}

// dst[nh K V + d V + v0 + col] <- the state, rows < K and columns < V. All threads, after the last reads of the
// stage's region (its first barrier waits for them). dst + nh * KV is formed after the barriers, where the
// kernels formed it: passed in formed, it changed ptxas's register assignment.
template <typename Acc, int kBlocksPerWarp>
__device__ __forceinline__ void store_state(Acc (&acc)[kBlocksPerWarp][kColBlocksV], float* __restrict__ stage,
                                            float* dst, int64_t nh, int64_t KV, int K, int V, int v0, int vcols,
                                            int nks, int warp) {
  constexpr int kLdf = F32VTile::kLd;
  __syncthreads();
  stage_state<false>(acc, stage, nks, warp);
  __syncthreads();
  float* __restrict__ out = dst + nh * KV;
  for (int e = threadIdx.x; e < K * kTileV; e += kThreadsTc) {
    const int d = e / kTileV, col = e % kTileV;
    if (col < vcols) out[int64_t(d) * V + v0 + col] = stage[d * kLdf + col];
  }
}

// acc[cb] = A_rb B: row block rb of the row-major [64 x kp] tile a (leading dimension lda) times the [kp x 32]
// tile hi (+ lo with kSplit, the rounding residuals), over the nks 16-deep slices of kp.
template <bool kSplit, typename T, typename Acc>
__device__ __forceinline__ void mma_rows(Acc (&acc)[kColBlocksV], const T* __restrict__ a, int lda, int rb,
                                         int nks, const T* __restrict__ hi, const T* __restrict__ lo) {
  using Fr = wt::Frag<T>;
  constexpr int kLdS = HalfVTile<T>::kLd;
#pragma unroll
  for (int cb = 0; cb < kColBlocksV; ++cb) wmma::fill_fragment(acc[cb], 0.f);
  for (int ks = 0; ks < nks; ++ks) {
    typename Fr::ARow fa;
    wmma::load_matrix_sync(fa, a + rb * kFrag * lda + ks * kFrag, lda);
#pragma unroll
    for (int cb = 0; cb < kColBlocksV; ++cb) {
      typename Fr::BRow fb;
      wmma::load_matrix_sync(fb, hi + ks * kFrag * kLdS + cb * kFrag, kLdS);
      wmma::mma_sync(acc[cb], fa, fb, acc[cb]);
      if constexpr (kSplit) {
        wmma::load_matrix_sync(fb, lo + ks * kFrag * kLdS + cb * kFrag, kLdS);
        wmma::mma_sync(acc[cb], fa, fb, acc[cb]);
      }
    }
  }
}

// acc[cb] += sum over chunk row blocks jb in [jb0, nrb) of (A^T)_{rb, jb} B_jb: A^T read as a column-major view
// of the row-major tile a (leading dimension lda), B the [64 x 32] tile hi (+ lo with kSplit).
template <bool kSplit, typename T, typename Acc>
__device__ __forceinline__ void mma_t_rows(Acc (&acc)[kColBlocksV], const T* __restrict__ a, int lda, int rb,
                                           int jb0, int nrb, const T* __restrict__ hi, const T* __restrict__ lo) {
  using Fr = wt::Frag<T>;
  constexpr int kLdS = HalfVTile<T>::kLd;
  for (int jb = jb0; jb < nrb; ++jb) {
    typename Fr::ACol fa;
    wmma::load_matrix_sync(fa, a + jb * kFrag * lda + rb * kFrag, lda);
#pragma unroll
    for (int cb = 0; cb < kColBlocksV; ++cb) {
      typename Fr::BRow fb;
      wmma::load_matrix_sync(fb, hi + jb * kFrag * kLdS + cb * kFrag, kLdS);
      wmma::mma_sync(acc[cb], fa, fb, acc[cb]);
      if constexpr (kSplit) {
        wmma::load_matrix_sync(fb, lo + jb * kFrag * kLdS + cb * kFrag, kLdS);
        wmma::mma_sync(acc[cb], fa, fb, acc[cb]);
      }
    }
  }
}

// frow[.., cb * 16 ..] <- acc[cb]: a warp's 16 fp32 rows of a [64 x 32] product.
template <typename Acc>
__device__ __forceinline__ void store_rows(float* __restrict__ frow, Acc (&acc)[kColBlocksV]) {
#pragma unroll
  for (int cb = 0; cb < kColBlocksV; ++cb) {
    wmma::store_matrix_sync(frow + cb * kFrag, acc[cb], F32VTile::kLd, wmma::mem_row_major);
  }
}

// kRangeScale (fp16): S0 scaled by a power of two before rounding. kSplit (bf16): Vn and Dm_L Vn are passed as
// hi + lo (both rounded) to the P Vn and K^T (Dm_L Vn) products, which keeps a bf16 rounding of Vn out of the
// carried state (it compounded over the chunks of a sequence).
// kStates: the backward's states pass (what the SIMT chunk_fwd_kernel<T, true> stores, same meaning): no o, no
// ht; per chunk the entering fp32 state -> bws.states, Vn (the SIMT kernel's U) -> bws.u and
// Z = diag(Gamma) K S0 -> bws.z, rows < L only. Z is the one product the forward does not form; with kSplit
// its S0 goes in as hi + lo too, because pass 3 subtracts Z from v (dbeta, dk) and a bf16 rounding of S0 would
// be the largest error there.
template <typename T, int kBlocksPerWarp, bool kRangeScale, bool kSplit, bool kStates>
__global__ void __launch_bounds__(kThreadsTc, 1) tc_state_kernel(const FwdParams p, const TcFwdWorkspace ws,
                                                               const BwdWorkspace bws) {
  static_assert(kBlocksPerWarp >= 1 && kBlocksPerWarp * kWarps * kFrag <= int(kMaxHeadDim),
                "kBlocksPerWarp state row blocks per warp must cover K <= 256 with 4 warps");
  using Fr = wt::Frag<T>;
  constexpr int kLdS = HalfVTile<T>::kLd, kLdf = F32VTile::kLd, kLdp = HalfChunk<T>::kLd;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kp = wt::round_up_frag(K), nks = kp / kFrag;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const StateSmem<T> lay(kp, kSplit, kStates);
  const int ldx = lay.ldx;
  T* __restrict__ sx = reinterpret_cast<T*>(base + lay.x);
  float* __restrict__ stage = reinterpret_cast<float*>(base + lay.stage);
  T* __restrict__ ss = reinterpret_cast<T*>(base + lay.s);
  T* __restrict__ ss_lo = reinterpret_cast<T*>(base + lay.s_lo);
  T* __restrict__ svn = reinterpret_cast<T*>(base + lay.vn);
  T* __restrict__ svd = reinterpret_cast<T*>(base + lay.vd);
  T* __restrict__ svn_lo = reinterpret_cast<T*>(base + lay.vn_lo);
  T* __restrict__ svd_lo = reinterpret_cast<T*>(base + lay.vd_lo);
  T* __restrict__ sp = reinterpret_cast<T*>(base + lay.pm);
  float* __restrict__ sf = reinterpret_cast<float*>(base + lay.f32);
  float* __restrict__ sb = reinterpret_cast<float*>(base + lay.b);
  float* __restrict__ sbeta = reinterpret_cast<float*>(base + lay.beta);
  float* __restrict__ red = reinterpret_cast<float*>(base + lay.red);

  const int64_t H = p.heads, HV = p.value_heads, nh = blockIdx.x, n = nh / HV, hv = nh % HV, h = hv / (HV / H);
  const int v0 = blockIdx.y * kTileV, vcols = min(kTileV, V - v0);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float scale = static_cast<float>(p.scale);
  const SeqSpan seq = seq_span(p, n);
  const int64_t nchunks = ceil_div(seq.len, kChunk), slot0 = slot_base(seq.bos, n);
  const int64_t KV = int64_t(K) * V, qk_tok = H * K, v_tok = HV * V;
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * K;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * K;

  typename Fr::Acc acc[kBlocksPerWarp][kColBlocksV];  // S <- h0 (or 0)
  load_state(acc, stage, static_cast<const float*>(p.h0), nh, KV, K, V, v0, vcols, kp, nks, warp);

  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t t0 = seq.bos + c * kChunk, slot = slot0 + c;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    const int nrb = static_cast<int>(ceil_div(L, kFrag));
    __syncthreads();  // the last chunk's products are done with the stage / x region and the gates
    stage_state<false>(acc, stage, nks, warp);
    if (warp == 0) chunk_gates(sb, sbeta, p, t0, hv, L);
    __syncthreads();

    // S0 -> the input dtype (fp16: scaled by 2^-e first, undone in fp32 after the products).
    float range_down = 1.f, range_up = 1.f;
    if constexpr (kRangeScale) {
      float m = 0.f;
      for (int e = threadIdx.x; e < kp * kTileV; e += kThreadsTc) m = fmaxf(m, fabsf(stage[(e / kTileV) * kLdf + e % kTileV]));
      block_range_max(m, red);
      const int ex = red_range_exponent(red);
      range_down = ldexpf(1.f, -ex);
      range_up = ldexpf(1.f, ex);
    }
    float* __restrict__ states_out = kStates ? bws.states + (slot * HV + hv) * KV + v0 : nullptr;
    for (int e = threadIdx.x; e < kp * kTileV; e += kThreadsTc) {
      const int d = e / kTileV, col = e % kTileV;
      const float x = stage[d * kLdf + col];
      const T hi = from_float<T>(x * range_down);
      ss[d * kLdS + col] = hi;
      if constexpr (kStates) {
        if constexpr (kSplit) ss_lo[d * kLdS + col] = from_float<T>(x * range_down - to_float(hi));
        if (d < K && col < vcols) states_out[int64_t(d) * V + col] = x;
      }
    }
    __syncthreads();  // the stage is dead: W takes the region

    const int64_t wsl = slot * HV + hv;
    wt::load_rows_padded<kThreadsTc>(sx, ldx, static_cast<const T*>(ws.w) + wsl * kChunk * K, K, kChunk, K, kChunk,
                                     kp);
    if constexpr (!kStates) {
      wt::load_rows_padded<kThreadsTc>(sp, kLdp, static_cast<const T*>(ws.p) + wsl * kChunk * kChunk, kChunk, kChunk,
                                       kChunk, kChunk, kChunk);
    }
    __syncthreads();

    // Warp w: rows 16w .. of Vn = U - W S0 (fp32), then Vn and Dm_L Vn rounded for the products below.
    {
      const int rb = warp;
      float* __restrict__ frow = sf + rb * kFrag * kLdf;
      if (rb < nrb) {
        typename Fr::Acc ws0[kColBlocksV];
        mma_rows<false>(ws0, sx, ldx, rb, nks, ss, ss_lo);
        store_rows(frow, ws0);
      }
      __syncwarp();
      const float* __restrict__ u = ws.u + wsl * kChunk * V + v0;
      const float bl = sb[kChunk - 1];
      for (int e = lane; e < kFrag * kTileV; e += 32) {
        const int i = rb * kFrag + e / kTileV, col = e % kTileV;
        float x = 0.f;
        if (i < L && col < vcols) x = u[int64_t(i) * V + col] - range_up * frow[(e / kTileV) * kLdf + col];
        if constexpr (kStates) {
          if (i < L && col < vcols) bws.u[(t0 + i) * v_tok + hv * V + v0 + col] = x;
        }
        const float xd = x * expf(bl - sb[i]);
        const T hn = from_float<T>(x), hd = from_float<T>(xd);
        svn[i * kLdS + col] = hn;
        svd[i * kLdS + col] = hd;
        if constexpr (kSplit) {
          svn_lo[i * kLdS + col] = from_float<T>(x - to_float(hn));
          svd_lo[i * kLdS + col] = from_float<T>(xd - to_float(hd));
        }
      }
    }
    __syncthreads();  // W is dead: Q (the states pass: K) takes the region; every warp's Vn rows are ready

    if constexpr (!kStates) {
      wt::load_rows_padded<kThreadsTc>(sx, ldx, qh + t0 * qk_tok, qk_tok, L, K, kChunk, kp);
      __syncthreads();

      // Warp w: output rows 16w ..: scale Gamma_i (Q S0)_i in fp32, then + sum_{jb <= w} P_{w,jb} Vn_jb.
      {
        const int rb = warp;
        float* __restrict__ frow = sf + rb * kFrag * kLdf;
        if (rb < nrb) {
          typename Fr::Acc o[kColBlocksV];
          mma_rows<false>(o, sx, ldx, rb, nks, ss, ss_lo);
          store_rows(frow, o);
          __syncwarp();
          for (int e = lane; e < kFrag * kTileV; e += 32) {
            const int r = e / kTileV, col = e % kTileV;
            frow[r * kLdf + col] *= scale * expf(sb[rb * kFrag + r]) * range_up;
          }
          __syncwarp();
#pragma unroll
          for (int cb = 0; cb < kColBlocksV; ++cb) {
            wmma::load_matrix_sync(o[cb], frow + cb * kFrag, kLdf, wmma::mem_row_major);
            for (int jb = 0; jb <= rb; ++jb) {
              typename Fr::ARow a;
              typename Fr::BRow b;
              wmma::load_matrix_sync(a, sp + rb * kFrag * kLdp + jb * kFrag, kLdp);
              wmma::load_matrix_sync(b, svn + jb * kFrag * kLdS + cb * kFrag, kLdS);
              wmma::mma_sync(o[cb], a, b, o[cb]);
              if constexpr (kSplit) {
                wmma::load_matrix_sync(b, svn_lo + jb * kFrag * kLdS + cb * kFrag, kLdS);
                wmma::mma_sync(o[cb], a, b, o[cb]);
              }
            }
            wmma::store_matrix_sync(frow + cb * kFrag, o[cb], kLdf, wmma::mem_row_major);
          }
          __syncwarp();
          T* __restrict__ oh = static_cast<T*>(p.o) + t0 * v_tok + hv * V + v0;
          for (int e = lane; e < kFrag * kTileV; e += 32) {
            const int r = e / kTileV, col = e % kTileV, i = rb * kFrag + r;
            if (i < L && col < vcols) oh[int64_t(i) * v_tok + col] = from_float<T>(frow[r * kLdf + col]);
          }
        }
      }
      __syncthreads();  // Q is dead: K takes the region
    }  // !kStates

    wt::load_rows_padded<kThreadsTc>(sx, ldx, kh + t0 * qk_tok, qk_tok, L, K, kChunk, kp);
    __syncthreads();

    if constexpr (kStates) {  // Warp w: rows 16w .. of Z = diag(Gamma) K S0 (its own rows of sf, as for Vn)
      const int rb = warp;
      float* __restrict__ frow = sf + rb * kFrag * kLdf;
      if (rb < nrb) {
        typename Fr::Acc z[kColBlocksV];
        mma_rows<kSplit>(z, sx, ldx, rb, nks, ss, ss_lo);
        store_rows(frow, z);
        // The range scale again from red (unchanged since this chunk's max): keeping range_up live across the
        // loads made ptxas 13.0 spill it on sm_90a.
        float z_up = 1.f;
        if constexpr (kRangeScale) z_up = ldexpf(1.f, red_range_exponent(red));
        __syncwarp();
        for (int e = lane; e < kFrag * kTileV; e += 32) {
          const int r = e / kTileV, col = e % kTileV, i = rb * kFrag + r;
          if (i < L && col < vcols) {
            bws.z[(t0 + i) * v_tok + hv * V + v0 + col] = z_up * expf(sb[i]) * frow[r * kLdf + col];
          }
        }
      }
    }

    // S <- Gamma_L S + K^T (Dm_L Vn): the decay is a uniform scale, legal on any fragment layout.
    const float decay = expf(sb[kChunk - 1]);
#pragma unroll
    for (int r = 0; r < kBlocksPerWarp; ++r) {
      const int rb = state_row_block(warp, r);
      if (rb < nks) {
#pragma unroll
        for (int cb = 0; cb < kColBlocksV; ++cb) wt::scale_fragment(acc[r][cb], decay);
        mma_t_rows<kSplit>(acc[r], sx, ldx, rb, 0, nrb, svd, svd_lo);  // K^T: the key tile read column-major
      }
    }
  }

  if (kStates || p.ht == nullptr) return;  // uniform over the block; the final update read the x region last
  store_state(acc, stage, static_cast<float*>(p.ht), nh, KV, K, V, v0, vcols, nks, warp);
}

template <typename T, int kBlocksPerWarp, bool kStates>
void launch_state(const FwdParams& p, const TcFwdWorkspace& ws, const BwdWorkspace& bws, cudaStream_t stream) {
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const size_t smem = StateSmem<T>(wt::round_up_frag(p.dim_k), !kFp16, kStates).launch_bytes;
  auto kernel = tc_state_kernel<T, kBlocksPerWarp, kFp16, !kFp16, kStates>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(p.num_seqs * p.value_heads), static_cast<unsigned>(ceil_div(p.dim_v, kTileV)));
  kernel<<<grid, kThreadsTc, smem, stream>>>(p, ws, bws);
  LINATTN_CHECK_LAUNCH();
}

// kStates: the backward's states pass into bws (see tc_state_kernel); otherwise the forward's o and ht.
template <typename T, bool kStates>
void launch(const FwdParams& p, const TcFwdWorkspace& ws, const BwdWorkspace& bws, cudaStream_t stream) {
  if (p.num_seqs * p.value_heads == 0) return;
  const int64_t slots = num_state_slots(p);
  if (p.batch * p.seqlen > 0 && slots > 0) {
    const size_t smem = UtSmem<T>(wt::round_up_frag(p.dim_k), wt::round_up_frag(p.dim_v)).launch_bytes;
    auto kernel = tc_ut_kernel<T>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(p.value_heads));
    kernel<<<grid, kThreadsTc, smem, stream>>>(p, ws);
    LINATTN_CHECK_LAUNCH();
  }
  // Accumulator fragments per warp follow K: whole kernels for K <= 64, 128, 256 keep the arrays static.
  const int kp = wt::round_up_frag(p.dim_k);
  if (kp <= kWarps * kFrag) {
    launch_state<T, 1, kStates>(p, ws, bws, stream);
  } else if (kp <= 2 * kWarps * kFrag) {
    launch_state<T, 2, kStates>(p, ws, bws, stream);
  } else {
    launch_state<T, 4, kStates>(p, ws, bws, stream);
  }
}

}  // namespace tc

template <DType D>
void chunk_forward_tc(const FwdParams& p, const TcFwdWorkspace& ws, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core forward takes fp16 or bf16 inputs");
  tc::launch<typename StorageOf<D>::type, false>(p, ws, BwdWorkspace{}, stream);
}

template <DType D>
void backward_states_tc(const FwdParams& p, const TcFwdWorkspace& tws, const BwdWorkspace& ws, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core states pass takes fp16 or bf16 inputs");
  tc::launch<typename StorageOf<D>::type, true>(p, tws, ws, stream);
}

}  // namespace linattn::delta::gpu
