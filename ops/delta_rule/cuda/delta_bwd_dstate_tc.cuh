#pragma once
// Backward pass 2 of the (gated) delta rule on tensor cores, fp16 / bf16 inputs: the reverse sweep of
// delta_bwd_dstate.cuh, with the same outputs and meaning (ws.dstates, ws.dr, dh0), so pass 3 reads them
// unchanged. One CTA of 128 threads per (sequence, value head, 32-column V tile) walks the sequence's chunks in
// reverse; its fp32 [K x 32] slice of dS (the gradient w.r.t. the state leaving the chunk; dht at the start)
// lives in wmma accumulators across chunks, warp w holding the row blocks w, w + 4, .. (as tc_state_kernel
// holds S). With P = scale (Dm o Q K^T) and T = (I + A)^{-1} as pass 1's tc_ut_kernel left them, per chunk:
//   ws.dstates[slot] <- dS
//   dU  = P^T dO + diag(Dm_L) K dS                    (Dm_Lj = e^{b_L - b_j})
//   dR  = T^T dU                                       (the SIMT pass's back substitution (I + A)^T dR = dU)
//   dS <- Gamma_L dS + Q^T diag(scale Gamma) dO - K^T diag(beta Gamma) dR
// and dh0 = dS at the end. V tiles are independent (every term is column-wise in V); K is never split (dU
// needs all of it).
//
// What it reads (the choice and why): P and T from the tensor-core workspace of pass 1, q, k, do from the
// inputs. The SIMT pass rebuilds K K^T, Q K^T and both decay masks in every chunk for every V tile and then
// back-substitutes over 64 dependent rows; here those become two 8 KB loads and one block-triangular product.
// T is the one addition to that workspace ([slots, HV, 64, 64] in the input dtype, ~128 bytes per token and
// value head, written by tc_ut_kernel when TcFwdWorkspace::t is set). W and U are not read: W^T dU equals
// K^T diag(beta Gamma) dR, and k is already staged for K dS.
//
// Precision (the choice and why): dS stays fp32 in the accumulators; q, k, do, P and T reach the tensor cores
// as they are (P and T were rounded once by pass 1, like the forward's operands). Four fp32 quantities go
// through 16-bit products every chunk: dS (K dS), dU (T^T dU), diag(beta Gamma) dR (K^T ..) and
// diag(scale Gamma) do (Q^T ..), the last two adding to the carry directly, the first two through dR. The row
// factors inside a contraction (scale Gamma_i, beta_i Gamma_i) are folded into the [64 x 32] operand, never
// into q or k; the ones on product rows (Dm_L for dU) are applied in fp32. bf16 (8 bits) passes each of the
// four as hi + lo, two bf16 operands (as the forward does for Vn): in a float64 model of this pass at
// K = V = 128, T = 2048 with gates, rounding them once gives a max error of ~2.6e-3 of max |dh0| (nearly all
// from the do operand), hi + lo ~2.5e-4, what P and T leave. fp16 (11 bits) rounds each once (~3e-4
// there), dS, dU and dR after scaling by an exact power of two from the CTA-wide max (|dS| grows with T
// without decay, |dR| with |T|; both can pass 65504), undone in fp32 on the products; the carry is scaled
// down and back up around the K^T product (powers of two: exact). The errors stay flat in T: every rounding
// adds to dS once and is decayed or projected by the later chunks like any other contribution.
#include <stdexcept>
#include <type_traits>

#include "ops/delta_rule/cuda/delta_fwd_tc.cuh"

namespace linattn::delta::gpu {
namespace tc {

template <typename T>
struct DStateSmemTc {  // byte offsets into the realigned dynamic buffer, for K padded to kp
  int ldk;
  size_t x, stage, q, ds, ds_lo, pm, tm, dout, dos, dos_lo, du, du_lo, f32, b, beta, red, launch_bytes;
  __host__ __device__ DStateSmemTc(int kp, bool split) {
    ldk = wt::padded_ld<T>(kp);
    wt::SmemCarver c;
    // The fp32 dS stage is dead once dS is rounded; K is loaded into its region after that.
    const int64_t k_bytes = int64_t(kChunk) * ldk * int64_t(sizeof(T));
    const int64_t stage_bytes = int64_t(kp) * F32VTile::kLd * int64_t(sizeof(float));
    x = stage = c.take<char>(k_bytes > stage_bytes ? k_bytes : stage_bytes);
    q = c.take<T>(int64_t(kChunk) * ldk);  // [64 x kp] queries
    // [kp x 32] dS for K dS; once dU is formed, [64 x 32] -diag(beta Gamma) dR for K^T (..) takes its place.
    const int64_t ds_rows = kp > kChunk ? kp : kChunk;
    ds = c.take<T>(ds_rows * HalfVTile<T>::kLd);
    ds_lo = c.take<T>(split ? ds_rows * HalfVTile<T>::kLd : 0);  // split: the rounding residuals
    pm = c.take<T>(HalfChunk<T>::kElems);         // [64 x 64] P
    tm = c.take<T>(HalfChunk<T>::kElems);         // [64 x 64] T
    dout = c.take<T>(HalfVTile<T>::kElems);       // [64 x 32] do
    dos = c.take<T>(HalfVTile<T>::kElems);        // [64 x 32] scale Gamma_i do_i
    dos_lo = c.take<T>(split ? HalfVTile<T>::kElems : 0);
    du = c.take<T>(HalfVTile<T>::kElems);         // [64 x 32] dU (range-scaled for fp16)
    du_lo = c.take<T>(split ? HalfVTile<T>::kElems : 0);
    f32 = c.take<float>(F32VTile::kElems);        // [64 x 32] dU, then dR, in fp32
    b = c.take<float>(kChunk);
    beta = c.take<float>(kChunk);
    red = c.take<float>(3 * kWarps);              // per-warp maxima of dS, dU, dR (fp16)
    launch_bytes = c.launch_bytes();
  }
};

// kRangeScale (fp16) and kSplit (bf16): see the precision notes at the top.
template <typename T, int kBlocksPerWarp, bool kRangeScale, bool kSplit>
__global__ void __launch_bounds__(kThreadsTc, 1) tc_dstate_kernel(const BwdParams p, const TcFwdWorkspace ws,
                                                                const BwdWorkspace bws) {
  static_assert(kBlocksPerWarp >= 1 && kBlocksPerWarp * kWarps * kFrag <= int(kMaxHeadDim),
                "kBlocksPerWarp dS row blocks per warp must cover K <= 256 with 4 warps");
  static_assert(kColBlocksV * kFrag == kTileV, "a warp's 16 chunk rows are kColBlocksV fragments of the V tile");
  static_assert(kThreadsTc % kTileV == 0, "the dS conversion gives each thread one column of the V tile");
  using Fr = wt::Frag<T>;
  constexpr int kLdS = HalfVTile<T>::kLd, kLdf = F32VTile::kLd, kLdc = HalfChunk<T>::kLd;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kp = wt::round_up_frag(K), nks = kp / kFrag;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const DStateSmemTc<T> lay(kp, kSplit);
  const int ldk = lay.ldk;
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.x);
  float* __restrict__ stage = reinterpret_cast<float*>(base + lay.stage);
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sds = reinterpret_cast<T*>(base + lay.ds);
  T* __restrict__ sds_lo = reinterpret_cast<T*>(base + lay.ds_lo);
  T* __restrict__ sdr = reinterpret_cast<T*>(base + lay.ds);  // dS's region, once dU is formed
  T* __restrict__ sdr_lo = reinterpret_cast<T*>(base + lay.ds_lo);
  T* __restrict__ sp = reinterpret_cast<T*>(base + lay.pm);
  T* __restrict__ st = reinterpret_cast<T*>(base + lay.tm);
  T* __restrict__ sdo = reinterpret_cast<T*>(base + lay.dout);
  T* __restrict__ sdos = reinterpret_cast<T*>(base + lay.dos);
  T* __restrict__ sdos_lo = reinterpret_cast<T*>(base + lay.dos_lo);
  T* __restrict__ sdu = reinterpret_cast<T*>(base + lay.du);
  T* __restrict__ sdu_lo = reinterpret_cast<T*>(base + lay.du_lo);
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
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + hv * V + v0;
  float* __restrict__ frow = sf + warp * kFrag * kLdf;  // the fp32 rows 16 w .. of dU / dR belong to warp w

  typename Fr::Acc acc[kBlocksPerWarp][kColBlocksV];  // dS <- dht (or 0)
  load_state(acc, stage, static_cast<const float*>(p.dht), nh, KV, K, V, v0, vcols, kp, nks, warp);

  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t t0 = seq.bos + c * kChunk, wsl = (slot0 + c) * HV + hv;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    const int nrb = static_cast<int>(ceil_div(L, kFrag));
    __syncthreads();  // the last chunk's products are done with K (the stage's region), dR and the gates
    const float mx = stage_state<kRangeScale>(acc, stage, nks, warp);  // fp16: max |dS| from the accumulators
    if (warp == 0) chunk_gates(sb, sbeta, p, t0, hv, L);
    float* __restrict__ red_ds = red;  // the fp16 maxima of dS, dU and dR (one group of kWarps slots each)
    float* __restrict__ red_du = red + kWarps;
    float* __restrict__ red_dr = red + 2 * kWarps;
    if constexpr (kRangeScale) {
      block_range_max(mx, red_ds);
    } else {
      __syncthreads();
    }

    // dS leaves in fp32 for pass 3 and goes to the K dS product in 16 bits (fp16: range-scaled first).
    {
      float* __restrict__ ds_out = bws.dstates + wsl * KV + v0;
      const float down = kRangeScale ? ldexpf(1.f, -red_range_exponent(red_ds)) : 1.f;
      const int col = threadIdx.x % kTileV;
      for (int d = threadIdx.x / kTileV; d < kp; d += kThreadsTc / kTileV) {
        const float x = stage[d * kLdf + col];
        if (d < K && col < vcols) ds_out[int64_t(d) * V + col] = x;
        store_rounded<T, kSplit>(sds, sds_lo, d * kLdS + col, x * down);
      }
    }
    __syncthreads();  // the stage is dead: K takes its region

    wt::load_rows_padded<kThreadsTc>(sk, ldk, kh + t0 * qk_tok, qk_tok, L, K, kChunk, kp);
    wt::load_rows_padded<kThreadsTc>(sq, ldk, qh + t0 * qk_tok, qk_tok, L, K, kChunk, kp);
    wt::load_rows_padded<kThreadsTc>(sdo, kLdS, doh + t0 * v_tok, v_tok, L, vcols, kChunk, kTileV);
    wt::load_rows_padded<kThreadsTc>(sp, kLdc, static_cast<const T*>(ws.p) + wsl * kChunk * kChunk, kChunk, kChunk,
                                     kChunk, kChunk, kChunk);
    wt::load_rows_padded<kThreadsTc>(st, kLdc, static_cast<const T*>(ws.t) + wsl * kChunk * kChunk, kChunk, kChunk,
                                     kChunk, kChunk, kChunk);
    __syncthreads();

    // Warp w: rows 16w .. of dU = diag(Dm_L) (K dS) + P^T dO in fp32, and of scale Gamma_i do_i. Row blocks past
    // the chunk's rows are never read (every later product stops at nrb).
    const int rb = warp;
    float mu = 0.f;
    if (rb < nrb) {
      typename Fr::Acc du[kColBlocksV];
      mma_rows<kSplit>(du, sk, ldk, rb, nks, sds, sds_lo);
      store_rows(frow, du);
      __syncwarp();
      const float up = kRangeScale ? ldexpf(1.f, red_range_exponent(red_ds)) : 1.f, bl = sb[kChunk - 1];
      for (int e = lane; e < kFrag * kTileV; e += 32) {
        const int r = e / kTileV, col = e % kTileV, i = rb * kFrag + r;
        frow[r * kLdf + col] *= up * expf(bl - sb[i]);
        const float dos = scale * expf(sb[i]) * to_float(sdo[i * kLdS + col]);
        store_rounded<T, kSplit>(sdos, sdos_lo, i * kLdS + col, dos);
      }
      __syncwarp();
#pragma unroll
      for (int cb = 0; cb < kColBlocksV; ++cb) {
        wmma::load_matrix_sync(du[cb], frow + cb * kFrag, kLdf, wmma::mem_row_major);
        for (int jb = rb; jb < nrb; ++jb) {
          typename Fr::ACol a;  // P^T: a column-major view of the row-major P
          typename Fr::BRow b;
          wmma::load_matrix_sync(a, sp + jb * kFrag * kLdc + rb * kFrag, kLdc);
          wmma::load_matrix_sync(b, sdo + jb * kFrag * kLdS + cb * kFrag, kLdS);
          wmma::mma_sync(du[cb], a, b, du[cb]);
        }
        wmma::store_matrix_sync(frow + cb * kFrag, du[cb], kLdf, wmma::mem_row_major);
      }
      __syncwarp();
      if constexpr (kRangeScale) {
        for (int e = lane; e < kFrag * kTileV; e += 32) mu = fmaxf(mu, fabsf(frow[(e / kTileV) * kLdf + e % kTileV]));
      }
    }
    if constexpr (kRangeScale) block_range_max(mu, red_du);
    if (rb < nrb) {
      const float down = kRangeScale ? ldexpf(1.f, -red_range_exponent(red_du)) : 1.f;
      for (int e = lane; e < kFrag * kTileV; e += 32) {
        const int r = e / kTileV, col = e % kTileV;
        store_rounded<T, kSplit>(sdu, sdu_lo, (rb * kFrag + r) * kLdS + col, frow[r * kLdf + col] * down);
      }
    }
    __syncthreads();  // every warp's dU rows are ready; dS in 16 bits is dead (dR takes its region)

    // Warp w: rows 16w .. of dR = T^T dU (T^T is upper triangular: blocks jb >= w), out to ws.dr in fp32; then
    // -beta_i Gamma_i dR_i for the update, rounded (hi + lo for bf16; fp16 after the CTA-wide range scale).
    float mr = 0.f;
    if (rb < nrb) {
      typename Fr::Acc dr[kColBlocksV];
#pragma unroll
      for (int cb = 0; cb < kColBlocksV; ++cb) wmma::fill_fragment(dr[cb], 0.f);
      mma_t_rows<kSplit>(dr, st, kLdc, rb, rb, nrb, sdu, sdu_lo);  // T^T: T read column-major
      store_rows(frow, dr);
      __syncwarp();
      const float up = kRangeScale ? ldexpf(1.f, red_range_exponent(red_du)) : 1.f;
      float* __restrict__ dr_out = bws.dr + t0 * v_tok + hv * V + v0;
      for (int e = lane; e < kFrag * kTileV; e += 32) {
        const int r = e / kTileV, col = e % kTileV, i = rb * kFrag + r;
        const float x = up * frow[r * kLdf + col];
        if (i < L && col < vcols) dr_out[int64_t(i) * v_tok + col] = x;
        const float y = -sbeta[i] * expf(sb[i]) * x;  // 0 past the chunk's rows (beta = 0 there)
        if constexpr (kRangeScale) {
          frow[r * kLdf + col] = y;
          mr = fmaxf(mr, fabsf(y));
        } else {
          store_rounded<T, kSplit>(sdr, sdr_lo, i * kLdS + col, y);
        }
      }
    }
    if constexpr (kRangeScale) {
      block_range_max(mr, red_dr);
      if (rb < nrb) {
        const float down = ldexpf(1.f, -red_range_exponent(red_dr));
        for (int e = lane; e < kFrag * kTileV; e += 32) {
          const int r = e / kTileV, col = e % kTileV;
          store_rounded<T, kSplit>(sdr, sdr_lo, (rb * kFrag + r) * kLdS + col, frow[r * kLdf + col] * down);
        }
      }
    }
    __syncthreads();  // every warp's rows of dR and of scale Gamma do are ready

    // dS <- Gamma_L dS - K^T (beta Gamma dR) + Q^T (scale Gamma do). The decay and the fp16 range factors are
    // uniform scales, legal on any fragment layout; fp16 scales the carry by Gamma_L 2^-e before the K^T product
    // and by 2^e after it (powers of two: exact).
#pragma unroll
    for (int r = 0; r < kBlocksPerWarp; ++r) {
      const int sbk = state_row_block(warp, r);
      if (sbk < nks) {
        const float pre = kRangeScale ? expf(sb[kChunk - 1]) * ldexpf(1.f, -red_range_exponent(red_dr))
                                      : expf(sb[kChunk - 1]);
#pragma unroll
        for (int cb = 0; cb < kColBlocksV; ++cb) wt::scale_fragment(acc[r][cb], pre);
        mma_t_rows<kSplit>(acc[r], sk, ldk, sbk, 0, nrb, sdr, sdr_lo);  // K^T: the key tile read column-major
        if constexpr (kRangeScale) {
          const float up = ldexpf(1.f, red_range_exponent(red_dr));
#pragma unroll
          for (int cb = 0; cb < kColBlocksV; ++cb) wt::scale_fragment(acc[r][cb], up);
        }
        mma_t_rows<kSplit>(acc[r], sq, ldk, sbk, 0, nrb, sdos, sdos_lo);  // Q^T
      }
    }
  }

  if (p.dh0 == nullptr) return;  // uniform over the block; K (in the stage's region) was read last by the update
  store_state(acc, stage, static_cast<float*>(p.dh0), nh, KV, K, V, v0, vcols, nks, warp);
}

template <typename T, int kBlocksPerWarp>
void launch_dstate(const BwdParams& p, const TcFwdWorkspace& ws, const BwdWorkspace& bws, cudaStream_t stream) {
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const size_t smem = DStateSmemTc<T>(wt::round_up_frag(p.dim_k), !kFp16).launch_bytes;
  auto kernel = tc_dstate_kernel<T, kBlocksPerWarp, kFp16, !kFp16>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(p.num_seqs * p.value_heads), static_cast<unsigned>(ceil_div(p.dim_v, kTileV)));
  kernel<<<grid, kThreadsTc, smem, stream>>>(p, ws, bws);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace tc

template <DType D>
void backward_dstates_tc(const BwdParams& p, const TcFwdWorkspace& tws, const BwdWorkspace& ws, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core dstates pass takes fp16 or bf16 inputs");
  using T = typename StorageOf<D>::type;
  if (p.num_seqs * p.value_heads == 0) return;
  if (tws.p == nullptr || tws.t == nullptr) {
    throw std::invalid_argument("backward_dstates_tc: the tensor-core workspace needs P and T (TcFwdWorkspace::t)");
  }
  // dS fragments per warp follow K, as in the forward's state kernel.
  const int kp = tc::wt::round_up_frag(p.dim_k);
  if (kp <= tc::kWarps * tc::kFrag) {
    tc::launch_dstate<T, 1>(p, tws, ws, stream);
  } else if (kp <= 2 * tc::kWarps * tc::kFrag) {
    tc::launch_dstate<T, 2>(p, tws, ws, stream);
  } else {
    tc::launch_dstate<T, 4>(p, tws, ws, stream);
  }
}

}  // namespace linattn::delta::gpu
