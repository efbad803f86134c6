#pragma once
// Backward pass 3 of the (gated) delta rule on tensor cores, fp16 / bf16 inputs: the per-chunk gradients of
// delta_bwd_grad.cuh (same math, same outputs: dv, dbeta, dg, and dq / dk per value head into ws.dq / ws.dk, then
// the group sum), from what passes 1 and 2 stored: S0 (ws.states), dS (ws.dstates), U (ws.u, the SIMT kernel's U
// = the tensor-core forward's Vn), Z (ws.z) and dR (ws.dr). One CTA of 128 threads per (chunk slot, value head),
// every chunk in parallel. With P = Dm o Q K^T (j <= i), E = Dm o K K^T (j < i):
//   phase 0  Q K^T, K K^T                       (K in tiles of 64)             -> P, E
//   phase 1  dP' = dO U^T, dM' = dR U^T         (V in tiles of 32)             -> F = scale dP' o Dm (j <= i),
//            G = -diag(beta) dM' o Dm (j < i), X = scale dP' o P - diag(beta) dM' o E and its row / column sums,
//            sum_j -dM'_ij E_ij (dbeta), dv = diag(beta) dR, dr_i . v_i and dr_i . z_i
//   phase 2  per K tile of 64: A1 = dO S0^T, A2 = U dS^T, A3 = dR S0^T (V in tiles of 32, <dS, S0> on the way), then
//            dq = scale diag(Gamma) A1 + F K,  dk = diag(Dm_L) A2 - diag(beta Gamma) A3 + F^T Q + (G^T + G) K,
//            q_i . A1_i and Dm_Li k_i . A2_i for db
//   phase 3  dbeta, db, dg as the SIMT pass.
// Every product above is an m16n16k16 wmma product with fp32 accumulation (20 Gram blocks, 20 blocks of dP' / dM',
// 3 [64 x K] products over V, the three triangular intra-chunk products); the decay masks, the element-wise
// products (X, F, G), the row dots and the scalar gradients are fp32. Warp w owns the chunk rows 16 w .. 16 w + 15
// in phase 2 and the lower-triangular 16 x 16 blocks w, w + 4, w + 8 in phases 0-1.
//
// What it reads (the choice): only what the SIMT pass reads. P from pass 1's UT workspace would spare Q K^T, but
// it is rounded to the input dtype and X = dP o P feeds dg, whose row-minus-column sums cancel heavily; E (K K^T)
// is not stored anywhere, and Q K^T shares its staged keys. So no extra memory.
//
// Precision (the choice and why): the products run in bf16 with fp32 accumulation for both input dtypes. Every
// fp32 operand (S0, dS, U, dR, and F, G formed per chunk) enters as a bf16 hi + lo pair (csrc/cuda/wmma_split.cuh,
// three products each), so each product is good to ~2^-17 relative, close to the fp32 SIMT pass; q, k, do enter
// as they are: exactly in bf16, and for fp16 inputs as an exact hi + lo split of each fp16 value. Why not fp16
// products with a power-of-two range scale (passes 1 and 2 for fp16): the scale needs a CTA-wide maximum before
// the first rounding, and here S0 and dS ([K x V] fp32 each, the largest reads of the pass) are streamed in tiles,
// so that would cost a second read of both; bf16 has fp32's exponent range and needs none. The price: fp16 q, k,
// do tiles take twice the shared memory and their products one more MMA (the Gram products three instead of
// one); the pass is bound by its memory traffic (S0, dS, U, Z, dR in fp32), not by the tensor cores.
#include <stdexcept>
#include <type_traits>

#include "csrc/cuda/wmma_split.cuh"
#include "ops/delta_rule/cuda/delta_fwd_tc.cuh"
#include "ops/delta_rule/cuda/delta_group_sum.cuh"

namespace linattn::delta::gpu {
namespace tc {

using Op = wt::Bf16;                       // the tensor-core operand type of this pass, whatever the input dtype
constexpr int kGradKTile = 64;             // key columns per phase-0 / phase-2 tile
constexpr int kGradVTile = 32;             // value columns per staged tile
constexpr int kGradBlocksPerWarp = 3;      // lower-triangular 16 x 16 blocks owned per warp (10 blocks, 4 warps)
constexpr int kStageRows = kChunk / kWarps;  // rows of a [64 x 32] tile each warp stages (one per lane column)

static_assert(kWarps * kGradBlocksPerWarp >= kGramBlocks,
              "the warps must own every block on and below the diagonal of the 64 x 64 matrices");
static_assert(kGradKTile == kChunk, "an [S0 tile] of 64 key rows x 32 value columns has the [64 x 32] row-tile shape");
static_assert(kGradVTile == 32, "the staging maps a lane to one value column of the tile");
static_assert(kGradKTile % kFrag == 0 && kGradVTile % kFrag == 0, "tiles must be whole fragments");

using OpChunk = wt::SmemTile<Op, kChunk, kChunk>;      // [64 x 64] F, G (hi and lo)
using OpKTile = wt::SmemTile<Op, kChunk, kGradKTile>;  // [64 x 64] q, k tiles
using OpVTile = wt::SmemTile<Op, kChunk, kGradVTile>;  // [64 x 32] do, U, dR tiles; [64 keys x 32] S0, dS tiles
constexpr int kColBlocksK = kGradKTile / kFrag;        // fragments across a K tile

struct GradSmemTc {  // byte offsets into the realigned dynamic buffer; lo: fp16 inputs (q, k, do split)
  size_t f_hi, f_lo, g_hi, g_lo, q_hi, q_lo, k_hi, k_lo, post, do_hi, do_lo, u_hi, u_lo, dr_hi, dr_lo, s_hi, s_lo,
      ds_hi, ds_lo, epi, b, beta, rowv, rowz, qdot, kterm, db, rowx, colx, dbm, carry, launch_bytes;
  __host__ __device__ explicit GradSmemTc(bool lo) {
    wt::SmemCarver c;
    f_hi = c.take<Op>(OpChunk::kElems);
    f_lo = c.take<Op>(OpChunk::kElems);
    g_hi = c.take<Op>(OpChunk::kElems);
    g_lo = c.take<Op>(OpChunk::kElems);
    // One staging region, used by one phase at a time (a barrier between any two uses):
    //   phase 0         the q, k tiles
    //   phase 1         the do, U, dR tiles; after the V loop, the per-warp scratch of the block epilogues
    //   phase 2 V loop  the do, U, dR tiles and the S0, dS tiles
    //   phase 2 after   the q, k tiles and the per-warp scratch of the dq / dk epilogues
    constexpr int64_t kTile = OpVTile::kElems * int64_t(sizeof(Op)), kKTileBytes = OpKTile::kElems * int64_t(sizeof(Op));
    constexpr int64_t kScratch = int64_t(kWarps) * 2 * F32Frag::kElems * int64_t(sizeof(float));
    const int64_t qk_bytes = (lo ? 4 : 2) * kKTileBytes, v_bytes = (lo ? 6 : 5) * kTile, s_bytes = 4 * kTile;
    const int64_t epi_end = qk_bytes + kScratch, loop_end = v_bytes + s_bytes;
    const size_t region = c.take<char>(epi_end > loop_end ? epi_end : loop_end);
    q_hi = region;
    k_hi = q_hi + kKTileBytes;
    q_lo = lo ? k_hi + kKTileBytes : q_hi;
    k_lo = lo ? q_lo + kKTileBytes : k_hi;
    epi = region + qk_bytes;
    post = region;
    do_hi = region;
    do_lo = lo ? do_hi + kTile : do_hi;
    u_hi = do_hi + (lo ? 2 : 1) * kTile;
    u_lo = u_hi + kTile;
    dr_hi = u_lo + kTile;
    dr_lo = dr_hi + kTile;
    s_hi = region + v_bytes;
    s_lo = s_hi + kTile;
    ds_hi = s_lo + kTile;
    ds_lo = ds_hi + kTile;
    b = c.take<float>(kChunk);
    beta = c.take<float>(kChunk);
    rowv = c.take<float>(kChunk);               // dr_i . v_i
    rowz = c.take<float>(kChunk);               // dr_i . z_i
    qdot = c.take<float>(kChunk);               // q_i . (dO S0^T)_i
    kterm = c.take<float>(kChunk);              // Dm_Li k_i . (U dS^T)_i
    db = c.take<float>(kChunk);                 // db_i without dbL
    rowx = c.take<float>(kRowBlocks * kChunk);  // [column block][row]: partial row sums of X
    colx = c.take<float>(kRowBlocks * kChunk);  // [row block][column]: partial column sums of X
    dbm = c.take<float>(kRowBlocks * kChunk);   // [column block][row]: partial sum_j -dM'_ij E_ij
    carry = c.take<float>(kWarps);              // per-warp partial <dS, S0>
    launch_bytes = c.launch_bytes();
  }
};
static_assert(OpVTile::kElems * sizeof(Op) % wt::kSmemAlign == 0 && OpKTile::kElems * sizeof(Op) % wt::kSmemAlign == 0,
              "tiles packed into the staging region must keep every tile 128-byte aligned");

// Tensor-core product with split operands: acc += a b for a = a_hi (+ a_lo when kALo), b = b_hi (+ b_lo when
// kBLo), dropping a_lo b_lo. Fragment layouts ALay / BLay as wmma names them. Warp-wide.
template <bool kALo, bool kBLo, typename ALay, typename BLay>
__device__ __forceinline__ void mma_split(wt::AccFrag& acc, const Op* a_hi, const Op* a_lo, int lda, const Op* b_hi,
                                          const Op* b_lo, int ldb) {
  wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, Op, ALay> a;
  wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, Op, BLay> b;
  wmma::load_matrix_sync(a, a_hi, lda);
  wmma::load_matrix_sync(b, b_hi, ldb);
  wmma::mma_sync(acc, a, b, acc);
  if constexpr (kALo) {
    wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, Op, ALay> al;
    wmma::load_matrix_sync(al, a_lo, lda);
    wmma::mma_sync(acc, al, b, acc);
  }
  if constexpr (kBLo) {
    wmma::load_matrix_sync(b, b_lo, ldb);
    wmma::mma_sync(acc, a, b, acc);
  }
}

// Stages rows of the chunk's [64 x 32] value tile at column v0 of do, U and dR as bf16 (do: hi, + lo for fp16; U,
// dR: hi + lo), zero past L rows / vc columns. Lane = column, warp w = rows w + 4 m. kRowDots (phase 1): also
// dv = beta dr (written) and the per-thread row dots rv[m] += dr v, rz[m] += dr z. All threads; no barrier.
template <typename T, bool kLo, bool kRowDots>
__device__ __forceinline__ void stage_value_tiles(char* base, const GradSmemTc& lay, const BwdParams& p,
                                                  const BwdWorkspace& ws, int64_t at0, int64_t v_tok, int L, int vc,
                                                  const float* __restrict__ sbeta, float (&rv)[kStageRows],
                                                  float (&rz)[kStageRows]) {
  constexpr int kBatch = 4;
  constexpr int kLd = OpVTile::kLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* __restrict__ doin = static_cast<const T*>(p.do_);
  const T* __restrict__ vin = static_cast<const T*>(p.v);
  T* __restrict__ dvout = static_cast<T*>(p.dv);
  Op* const do_hi = reinterpret_cast<Op*>(base + lay.do_hi);
  Op* const do_lo = reinterpret_cast<Op*>(base + lay.do_lo);
  Op* const u_hi = reinterpret_cast<Op*>(base + lay.u_hi);
  Op* const u_lo = reinterpret_cast<Op*>(base + lay.u_lo);
  Op* const dr_hi = reinterpret_cast<Op*>(base + lay.dr_hi);
  Op* const dr_lo = reinterpret_cast<Op*>(base + lay.dr_lo);
#pragma unroll
  for (int m0 = 0; m0 < kStageRows; m0 += kBatch) {
    float xo[kBatch], xu[kBatch], xr[kBatch], xv[kBatch], xz[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {  // every load of the batch before any store
      const int i = warp + kWarps * (m0 + b);
      xo[b] = xu[b] = xr[b] = xv[b] = xz[b] = 0.f;
      if (i < L && lane < vc) {
        const int64_t at = at0 + int64_t(i) * v_tok + lane;
        xo[b] = to_float(doin[at]);
        xu[b] = ws.u[at];
        xr[b] = ws.dr[at];
        if constexpr (kRowDots) {
          xv[b] = to_float(vin[at]);
          xz[b] = ws.z[at];
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = warp + kWarps * (m0 + b), at = i * kLd + lane;
      wt::store_split<kLo>(do_hi, do_lo, at, xo[b]);
      wt::store_split<true>(u_hi, u_lo, at, xu[b]);
      wt::store_split<true>(dr_hi, dr_lo, at, xr[b]);
      if constexpr (kRowDots) {
        rv[m0 + b] += xr[b] * xv[b];
        rz[m0 + b] += xr[b] * xz[b];
        if (i < L && lane < vc) dvout[at0 + int64_t(i) * v_tok + lane] = from_float<T>(sbeta[i] * xr[b]);
      }
    }
  }
}

// Stages the [64 x 32] tiles of S0 and dS at key rows d0 .. d0 + kc - 1, value columns v0 .. v0 + vc - 1 as
// hi + lo (zero elsewhere) and adds their element-wise product to carry. All threads; no barrier.
__device__ __forceinline__ void stage_state_tiles(char* base, const GradSmemTc& lay, const float* __restrict__ S0,
                                                  const float* __restrict__ dS, int64_t V, int d0, int v0, int kc,
                                                  int vc, float& carry) {
  constexpr int kBatch = 8;
  constexpr int kLd = OpVTile::kLd;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  Op* const s_hi = reinterpret_cast<Op*>(base + lay.s_hi);
  Op* const s_lo = reinterpret_cast<Op*>(base + lay.s_lo);
  Op* const ds_hi = reinterpret_cast<Op*>(base + lay.ds_hi);
  Op* const ds_lo = reinterpret_cast<Op*>(base + lay.ds_lo);
#pragma unroll
  for (int m0 = 0; m0 < kStageRows; m0 += kBatch) {
    float xs[kBatch], xd[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int d = warp + kWarps * (m0 + b);
      xs[b] = xd[b] = 0.f;
      if (d < kc && lane < vc) {
        const int64_t at = int64_t(d0 + d) * V + v0 + lane;
        xs[b] = S0[at];
        xd[b] = dS[at];
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int at = (warp + kWarps * (m0 + b)) * kLd + lane;
      wt::store_split<true>(s_hi, s_lo, at, xs[b]);
      wt::store_split<true>(ds_hi, ds_lo, at, xd[b]);
      carry += xs[b] * xd[b];
    }
  }
}

// Sums of a 16 x 16 fp32 fragment in per-warp scratch (ld F32Frag::kLd): lanes 0-15 return the sum of row lane,
// lanes 16-31 the sum of column lane - 16. Warp-wide reads only.
__device__ __forceinline__ float frag_row_or_col_sum(const float* __restrict__ s) {
  constexpr int ld = F32Frag::kLd;
  const int lane = threadIdx.x % 32, x = lane % kFrag;
  float sum = 0.f;
  for (int y = 0; y < kFrag; ++y) sum += lane < kFrag ? s[x * ld + y] : s[y * ld + x];
  return sum;
}

template <typename T, bool kLo>
__global__ void __launch_bounds__(kThreadsTc, 1) tc_grad_kernel(const BwdParams p, const BwdWorkspace ws) {
  int64_t n = 0, c = 0;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  constexpr int kLdc = OpChunk::kLd, kLdk = OpKTile::kLd, kLdv = OpVTile::kLd, kLdf = F32Frag::kLd;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const GradSmemTc lay(kLo);
  Op* const f_hi = reinterpret_cast<Op*>(base + lay.f_hi);
  Op* const f_lo = reinterpret_cast<Op*>(base + lay.f_lo);
  Op* const g_hi = reinterpret_cast<Op*>(base + lay.g_hi);
  Op* const g_lo = reinterpret_cast<Op*>(base + lay.g_lo);
  Op* const q_hi = reinterpret_cast<Op*>(base + lay.q_hi);
  Op* const q_lo = reinterpret_cast<Op*>(base + lay.q_lo);
  Op* const k_hi = reinterpret_cast<Op*>(base + lay.k_hi);
  Op* const k_lo = reinterpret_cast<Op*>(base + lay.k_lo);
  const Op* const do_hi = reinterpret_cast<const Op*>(base + lay.do_hi);
  const Op* const do_lo = reinterpret_cast<const Op*>(base + lay.do_lo);
  const Op* const u_hi = reinterpret_cast<const Op*>(base + lay.u_hi);
  const Op* const u_lo = reinterpret_cast<const Op*>(base + lay.u_lo);
  const Op* const dr_hi = reinterpret_cast<const Op*>(base + lay.dr_hi);
  const Op* const dr_lo = reinterpret_cast<const Op*>(base + lay.dr_lo);
  const Op* const s_hi = reinterpret_cast<const Op*>(base + lay.s_hi);
  const Op* const s_lo = reinterpret_cast<const Op*>(base + lay.s_lo);
  const Op* const ds_hi = reinterpret_cast<const Op*>(base + lay.ds_hi);
  const Op* const ds_lo = reinterpret_cast<const Op*>(base + lay.ds_lo);
  float* const sb = reinterpret_cast<float*>(base + lay.b);
  float* const sbeta = reinterpret_cast<float*>(base + lay.beta);
  float* const srowv = reinterpret_cast<float*>(base + lay.rowv);
  float* const srowz = reinterpret_cast<float*>(base + lay.rowz);
  float* const sqdot = reinterpret_cast<float*>(base + lay.qdot);
  float* const skterm = reinterpret_cast<float*>(base + lay.kterm);
  float* const sdb = reinterpret_cast<float*>(base + lay.db);
  float* const srowx = reinterpret_cast<float*>(base + lay.rowx);
  float* const scolx = reinterpret_cast<float*>(base + lay.colx);
  float* const sdbm = reinterpret_cast<float*>(base + lay.dbm);
  float* const scarry = reinterpret_cast<float*>(base + lay.carry);

  const int64_t slot = blockIdx.x, hv = blockIdx.y, H = p.heads, HV = p.value_heads, h = hv / (HV / H);
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int64_t t0 = seq.bos + c * kChunk, KV = int64_t(K) * V;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int nrb = static_cast<int>(ceil_div(L, kFrag));  // row blocks holding real rows
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float scale = static_cast<float>(p.scale);
  const int64_t qk_tok = H * K, v_tok = HV * V, dqk_tok = HV * K;
  const T* __restrict__ qh = static_cast<const T*>(p.q) + t0 * qk_tok + h * K;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + t0 * qk_tok + h * K;
  const int64_t v_at0 = t0 * v_tok + hv * V;  // (row 0, column 0) of the chunk in the [B*T, HV, V] tensors
  const float* __restrict__ S0 = ws.states + (slot * HV + hv) * KV;
  const float* __restrict__ dS = ws.dstates + (slot * HV + hv) * KV;

  if (warp == 0) chunk_gates(sb, sbeta, p, t0, hv, L);
  if (threadIdx.x < kChunk) sqdot[threadIdx.x] = skterm[threadIdx.x] = 0.f;

  // Phase 0: this warp's blocks of K K^T and Q K^T, accumulated over the K tiles.
  typename wt::Frag<Op>::Acc kk[kGradBlocksPerWarp], qk[kGradBlocksPerWarp];
#pragma unroll
  for (int o = 0; o < kGradBlocksPerWarp; ++o) {
    wmma::fill_fragment(kk[o], 0.f);
    wmma::fill_fragment(qk[o], 0.f);
  }
  for (int d0 = 0; d0 < K; d0 += kGradKTile) {
    const int kc = min(kGradKTile, K - d0), kcp = wt::round_up_frag(kc);
    __syncthreads();  // the last K tile's products are done with the q, k tiles
    wt::load_rows_as_bf16<kThreadsTc>(q_hi, q_lo, kLdk, qh + d0, qk_tok, L, kc, kChunk, kcp);
    wt::load_rows_as_bf16<kThreadsTc>(k_hi, k_lo, kLdk, kh + d0, qk_tok, L, kc, kChunk, kcp);
    __syncthreads();
#pragma unroll
    for (int o = 0; o < kGradBlocksPerWarp; ++o) {
      const int blk = warp + kWarps * o;
      int ib = 0, jb = 0;
      lower_block(blk, ib, jb);
      if (blk >= kGramBlocks || ib >= nrb) continue;
      for (int ks = 0; ks < kcp / kFrag; ++ks) {
        // K^T: a column-major view of the row-major key tile
        const int bo = jb * kFrag * kLdk + ks * kFrag, ao = ib * kFrag * kLdk + ks * kFrag;
        mma_split<kLo, kLo, wmma::row_major, wmma::col_major>(kk[o], k_hi + ao, k_lo + ao, kLdk, k_hi + bo,
                                                              k_lo + bo, kLdk);
        mma_split<kLo, kLo, wmma::row_major, wmma::col_major>(qk[o], q_hi + ao, q_lo + ao, kLdk, k_hi + bo,
                                                              k_lo + bo, kLdk);
      }
    }
  }

  // Phase 1: this warp's blocks of dP' = dO U^T and dM' = dR U^T over the V tiles; dv and the row dots.
  typename wt::Frag<Op>::Acc dp[kGradBlocksPerWarp], dm[kGradBlocksPerWarp];
#pragma unroll
  for (int o = 0; o < kGradBlocksPerWarp; ++o) {
    wmma::fill_fragment(dp[o], 0.f);
    wmma::fill_fragment(dm[o], 0.f);
  }
  float rv[kStageRows], rz[kStageRows];
#pragma unroll
  for (int m = 0; m < kStageRows; ++m) rv[m] = rz[m] = 0.f;
  for (int v0 = 0; v0 < V; v0 += kGradVTile) {
    const int vc = min(kGradVTile, V - v0), nvs = wt::round_up_frag(vc) / kFrag;
    __syncthreads();  // the last V tile's products are done with the staged tiles
    stage_value_tiles<T, kLo, true>(base, lay, p, ws, v_at0 + v0, v_tok, L, vc, sbeta, rv, rz);
    __syncthreads();
#pragma unroll
    for (int o = 0; o < kGradBlocksPerWarp; ++o) {
      const int blk = warp + kWarps * o;
      int ib = 0, jb = 0;
      lower_block(blk, ib, jb);
      if (blk >= kGramBlocks || ib >= nrb) continue;
      for (int vs = 0; vs < nvs; ++vs) {
        const int ao = ib * kFrag * kLdv + vs * kFrag, bo = jb * kFrag * kLdv + vs * kFrag;  // U^T: column-major view
        mma_split<kLo, true, wmma::row_major, wmma::col_major>(dp[o], do_hi + ao, do_lo + ao, kLdv, u_hi + bo,
                                                               u_lo + bo, kLdv);
        mma_split<true, true, wmma::row_major, wmma::col_major>(dm[o], dr_hi + ao, dr_lo + ao, kLdv, u_hi + bo,
                                                                u_lo + bo, kLdv);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < kStageRows; ++m) {
    const float x = warp_sum(rv[m]), y = warp_sum(rz[m]);
    if (lane == 0) {
      srowv[warp + kWarps * m] = x;
      srowz[warp + kWarps * m] = y;
    }
  }

  // End of phase 1, per owned block (i, j in it): F, G (hi + lo), and the partial sums of X and of -dM' o E, with
  // two fragments of per-warp scratch in the staging region once every warp is done with the staged tiles.
  __syncthreads();
  {
    float* const s0 = reinterpret_cast<float*>(base + lay.post) + warp * 2 * F32Frag::kElems;
    float* const s1 = s0 + F32Frag::kElems;
#pragma unroll
    for (int o = 0; o < kGradBlocksPerWarp; ++o) {
      const int blk = warp + kWarps * o;
      int ib = 0, jb = 0;
      lower_block(blk, ib, jb);
      if (blk >= kGramBlocks || ib >= nrb) continue;
      wmma::store_matrix_sync(s0, qk[o], kLdf, wmma::mem_row_major);
      wmma::store_matrix_sync(s1, dp[o], kLdf, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < kFrag * kFrag; e += 32) {
        const int r = e / kFrag, cc = e % kFrag, i = ib * kFrag + r, j = jb * kFrag + cc;
        float x = 0.f, f = 0.f;
        if (j <= i) {  // mask before the exp: b_i - b_j <= 0 here
          const float dmij = expf(sb[i] - sb[j]), dpij = scale * s1[r * kLdf + cc];
          x = dpij * dmij * s0[r * kLdf + cc];
          f = dpij * dmij;
        }
        wt::store_split<true>(f_hi, f_lo, i * kLdc + j, f);
        s0[r * kLdf + cc] = x;
      }
      __syncwarp();
      float sx = frag_row_or_col_sum(s0);
      __syncwarp();
      wmma::store_matrix_sync(s0, kk[o], kLdf, wmma::mem_row_major);
      wmma::store_matrix_sync(s1, dm[o], kLdf, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < kFrag * kFrag; e += 32) {
        const int r = e / kFrag, cc = e % kFrag, i = ib * kFrag + r, j = jb * kFrag + cc;
        float x = 0.f, g = 0.f, y = 0.f;
        if (j < i) {
          const float dmij = expf(sb[i] - sb[j]), eij = dmij * s0[r * kLdf + cc], mij = -s1[r * kLdf + cc];
          const float de = sbeta[i] * mij;
          y = mij * eij;
          x = de * eij;
          g = de * dmij;
        }
        wt::store_split<true>(g_hi, g_lo, i * kLdc + j, g);
        s0[r * kLdf + cc] = x;
        s1[r * kLdf + cc] = y;
      }
      __syncwarp();
      sx += frag_row_or_col_sum(s0);
      const float sy = frag_row_or_col_sum(s1);
      if (lane < kFrag) {
        srowx[jb * kChunk + ib * kFrag + lane] = sx;
        sdbm[jb * kChunk + ib * kFrag + lane] = sy;
      } else {
        scolx[ib * kChunk + jb * kFrag + lane - kFrag] = sx;
      }
      __syncwarp();  // the scratch is rewritten for the next block
    }
  }

  // Phase 2: per K tile, A1 = dO S0^T, A2 = U dS^T, A3 = dR S0^T for this warp's 16 rows, then dq and dk.
  float carry = 0.f;
  const int rb = warp;
  const int i_lane = rb * kFrag + lane / 2;  // the row this lane reads in the epilogues (8 columns each)
  const float gam_i = expf(sb[i_lane]), dl_i = expf(sb[kChunk - 1] - sb[i_lane]), bg_i = sbeta[i_lane] * gam_i;
  for (int d0 = 0; d0 < K; d0 += kGradKTile) {
    const int kc = min(kGradKTile, K - d0), kcp = wt::round_up_frag(kc), ncb = kcp / kFrag;
    typename wt::Frag<Op>::Acc a1[kColBlocksK], a2[kColBlocksK], a3[kColBlocksK];
#pragma unroll
    for (int cb = 0; cb < kColBlocksK; ++cb) {
      wmma::fill_fragment(a1[cb], 0.f);
      wmma::fill_fragment(a2[cb], 0.f);
      wmma::fill_fragment(a3[cb], 0.f);
    }
    for (int v0 = 0; v0 < V; v0 += kGradVTile) {
      const int vc = min(kGradVTile, V - v0), nvs = wt::round_up_frag(vc) / kFrag;
      __syncthreads();  // the last V tile's products (or the last K tile's epilogues) are done with the region
      stage_value_tiles<T, kLo, false>(base, lay, p, ws, v_at0 + v0, v_tok, L, vc, sbeta, rv, rz);
      stage_state_tiles(base, lay, S0, dS, V, d0, v0, kc, vc, carry);
      __syncthreads();
      if (rb >= nrb) continue;
      for (int vs = 0; vs < nvs; ++vs) {
        const int ao = rb * kFrag * kLdv + vs * kFrag;
#pragma unroll
        for (int cb = 0; cb < kColBlocksK; ++cb) {
          if (cb >= ncb) continue;
          const int bo = cb * kFrag * kLdv + vs * kFrag;  // S0^T, dS^T: column-major views of the [keys x 32] tiles
          mma_split<kLo, true, wmma::row_major, wmma::col_major>(a1[cb], do_hi + ao, do_lo + ao, kLdv, s_hi + bo,
                                                                 s_lo + bo, kLdv);
          mma_split<true, true, wmma::row_major, wmma::col_major>(a2[cb], u_hi + ao, u_lo + ao, kLdv, ds_hi + bo,
                                                                  ds_lo + bo, kLdv);
          mma_split<true, true, wmma::row_major, wmma::col_major>(a3[cb], dr_hi + ao, dr_lo + ao, kLdv, s_hi + bo,
                                                                  s_lo + bo, kLdv);
        }
      }
    }
    __syncthreads();  // the staged tiles are dead: the q, k tiles and the epilogue scratch take the region
    wt::load_rows_as_bf16<kThreadsTc>(q_hi, q_lo, kLdk, qh + d0, qk_tok, L, kc, kChunk, kcp);
    wt::load_rows_as_bf16<kThreadsTc>(k_hi, k_lo, kLdk, kh + d0, qk_tok, L, kc, kChunk, kcp);
    __syncthreads();
    if (rb >= nrb) continue;  // no barrier until the next K tile's V loop

    float* const s0 = reinterpret_cast<float*>(base + lay.epi) + warp * 2 * F32Frag::kElems;
    float* const s1 = s0 + F32Frag::kElems;
    const int r = lane / 2, c0 = (lane % 2) * (kFrag / 2);  // lane: row r, columns c0 .. c0 + 7 of a fragment
    float* __restrict__ dq_row = ws.dq + (t0 + i_lane) * dqk_tok + hv * K + d0;
    float* __restrict__ dk_row = ws.dk + (t0 + i_lane) * dqk_tok + hv * K + d0;
    // The lane's (row r, columns c0..c0+7) share of a finished [16 x 16] dq / dk block, through the warp scratch.
    const auto write_rows = [&](const typename wt::Frag<Op>::Acc& acc, float* __restrict__ dst_row, int col) {
      wmma::store_matrix_sync(s0, acc, kLdf, wmma::mem_row_major);
      __syncwarp();
      if (i_lane < L) {
#pragma unroll
        for (int m = 0; m < kFrag / 2; ++m) {
          if (col + c0 + m < kc) dst_row[col + c0 + m] = s0[r * kLdf + c0 + m];
        }
      }
      __syncwarp();
    };
    const auto pair_value = [](const Op* hi, const Op* lo, int at) {  // q / k as staged: hi (+ lo)
      float x = __bfloat162float(hi[at]);
      if constexpr (kLo) x += __bfloat162float(lo[at]);
      return x;
    };
#pragma unroll
    for (int cb = 0; cb < kColBlocksK; ++cb) {
      if (cb >= ncb) continue;
      const int col = cb * kFrag;
      // dq = scale Gamma_i A1_i + sum_{j <= i} F_ij k_j; q_i . A1_i on the way.
      wmma::store_matrix_sync(s0, a1[cb], kLdf, wmma::mem_row_major);
      __syncwarp();
      float qd = 0.f;
#pragma unroll
      for (int m = 0; m < kFrag / 2; ++m) {
        const int cc = c0 + m, at = i_lane * kLdk + col + cc;
        const float qv = pair_value(q_hi, q_lo, at);
        const float x = s0[r * kLdf + cc];
        qd += qv * x;
        s0[r * kLdf + cc] = scale * gam_i * x;
      }
      qd += __shfl_xor_sync(kFullMask, qd, 1);
      if (lane % 2 == 0) sqdot[i_lane] += qd;
      __syncwarp();
      wmma::load_matrix_sync(a1[cb], s0, kLdf, wmma::mem_row_major);
      for (int jb = 0; jb <= rb; ++jb) {
        const int ao = rb * kFrag * kLdc + jb * kFrag, bo = jb * kFrag * kLdk + col;
        mma_split<true, kLo, wmma::row_major, wmma::row_major>(a1[cb], f_hi + ao, f_lo + ao, kLdc, k_hi + bo,
                                                               k_lo + bo, kLdk);
      }
      write_rows(a1[cb], dq_row, col);

      // dk = Dm_L A2 - beta Gamma A3 + sum_{j >= i} F_ji q_j + sum_{j > i} G_ji k_j + sum_{j < i} G_ij k_j;
      // Dm_Li k_i . A2_i on the way.
      wmma::store_matrix_sync(s0, a2[cb], kLdf, wmma::mem_row_major);
      wmma::store_matrix_sync(s1, a3[cb], kLdf, wmma::mem_row_major);
      __syncwarp();
      float kt = 0.f;
#pragma unroll
      for (int m = 0; m < kFrag / 2; ++m) {
        const int cc = c0 + m, at = i_lane * kLdk + col + cc;
        const float kv = pair_value(k_hi, k_lo, at);
        const float x2 = s0[r * kLdf + cc], x3 = s1[r * kLdf + cc];
        kt += kv * x2;
        s0[r * kLdf + cc] = dl_i * x2 - bg_i * x3;
      }
      kt += __shfl_xor_sync(kFullMask, kt, 1);
      if (lane % 2 == 0) skterm[i_lane] += dl_i * kt;
      __syncwarp();
      wmma::load_matrix_sync(a2[cb], s0, kLdf, wmma::mem_row_major);
      for (int jb = rb; jb < nrb; ++jb) {
        const int ao = jb * kFrag * kLdc + rb * kFrag, bo = jb * kFrag * kLdk + col;  // F^T, G^T: column-major views
        mma_split<true, kLo, wmma::col_major, wmma::row_major>(a2[cb], f_hi + ao, f_lo + ao, kLdc, q_hi + bo,
                                                               q_lo + bo, kLdk);
        mma_split<true, kLo, wmma::col_major, wmma::row_major>(a2[cb], g_hi + ao, g_lo + ao, kLdc, k_hi + bo,
                                                               k_lo + bo, kLdk);
      }
      for (int jb = 0; jb <= rb; ++jb) {
        const int ao = rb * kFrag * kLdc + jb * kFrag, bo = jb * kFrag * kLdk + col;
        mma_split<true, kLo, wmma::row_major, wmma::row_major>(a2[cb], g_hi + ao, g_lo + ao, kLdc, k_hi + bo,
                                                               k_lo + bo, kLdk);
      }
      write_rows(a2[cb], dk_row, col);
    }
  }

  // Phase 3: dbeta, db, dg (the SIMT pass's assembly, from the partial sums above).
  carry = warp_sum(carry);
  if (lane == 0) scarry[warp] = carry;
  __syncthreads();
  const int tid = threadIdx.x;
  if (tid < kChunk) {
    const int i = tid, ib = i / kFrag;
    float db = 0.f, dbeta = 0.f;
    if (i < L) {
      float rx = 0.f, cx = 0.f, dmb = 0.f;
      for (int jb = 0; jb <= ib; ++jb) {
        rx += srowx[jb * kChunk + i];
        dmb += sdbm[jb * kChunk + i];
      }
      for (int b2 = ib; b2 < nrb; ++b2) cx += scolx[b2 * kChunk + i];
      const float rz_i = srowz[i];
      db = rx - cx + scale * expf(sb[i]) * sqdot[i] - sbeta[i] * rz_i - skterm[i];
      dbeta = dmb + srowv[i] - rz_i;
      static_cast<float*>(p.dbeta)[(t0 + i) * HV + hv] = dbeta;
    }
    sdb[i] = db;
  }
  __syncthreads();
  if (p.dg != nullptr && tid < L) {
    const int i = tid;
    float carried = 0.f;
    for (int w = 0; w < kWarps; ++w) carried += scarry[w];
    float dbl = expf(sb[kChunk - 1]) * carried;
    for (int j = 0; j < L; ++j) dbl += skterm[j];
    float dg = dbl;
    for (int m = i; m < L; ++m) dg += sdb[m];
    static_cast<float*>(p.dg)[(t0 + i) * HV + hv] = dg;
  }
}

}  // namespace tc

template <DType D>
void backward_grads_tc(const BwdParams& p, const BwdWorkspace& ws, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core grads pass takes fp16 or bf16 inputs");
  using T = typename StorageOf<D>::type;
  constexpr bool kLo = std::is_same_v<T, __half>;  // fp16 q, k, do split exactly into bf16 hi + lo
  const int64_t slots = num_state_slots(p);
  if (slots == 0 || p.batch * p.seqlen == 0 || p.value_heads == 0) return;
  const size_t smem = tc::GradSmemTc(kLo).launch_bytes;
  auto kernel = tc::tc_grad_kernel<T, kLo>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(p.value_heads));
  kernel<<<grid, tc::kThreadsTc, smem, stream>>>(p, ws);
  LINATTN_CHECK_LAUNCH();
  launch_group_sum<T>(p, ws, stream);
}

}  // namespace linattn::delta::gpu
