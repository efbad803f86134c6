#pragma once
// Sliding-window attention backward on tensor cores (fp16 / bf16 inputs, nvcuda::wmma m16n16k16, fp32
// accumulation). Deterministic: no atomics, every gradient row is written by exactly one CTA. Three launches:
//  1. delta_i = do_i . o_i, the SIMT row-dot pass of swa_bwd.cuh (a bandwidth pass, nothing to gain on MMA);
//  2. dk, dv: one CTA per (key tile, head) walking the query tiles whose windows meet its keys (key j is seen
//     by queries j .. j + w - 1): dv_j = sum_i p_ij do_i, dk_j = scale sum_i ds_ij q_i;
//  3. dq: one CTA per (query tile, head) walking the key tiles of its windows: dq_i = scale sum_j ds_ij k_j.
// Both kernels share one body (kKeyMajor picks the role): per (query tile, key tile) pair the CTA forms
// S = Q K^T and dP = dO V^T on tensor cores into fp32 shared tiles, applies the masks in fp32 before the exp,
// p_ij = exp(scale s_ij - lse_i) with the forward's saved fp32 lse, ds_ij = p_ij (dp_ij - delta_i), rounds P and
// dS to the input dtype and accumulates the products. The dk / dv role reads P^T and dS^T as column-major views
// of the row-major P and dS tiles, so the scores are computed in one orientation for both roles.
//
// Why two kernels and not one with dq accumulated across key CTAs: that needs float atomics (or a workspace
// and a reduction pass); recomputing S and dP once more in the dq kernel keeps the result bitwise reproducible.
//
// Why the gradient accumulators live in fp32 shared memory and not in wmma fragments: with head dims up to 256
// a warp would hold up to 2 x 16 accumulator fragments (256 registers) in the dk / dv role. Each output
// fragment belongs to one warp for the whole kernel (round robin), which reloads it, adds its products and
// stores it back; no fragment layout is relied on (csrc/cuda/wmma_tiles.cuh).
//
// Tiles: kBr query rows x kBc key rows per step, both whole fragments; the host takes 64 x 64 while the CTA
// fits kSmemBudget and 32 x 32 otherwise (K = V = 256: ~150 KB, under sm_80's 163 KB).
//
// Params::do_scale (the gradients of do_scale * o) joins the fp32 factors dq, dk and dv are stored with, and delta
// stays do . o: every gradient is linear in do, so this is exact, rounds no scaled do, and costs nothing in the
// loops. (The SIMT backward scales do as it stages it; done that way here, it cost the bf16 dk / dv kernel 9
// registers on sm_80, 177 at 32 x 32 tiles: 3 -> 2 CTAs per SM by registers.)
#include <cmath>
#include <type_traits>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "csrc/cuda/wmma_tiles.cuh"
#include "ops/swa/cuda/swa_common.cuh"

namespace linattn::swa::gpu {
namespace tcb {

namespace wt = cuda_utils::wmma_tiles;
namespace wmma = nvcuda::wmma;
using cuda_utils::from_float;
using cuda_utils::to_float;
using wt::kFrag;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;

// Byte offsets of the shared regions (K padded to kp, V to vp columns). kOut: rows of the fp32 accumulators,
// kBc (dk and dv) or kBr (dq). Host and device carve with the same struct.
template <typename T, int kBr, int kBc, bool kKeyMajor>
struct BwdSmem {
  static_assert(kBr % kFrag == 0 && kBc % kFrag == 0 && kBr >= kFrag && kBc >= kFrag,
                "query and key tiles must be whole 16-row wmma fragments");
  static_assert(kBr <= 64 && kBc <= 64, "tiles above 64 rows do not fit shared memory at head dim 256");
  int ldq, ldv, lds, ldp, lda_k, lda_v;
  size_t q, d_o, k, v, s, dp, p, ds, lse, dlt, acc_k, acc_v, launch_bytes;
  __host__ __device__ BwdSmem(int kp, int vp) {
    ldq = wt::padded_ld<T>(kp);
    ldv = wt::padded_ld<T>(vp);
    lds = wt::padded_ld<float>(kBc);
    ldp = wt::padded_ld<T>(kBc);
    lda_k = wt::padded_ld<float>(kp);
    lda_v = wt::padded_ld<float>(vp);
    constexpr int kOut = kKeyMajor ? kBc : kBr;
    wt::SmemCarver c;
    q = c.take<T>(int64_t(kBr) * ldq);
    d_o = c.take<T>(int64_t(kBr) * ldv);
    k = c.take<T>(int64_t(kBc) * ldq);
    v = c.take<T>(int64_t(kBc) * ldv);
    s = c.take<float>(int64_t(kBr) * lds);
    dp = c.take<float>(int64_t(kBr) * lds);
    p = c.take<T>(int64_t(kBr) * ldp);
    ds = c.take<T>(int64_t(kBr) * ldp);
    lse = c.take<float>(kBr);
    dlt = c.take<float>(kBr);
    acc_k = c.take<float>(int64_t(kOut) * lda_k);
    acc_v = kKeyMajor ? c.take<float>(int64_t(kOut) * lda_v) : acc_k;  // dq needs no dv accumulator
    launch_bytes = c.launch_bytes();
  }
};

// Same reasoning as the forward (swa_fwd_tc.cuh): 64-row tiles while two CTAs still fit an SM.
constexpr size_t kSmemBudget = 100 * 1024;

// acc[f] += A_f B_f over kSteps 16-deep steps for every output fragment f of a [rows x cols] fp32 tile, the
// fragments dealt round robin to the warps (a fixed owner per fragment: no two warps touch one).
template <typename T, bool kATrans, int kRowBlocks>
__device__ __forceinline__ void accumulate(float* __restrict__ acc, int lda, int col_blocks, const T* __restrict__ a,
                                           int ldA, const T* __restrict__ b, int ldb, int steps, int warp) {
  using Fr = wt::Frag<T>;
  using AFrag = std::conditional_t<kATrans, typename Fr::ACol, typename Fr::ARow>;
  for (int f = warp; f < kRowBlocks * col_blocks; f += kWarps) {
    const int rb = f / col_blocks, cb = f % col_blocks;
    typename Fr::Acc c;
    wmma::load_matrix_sync(c, acc + rb * kFrag * lda + cb * kFrag, lda, wmma::mem_row_major);
    for (int ks = 0; ks < steps; ++ks) {
      AFrag x;
      typename Fr::BRow y;
      // Row-major A: block (rb, ks) of the stored tile. Transposed A: block (ks, rb) of the stored tile, read
      // column-major, i.e. the transpose's block (rb, ks).
      if constexpr (kATrans) {
        wmma::load_matrix_sync(x, a + ks * kFrag * ldA + rb * kFrag, ldA);
      } else {
        wmma::load_matrix_sync(x, a + rb * kFrag * ldA + ks * kFrag, ldA);
      }
      wmma::load_matrix_sync(y, b + ks * kFrag * ldb + cb * kFrag, ldb);
      wmma::mma_sync(c, x, y, c);
    }
    wmma::store_matrix_sync(acc + rb * kFrag * lda + cb * kFrag, c, lda, wmma::mem_row_major);
  }
}

// out rows (token-major, stride) = acc * mul, rows x cols real elements.
template <typename T>
__device__ __forceinline__ void store_out(T* __restrict__ out, int64_t stride, const float* __restrict__ acc, int lda,
                                          int rows, int cols, float mul) {
  for (int e = threadIdx.x; e < rows * cols; e += kThreads) {
    const int r = e / cols, c = e % cols;
    out[int64_t(r) * stride + c] = from_float<T>(acc[r * lda + c] * mul);
  }
}

// Launch bounds with a 1-block minimum, as the forward: shared memory limits residency to 1-2 CTAs per SM, and
// a higher register target only invites spills.
template <typename T, int kBr, int kBc, bool kKeyMajor>
__global__ void __launch_bounds__(kThreads, 1) swa_bwd_tc_kernel(const Params p, const float* __restrict__ delta) {
  using Fr = wt::Frag<T>;
  constexpr int kRb = kBr / kFrag, kCb = kBc / kFrag;
  constexpr int kOwn = kKeyMajor ? kBc : kBr;  // rows of the tile this CTA owns
  TileSpan t;
  if (!locate_tile(p, kOwn, blockIdx.x, t)) return;  // uniform over the CTA

  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kp = wt::round_up_frag(K), vp = wt::round_up_frag(V);
  const int nks = kp / kFrag, nvs = vp / kFrag;
  extern __shared__ float smem[];
  char* const base = wt::align_smem(smem);
  const BwdSmem<T, kBr, kBc, kKeyMajor> lay(kp, vp);
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sdo = reinterpret_cast<T*>(base + lay.d_o);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ sv = reinterpret_cast<T*>(base + lay.v);
  float* __restrict__ ss = reinterpret_cast<float*>(base + lay.s);
  float* __restrict__ sdp = reinterpret_cast<float*>(base + lay.dp);
  T* __restrict__ sp = reinterpret_cast<T*>(base + lay.p);
  T* __restrict__ sds = reinterpret_cast<T*>(base + lay.ds);
  float* __restrict__ slse = reinterpret_cast<float*>(base + lay.lse);
  float* __restrict__ sdl = reinterpret_cast<float*>(base + lay.dlt);
  float* __restrict__ acc_k = reinterpret_cast<float*>(base + lay.acc_k);
  float* __restrict__ acc_v = reinterpret_cast<float*>(base + lay.acc_v);
  const int ldq = lay.ldq, ldv = lay.ldv, lds = lay.lds, ldp = lay.ldp, lda_k = lay.lda_k, lda_v = lay.lda_v;

  const int64_t h = blockIdx.y, H = p.heads;
  const int warp = threadIdx.x / 32;
  const float scale = static_cast<float>(p.scale);
  const int64_t w = p.window;
  const int own = static_cast<int>(min(int64_t(kOwn), t.len - t.r0));
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.qk_head_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.qk_head_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride;
  const float* __restrict__ lse = static_cast<const float*>(p.lse);

  // Loads the query-side rows q0 .. q0 + qr - 1 (q, do, lse, delta), zero / neutral past qr.
  auto load_queries = [&](int64_t q0, int qr) {
    wt::load_rows_padded<kThreads>(sq, ldq, qh + (t.bos + q0) * p.qk_tok_stride, p.qk_tok_stride, qr, K, kBr, kp);
    wt::load_rows_padded<kThreads>(sdo, ldv, doh + (t.bos + q0) * p.v_tok_stride, p.v_tok_stride, qr, V, kBr, vp);
    for (int e = threadIdx.x; e < kBr; e += kThreads) {
      slse[e] = e < qr ? lse[(t.bos + q0 + e) * H + h] : 0.f;
      sdl[e] = e < qr ? delta[(t.bos + q0 + e) * H + h] : 0.f;
    }
  };
  auto load_keys = [&](int64_t j0, int kr) {
    wt::load_rows_padded<kThreads>(sk, ldq, kh + (t.bos + j0) * p.qk_tok_stride, p.qk_tok_stride, kr, K, kBc, kp);
    wt::load_rows_padded<kThreads>(sv, ldv, vh + (t.bos + j0) * p.v_tok_stride, p.v_tok_stride, kr, V, kBc, vp);
  };

  // S, dP and then P, dS of the pair (queries q0 .. q0 + qr - 1, keys j0 .. j0 + kr - 1); ends with a barrier.
  auto scores = [&](int64_t q0, int qr, int64_t j0, int kr) {
    // A score fragment is computed only when some element of it passes the mask; the element pass below reads
    // only elements that pass, so a skipped fragment's stale contents are never used.
    for (int f = warp; f < kRb * kCb; f += kWarps) {
      const int rb = f / kCb, cb = f % kCb;
      const int64_t ilo = q0 + rb * kFrag, ihi = ilo + kFrag - 1, jlo = j0 + cb * kFrag, jhi = jlo + kFrag - 1;
      if (!(rb * kFrag < qr && cb * kFrag < kr && jlo <= ihi && jhi > ilo - w)) continue;
      typename Fr::Acc s, dp;
      wmma::fill_fragment(s, 0.f);
      wmma::fill_fragment(dp, 0.f);
      for (int ks = 0; ks < nks; ++ks) {
        typename Fr::ARow a;
        typename Fr::BCol b;  // K^T: a column-major view of the row-major key tile
        wmma::load_matrix_sync(a, sq + rb * kFrag * ldq + ks * kFrag, ldq);
        wmma::load_matrix_sync(b, sk + cb * kFrag * ldq + ks * kFrag, ldq);
        wmma::mma_sync(s, a, b, s);
      }
      for (int ks = 0; ks < nvs; ++ks) {
        typename Fr::ARow a;
        typename Fr::BCol b;
        wmma::load_matrix_sync(a, sdo + rb * kFrag * ldv + ks * kFrag, ldv);
        wmma::load_matrix_sync(b, sv + cb * kFrag * ldv + ks * kFrag, ldv);
        wmma::mma_sync(dp, a, b, dp);
      }
      wmma::store_matrix_sync(ss + rb * kFrag * lds + cb * kFrag, s, lds, wmma::mem_row_major);
      wmma::store_matrix_sync(sdp + rb * kFrag * lds + cb * kFrag, dp, lds, wmma::mem_row_major);
    }
    __syncthreads();
    // Every element of P and dS is written (zeros where masked or padded): the products read whole tiles.
    for (int e = threadIdx.x; e < kBr * kBc; e += kThreads) {
      const int ii = e / kBc, jj = e % kBc;
      const int64_t i = q0 + ii, j = j0 + jj;
      float pij = 0.f, dsij = 0.f;
      if (ii < qr && jj < kr && j <= i && i - j < w) {
        // The rounded probability is the one multiplied into dv, and the one whose dS feeds dq / dk.
        const T pr = from_float<T>(expf(__fmul_rn(ss[ii * lds + jj], scale) - slse[ii]));
        pij = to_float(pr);
        dsij = pij * (sdp[ii * lds + jj] - sdl[ii]);
      }
      sp[ii * ldp + jj] = from_float<T>(pij);
      sds[ii * ldp + jj] = from_float<T>(dsij);
    }
    __syncthreads();
  };

  for (int e = threadIdx.x; e < kOwn * lda_k; e += kThreads) acc_k[e] = 0.f;
  if constexpr (kKeyMajor) {
    for (int e = threadIdx.x; e < kOwn * lda_v; e += kThreads) acc_v[e] = 0.f;
  }

  if constexpr (kKeyMajor) {
    const int kr = own;
    load_keys(t.r0, kr);
    // Queries that see a key of this tile: r0 .. (r0 + kr - 1) + w - 1, within the sequence.
    const int64_t jlast = t.r0 + kr - 1;
    const int64_t qlast = w - 1 >= t.len - 1 - jlast ? t.len - 1 : jlast + w - 1;
    for (int64_t q0 = t.r0; q0 <= qlast; q0 += kBr) {
      const int qr = static_cast<int>(min(int64_t(kBr), qlast - q0 + 1));
      load_queries(q0, qr);
      __syncthreads();
      scores(q0, qr, t.r0, kr);
      // dv += P^T dO, dk += dS^T Q (the scale is applied once at the end).
      accumulate<T, true, kCb>(acc_v, lda_v, nvs, sp, ldp, sdo, ldv, kRb, warp);
      accumulate<T, true, kCb>(acc_k, lda_k, nks, sds, ldp, sq, ldq, kRb, warp);
      __syncthreads();  // the next query tile overwrites q, do, P and dS
    }
    __syncthreads();
    const float ds = static_cast<float>(p.do_scale);
    store_out<T>(static_cast<T*>(p.dk) + h * p.qk_head_stride + (t.bos + t.r0) * p.qk_tok_stride, p.qk_tok_stride,
                 acc_k, lda_k, kr, K, scale * ds);
    store_out<T>(static_cast<T*>(p.dv) + h * p.v_head_stride + (t.bos + t.r0) * p.v_tok_stride, p.v_tok_stride,
                 acc_v, lda_v, kr, V, ds);
  } else {
    const int qr = own;
    load_queries(t.r0, qr);
    const int64_t last = t.r0 + qr - 1;
    for (int64_t j0 = max(int64_t(0), t.r0 - w + 1); j0 <= last; j0 += kBc) {
      const int kr = static_cast<int>(min(int64_t(kBc), last - j0 + 1));
      load_keys(j0, kr);
      __syncthreads();
      scores(t.r0, qr, j0, kr);
      accumulate<T, false, kRb>(acc_k, lda_k, nks, sds, ldp, sk, ldq, kCb, warp);  // dq += dS K
      __syncthreads();  // the next key tile overwrites k, v, P and dS
    }
    __syncthreads();
    store_out<T>(static_cast<T*>(p.dq) + h * p.qk_head_stride + (t.bos + t.r0) * p.qk_tok_stride, p.qk_tok_stride,
                 acc_k, lda_k, qr, K, scale * static_cast<float>(p.do_scale));
  }
}

template <typename T, int kB, bool kKeyMajor>
void launch(const Params& p, const float* delta, cudaStream_t stream) {
  const int kp = wt::round_up_frag(p.dim_k), vp = wt::round_up_frag(p.dim_v);
  const BwdSmem<T, kB, kB, kKeyMajor> lay(kp, vp);
  const int64_t slots = num_tile_slots(p, kB);
  auto kernel = swa_bwd_tc_kernel<T, kB, kB, kKeyMajor>;
  cuda_utils::prepare_dynamic_smem(kernel, lay.launch_bytes);
  kernel<<<dim3(static_cast<unsigned>(slots), static_cast<unsigned>(p.heads)), kThreads, lay.launch_bytes,
           stream>>>(p, delta);
  LINATTN_CHECK_LAUNCH();
}

template <typename T, int kB>
void launch_both(const Params& p, const float* delta, cudaStream_t stream) {
  launch<T, kB, true>(p, delta, stream);
  launch<T, kB, false>(p, delta, stream);
}

}  // namespace tcb

template <DType D>
void backward_tc(const Params& p, float* delta_ws, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core backward takes fp16 / bf16 inputs; fp32 runs on SIMT");
  using T = typename StorageOf<D>::type;
  const int64_t rows = p.batch * p.seqlen * p.heads;
  if (rows == 0 || p.heads == 0) return;
  // delta_i = do_i . o_i (o and do are contiguous [B*T, H, V]: row (token, head) at (token * H + head) * V).
  constexpr int kRowWarps = simt::kThreads / 32;
  simt::row_dot_kernel<T><<<static_cast<unsigned>(ceil_div(rows, kRowWarps)), simt::kThreads, 0, stream>>>(
      static_cast<const T*>(p.do_), static_cast<const T*>(p.o), nullptr, 1.f, rows, static_cast<int>(p.dim_v),
      delta_ws);
  LINATTN_CHECK_LAUNCH();
  const int kp = tcb::wt::round_up_frag(p.dim_k), vp = tcb::wt::round_up_frag(p.dim_v);
  // The dk / dv CTA is the larger of the two (two fp32 accumulators): it decides the tile for both.
  if (tcb::BwdSmem<T, 64, 64, true>(kp, vp).launch_bytes <= tcb::kSmemBudget) {
    tcb::launch_both<T, 64>(p, delta_ws, stream);
  } else {
    tcb::launch_both<T, 32>(p, delta_ws, stream);
  }
}

}  // namespace linattn::swa::gpu
