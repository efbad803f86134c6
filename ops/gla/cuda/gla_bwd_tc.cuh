#pragma once
// Tensor-core chunked backward of simple GLA / lightning attention (one log gate per token and head, a
// per-head constant, or none; p.g_k_stride == 0), fp16 / bf16 inputs, fp32 accumulation. With b the in-chunk
// cumulative gate (a scalar per row), b_L its last value, S_c / S_{c+1} the states entering / leaving chunk c
// and dS the gradient w.r.t. S_{c+1}:
//   P_ij  = scale e^{b_i - b_j} (q_i . k_j),   D_ij = scale e^{b_i - b_j} (do_i . v_j)   (j <= i, else 0)
//   dv_j  = e^{b_L - b_j} dS^T k_j + sum_{i >= j} P_ij do_i
//   dq_i  = scale e^{b_i} S_c do_i + sum_{j <= i} D_ij k_j
//   dk_j  = e^{b_L - b_j} dS v_j   + sum_{i >= j} D_ij q_i
//   dS_c  = e^{b_L} dS + sum_i (scale e^{b_i} q_i) do_i^T          (the gradient entering the previous chunk)
//   dg_i  = sum_{i' >= i in chunk} (q . dq - k . dk)_{i'} + sum(dS * S_{c+1})
// The dg line is the SIMT kernel's identity (gla_bwd.cuh): the reverse cumsum over the whole sequence of
// q . dq - k . dk plus sum(dht * S_T) splits into an in-chunk suffix sum and one carry per chunk.
// Five launches (128 threads each):
//  1. states: the forward's tc_state_kernel, which also stores the final state in the slot after the
//     sequence's chunks (S_{c+1} of the last chunk, for the carry) and, for fp16, per-tile max |S|; its
//     decayed keys enter as two 16-bit parts (see kSplitKeys there);
//  2. tc_dstate_kernel, per (sequence, head, 64-row K tile, 64-column V tile), chunks in reverse: dS in wmma
//     accumulators (the decay e^{b_L} is a uniform scale), stored as it leaves each chunk; dh0 at the end;
//  3. tc_dv_kernel, per (chunk slot, 64-column V tile, head): Q K^T, P, then (K dS) and P^T dO;
//  4. tc_dqk_kernel, per (chunk slot, 64-column K tile, head): dO V^T, D, then (dO S_c^T) + D K, then
//     (V dS^T) + D^T Q; for dg the row sums of q . dq - k . dk (the in-chunk part exactly from D * (Q K^T)
//     in fp32, the inter-chunk part from the products, dS split into two 16-bit parts) and the carry,
//     then their suffix sums;
//  5. for K > 64, the sum of the per-K-tile partial dg.
// Nothing per token is stored: the states are recomputed (kernel 1), the scores twice (kernels 3 and 4).
//
// Precision follows the forward (gla_fwd_tc.cuh): every tensor-core operand is rounded once to the input
// dtype (q, k, v, do as given, the scaled queries of kernel 2, P, D, S_c, dS); sums are fp32, dS is carried
// in fp32 accumulators across chunks and read back as fp32, so no rounding compounds over chunks. The row
// factors e^{b_i}, e^{b_L - b_j} of the inter-chunk products are applied in fp32 to the products, keeping
// q, k, v exact. fp16 scales S_c and dS slabs by an exact power of two from the per-tile maxima (an
// undecayed state or state gradient grows with T and would overflow fp16's 65504); bf16 skips it.
// Stability: every exponent is <= 0: b_i, b_L - b_j with j <= L, and b_i - b_j masked to j <= i before the
// exp, so gates of -20 per step over long sequences underflow to 0 and never overflow.
#include <algorithm>
#include <type_traits>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "csrc/cuda/wmma_tiles.cuh"
#include "ops/gla/cuda/gla_common.cuh"
#include "ops/gla/cuda/gla_fwd_tc.cuh"

namespace linattn::gla::gpu {
namespace tc {

static_assert(kTileK == kChunk, "the dq / dk kernel's [64 x 64] fp32 tile holds 64 rows x one K tile");
static_assert(kTileK / kFrag == kWarps, "the dq / dk kernel gives warp w the key columns 16w .. 16w + 15");
static_assert(kThreadsTc == 2 * kChunk, "row sums of the dq / dk kernel: two threads per chunk row");

// The workspace regions of one backward call.
struct BwdPtrs {
  float* states;      // [slots, H, K, V]
  float* dstates;     // [slots, H, K, V]
  float* state_max;   // [slots, H, ntk * ntv]
  float* dstate_max;  // [slots, H, ntk * ntv]
  float* dg_partial;  // [ntk, B*T, H] or nullptr
};

// acc (row block r, column block cb of a dv / dk tile) += sum over ib = r .. nrb - 1 of M(ib, r)^T Y(ib, cb): the
// transpose of a lower-triangular M (the scores P or D) only has blocks at or below r in its column r.
template <typename T, typename Acc>
__device__ __forceinline__ void add_transposed_lower(Acc& acc, const T* __restrict__ M, int ldm,
                                                     const T* __restrict__ Y, int ldy, int r, int cb, int nrb) {
  using Fr = wt::Frag<T>;
  for (int ib = r; ib < nrb; ++ib) {
    typename Fr::ACol a;  // M^T block (r, ib): a column-major view of M's block (ib, r)
    typename Fr::BRow b;
    wmma::load_matrix_sync(a, M + ib * kFrag * ldm + r * kFrag, ldm);
    wmma::load_matrix_sync(b, Y + ib * kFrag * ldy + cb * kFrag, ldy);
    wmma::mma_sync(acc, a, b, acc);
  }
}

// ---------------------------------------------------------------------------------------------------------
// 2. state gradients, chunks in reverse

template <typename T>
struct DStateSmemTc {  // byte offsets into the realigned dynamic buffer
  size_t q, dout, stage, gate, red, launch_bytes;
  __host__ __device__ DStateSmemTc() {
    wt::SmemCarver c;
    q = c.take<T>(RowTile<T>::kElems);       // scale e^{b_i} q_i [64 rows x 64 key columns]
    dout = c.take<T>(RowTile<T>::kElems);    // do [64 rows x 64 value columns]
    stage = c.take<float>(F32Tile::kElems);  // dS between accumulators and global memory
    gate = c.take<float>(kChunk);
    red = c.take<float>(kWarps);
    launch_bytes = c.launch_bytes();
  }
};

template <typename T, bool kTrackMax>
__global__ void __launch_bounds__(kThreadsTc)
    tc_dstate_kernel(const BwdParams p, float* __restrict__ dstates, float* __restrict__ tile_max) {
  using Fr = wt::Frag<T>;
  constexpr int kLd = RowTile<T>::kLd;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const DStateSmemTc<T> lay;
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sdo = reinterpret_cast<T*>(base + lay.dout);
  float* __restrict__ stage = reinterpret_cast<float*>(base + lay.stage);
  float* __restrict__ sb = reinterpret_cast<float*>(base + lay.gate);
  float* __restrict__ red = reinterpret_cast<float*>(base + lay.red);

  const int64_t H = p.heads, nh = blockIdx.x, n = nh / H, h = nh % H;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kt = blockIdx.y, vt = blockIdx.z;
  const int d0 = kt * kTileK, v0 = vt * kTileV;
  const int kcols = min(kTileK, K - d0), vcols = min(kTileV, V - v0);
  const int nvb = static_cast<int>(ceil_div(vcols, kFrag));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool active = warp * kFrag < kcols;
  const float scale = static_cast<float>(p.scale);
  const SeqSpan seq = seq_span(p, n);
  const int64_t nchunks = ceil_div(seq.len, kChunk), slot0 = slot_base(seq.bos, n);
  const int64_t KV = int64_t(K) * V, ntv = ceil_div(V, kTileV), tiles = ceil_div(K, kTileK) * ntv;
  const int64_t tile_off = int64_t(d0) * V + v0;
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + d0;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride + v0;

  const float* __restrict__ dht =
      p.dht != nullptr ? static_cast<const float*>(p.dht) + nh * KV + tile_off : nullptr;
  state_to_stage(stage, dht, V, kcols, vcols);
  __syncthreads();
  typename Fr::Acc acc[kWarps];  // columns 16 cb .. of the warp's 16 key rows
  stage_to_acc(acc, stage, warp);

  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t t0 = seq.bos + c * kChunk;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    __syncthreads();  // the previous chunk's products are done with sq, sdo and sb, and the stage is free
    acc_to_stage(stage, acc, warp);
    if (warp == 0) scalar_gate_cumsum(sb, p, t0, h, L);
    __syncthreads();

    const int64_t slot = slot0 + c;  // dS is the gradient of the state leaving chunk c
    float m = stage_to_state(dstates + (slot * H + h) * KV + tile_off, stage, V, kcols, vcols);
    warp_max_to_red<kTrackMax>(m, red, warp, lane);
    // e^{b_i} <= 1 is folded into the operand here (not applied afterwards as in the chunk-parallel kernels):
    // the sum over rows i runs inside the product, so no per-row factor can be applied to its result.
    cu::batched_copy<kThreadsTc, 8>(
        kChunk * kTileK,
        [&](int e) {
          const int i = e / kTileK, d = e % kTileK;
          return (i < L && d < kcols) ? qh[(t0 + i) * p.q_tok_stride + d] : from_float<T>(0.f);
        },
        [&](int e, const T& raw) {
          const int i = e / kTileK;
          sq[i * kLd + e % kTileK] = from_float<T>(i < L ? to_float(raw) * (scale * expf(sb[i])) : 0.f);
        });
    wt::load_rows_padded<kThreadsTc>(sdo, kLd, doh + t0 * p.v_tok_stride, p.v_tok_stride, L, vcols, kChunk, kTileV,
                                     static_cast<float>(p.do_scale));
    __syncthreads();

    red_to_tile_max<kTrackMax>(tile_max + (slot * H + h) * tiles + kt * ntv + vt, red);
    if (active) {
      const float decay = expf(sb[kChunk - 1]);
#pragma unroll
      for (int cb = 0; cb < kWarps; ++cb) wt::scale_fragment(acc[cb], decay);
      const int nrb = static_cast<int>(ceil_div(L, kFrag));
      for (int ib = 0; ib < nrb; ++ib) {
        typename Fr::ACol a;  // (scaled Q)^T: a column-major view of the row-major query tile
        wmma::load_matrix_sync(a, sq + ib * kFrag * kLd + warp * kFrag, kLd);
#pragma unroll
        for (int cb = 0; cb < kWarps; ++cb) {
          if (cb < nvb) {
            typename Fr::BRow b;
            wmma::load_matrix_sync(b, sdo + ib * kFrag * kLd + cb * kFrag, kLd);
            wmma::mma_sync(acc[cb], a, b, acc[cb]);
          }
        }
      }
    }
  }

  if (p.dh0 == nullptr) return;  // uniform over the block
  __syncthreads();
  acc_to_stage(stage, acc, warp);
  __syncthreads();
  stage_to_state(static_cast<float*>(p.dh0) + nh * KV + tile_off, stage, V, kcols, vcols);
}

// ---------------------------------------------------------------------------------------------------------
// 3. dv

template <typename T>
struct DvSmemTc {  // byte offsets, for K padded to kp
  int ldq;
  size_t q, ds, k, dout, pm, f32, gate, launch_bytes;
  __host__ __device__ explicit DvSmemTc(int kp) {
    ldq = wt::padded_ld<T>(kp);
    wt::SmemCarver c;
    // queries are dead once the scores are stored, and dS is loaded after that: one region for both
    const int64_t q_elems = int64_t(kChunk) * ldq, ds_elems = int64_t(kp) * RowTile<T>::kLd;
    q = ds = c.take<T>(q_elems > ds_elems ? q_elems : ds_elems);  // [64 x kp] queries, then [kp x 64] dS
    k = c.take<T>(int64_t(kChunk) * ldq);  // [64 x kp] keys
    dout = c.take<T>(RowTile<T>::kElems);  // [64 x 64] do
    pm = c.take<T>(RowTile<T>::kElems);    // [64 x 64] P
    f32 = c.take<float>(F32Tile::kElems);  // scores, then the dv tile
    gate = c.take<float>(kChunk);
    launch_bytes = c.launch_bytes();
  }
};

template <typename T, bool kRangeScale>
__global__ void __launch_bounds__(kThreadsTc)
    tc_dv_kernel(const BwdParams p, const float* __restrict__ dstates, const float* __restrict__ dstate_max) {
  int64_t n = 0, c = 0;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  using Fr = wt::Frag<T>;
  constexpr int kLdv = RowTile<T>::kLd, kLdf = F32Tile::kLd;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kp = wt::round_up_frag(K), nks = kp / kFrag;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const DvSmemTc<T> lay(kp);
  const int ldq = lay.ldq;
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sds = reinterpret_cast<T*>(base + lay.ds);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ sdo = reinterpret_cast<T*>(base + lay.dout);
  T* __restrict__ sp = reinterpret_cast<T*>(base + lay.pm);
  float* __restrict__ sf = reinterpret_cast<float*>(base + lay.f32);
  float* __restrict__ sb = reinterpret_cast<float*>(base + lay.gate);

  const int64_t slot = blockIdx.x, H = p.heads, h = blockIdx.z;
  const int vt = blockIdx.y, v0 = vt * kTileV;
  const int vcols = min(kTileV, V - v0), nvb = static_cast<int>(ceil_div(vcols, kFrag));
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int nrb = static_cast<int>(ceil_div(L, kFrag));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float scale = static_cast<float>(p.scale);

  if (warp == 0) scalar_gate_cumsum(sb, p, t0, h, L);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + t0 * p.q_tok_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + t0 * p.k_tok_stride;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride + t0 * p.v_tok_stride + v0;
  wt::load_rows_padded<kThreadsTc>(sq, ldq, qh, p.q_tok_stride, L, K, kChunk, kp);
  wt::load_rows_padded<kThreadsTc>(sk, ldq, kh, p.k_tok_stride, L, K, kChunk, kp);
  wt::load_rows_padded<kThreadsTc>(sdo, kLdv, doh, p.v_tok_stride, L, vcols, kChunk, kTileV,
                                   static_cast<float>(p.do_scale));
  __syncthreads();

  causal_scores(sf, sq, sk, ldq, nks, nrb, warp);
  __syncthreads();
  decayed_scores(sp, sf, sb, L, scale);  // P, as in the forward
  const RangeFactors range = v_tile_range_factors<kRangeScale>(dstate_max, slot, H, h, K, V, vt);
  state_slab_to_tile(sds, kLdv, dstates + (slot * H + h) * int64_t(K) * V + v0, V, K, vcols, kp, kTileV,
                     range.down);
  __syncthreads();

  // Warp w owns dv columns 16 w ..: (K dS) with the fp32 row factor e^{b_L - b_j}, then + P^T dO over the
  // query blocks at or below each key block.
  if (warp < nvb) {
    const int cb = warp;
    typename Fr::Acc acc[kRowBlocks];
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) wmma::fill_fragment(acc[r], 0.f);
    for (int ks = 0; ks < nks; ++ks) {
      typename Fr::BRow b;
      wmma::load_matrix_sync(b, sds + ks * kFrag * kLdv + cb * kFrag, kLdv);
#pragma unroll
      for (int r = 0; r < kRowBlocks; ++r) {
        if (r < nrb) {
          typename Fr::ARow a;
          wmma::load_matrix_sync(a, sk + r * kFrag * ldq + ks * kFrag, ldq);
          wmma::mma_sync(acc[r], a, b, acc[r]);
        }
      }
    }
    float* __restrict__ col = sf + cb * kFrag;
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
    }
    __syncwarp();
    const float bl = sb[kChunk - 1];
    for (int e = lane; e < nrb * kFrag * kFrag; e += 32) {
      const int j = e / kFrag, cc = e % kFrag;
      col[j * kLdf + cc] *= expf(bl - sb[j]) * range.up;
    }
    __syncwarp();
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) {
        wmma::load_matrix_sync(acc[r], col + r * kFrag * kLdf, kLdf, wmma::mem_row_major);
        add_transposed_lower(acc[r], sp, kLdv, sdo, kLdv, r, cb, nrb);  // + P^T dO
        wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
      }
    }
  }
  __syncthreads();

  T* __restrict__ dvh = static_cast<T*>(p.dv) + h * p.v_head_stride + t0 * p.v_tok_stride + v0;
  for (int e = threadIdx.x; e < kChunk * kTileV; e += kThreadsTc) {
    const int j = e / kTileV, col = e % kTileV;
    if (j < L && col < vcols) dvh[j * p.v_tok_stride + col] = from_float<T>(sf[j * kLdf + col]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// 4. dq, dk, dg

template <typename T>
struct DqkSmemTc {  // byte offsets, for V padded to vp
  int ldv;
  size_t r1, r2, q, k, dm, f32, m, gate, part, rows, red, launch_bytes;
  __host__ __device__ explicit DqkSmemTc(int vp) {
    ldv = wt::padded_ld<T>(vp);
    wt::SmemCarver c;
    // Two [64 x vp] regions in three phases: (do, v) for D, (do, S_c) for dq, (dS, v) for dk; v is loaded
    // twice rather than given a third region (about a quarter less shared memory at V = 256).
    r1 = c.take<T>(int64_t(kChunk) * ldv);  // do, then the [64 key rows x vp] dS slab (high, then low part)
    r2 = c.take<T>(int64_t(kChunk) * ldv);  // v, then the [64 x vp] S_c slab, then v again
    q = c.take<T>(RowTile<T>::kElems);      // [64 x 64] queries of this K tile
    k = c.take<T>(RowTile<T>::kElems);      // [64 x 64] keys of this K tile
    dm = c.take<T>(RowTile<T>::kElems);     // [64 x 64] D
    f32 = c.take<float>(F32Tile::kElems);   // dO V^T, then dq, then dk
    m = c.take<float>(F32Tile::kElems);     // Q K^T of this K tile, then D * (Q K^T) in fp32
    gate = c.take<float>(kChunk);
    part = c.take<float>(kWarps * kChunk);  // per warp: q . dq_inter - k . dk_inter over its 16 columns
    rows = c.take<float>(kChunk);           // per-row q . dq - k . dk of this K tile
    red = c.take<float>(kWarps);
    launch_bytes = c.launch_bytes();
  }
};

// The 16-bit [64 x vp] rows of one of v / do (zero-padded), times mul (do_scale for do).
template <typename T>
__device__ __forceinline__ void load_value_rows(T* __restrict__ dst, int ld, const void* src, const BwdParams& p,
                                                int64_t h, int64_t t0, int L, int V, int vp, float mul = 1.f) {
  const T* __restrict__ base = static_cast<const T*>(src) + h * p.v_head_stride + t0 * p.v_tok_stride;
  wt::load_rows_padded<kThreadsTc>(dst, ld, base, p.v_tok_stride, L, V, kChunk, vp, mul);
}

// The dS slab as two 16-bit parts, hi = round(x) and lo = round(x - hi) (x = dS times the range factor):
// hi + lo carries about twice the dtype's mantissa. kLow selects the part.
template <typename T, bool kLow>
__device__ __forceinline__ void dstate_slab_part(T* __restrict__ dst, int ld, const float* __restrict__ S, int V,
                                                 int nrows, int vp, float factor) {
  cu::batched_copy<kThreadsTc, 8>(
      kTileK * vp,
      [&](int e) {
        const int d = e / vp, c = e % vp;
        return (d < nrows && c < V) ? S[int64_t(d) * V + c] : 0.f;
      },
      [&](int e, float raw) {
        const float x = raw * factor;
        const T hi = from_float<T>(x);
        dst[(e / vp) * ld + e % vp] = kLow ? from_float<T>(x - to_float(hi)) : hi;
      });
}

// Per-warp share of the dg row sums: part[i] (+)= sign * sum over the warp's 16 columns of x[i][.] * y[i][.],
// x the 16-bit operand tile, y the warp's fp32 column block; every row is written (0 past nrb blocks).
template <typename T, bool kAccumulate>
__device__ __forceinline__ void warp_row_dots(float* __restrict__ part, const T* __restrict__ x, int ldx,
                                              const float* __restrict__ y, int ldy, int nrows, float sign) {
  const int lane = threadIdx.x % 32;
  for (int i = lane; i < kChunk; i += 32) {
    float s = 0.f;
    if (i < nrows) {
#pragma unroll
      for (int cc = 0; cc < kFrag; ++cc) s += to_float(x[i * ldx + cc]) * y[i * ldy + cc];
    }
    part[i] = kAccumulate ? part[i] + sign * s : sign * s;
  }
}

// Shared memory (70-132 KB) allows at most two CTAs per SM, so registers beyond 128 cost no occupancy; the
// explicit minimum of 1 CTA lets ptxas use them (it capped the fp16 instantiation at 128 on sm_80 and spilled).
template <typename T, bool kRangeScale>
__global__ void __launch_bounds__(kThreadsTc, 1)
    tc_dqk_kernel(const BwdParams p, const float* __restrict__ states, const float* __restrict__ dstates,
                  const float* __restrict__ state_max, const float* __restrict__ dstate_max,
                  float* __restrict__ dg_partial) {
  int64_t n = 0, c = 0;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  using Fr = wt::Frag<T>;
  constexpr int kLd = RowTile<T>::kLd, kLdf = F32Tile::kLd;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int vp = wt::round_up_frag(V), nvs = vp / kFrag;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const DqkSmemTc<T> lay(vp);
  const int ldv = lay.ldv;
  T* __restrict__ r1 = reinterpret_cast<T*>(base + lay.r1);
  T* __restrict__ r2 = reinterpret_cast<T*>(base + lay.r2);
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ sd = reinterpret_cast<T*>(base + lay.dm);
  float* __restrict__ sf = reinterpret_cast<float*>(base + lay.f32);
  float* __restrict__ sm = reinterpret_cast<float*>(base + lay.m);
  float* __restrict__ sb = reinterpret_cast<float*>(base + lay.gate);
  float* __restrict__ spart = reinterpret_cast<float*>(base + lay.part);
  float* __restrict__ srow = reinterpret_cast<float*>(base + lay.rows);
  float* __restrict__ red = reinterpret_cast<float*>(base + lay.red);

  const int64_t slot = blockIdx.x, H = p.heads, h = blockIdx.z;
  const int kt = blockIdx.y, d0 = kt * kTileK;
  const int kcols = min(kTileK, K - d0), nkb = static_cast<int>(ceil_div(kcols, kFrag));
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int nrb = static_cast<int>(ceil_div(L, kFrag));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float scale = static_cast<float>(p.scale);
  const bool want_dg = p.dg != nullptr;
  const int64_t KV = int64_t(K) * V, ntk = ceil_div(K, kTileK), ntv = ceil_div(V, kTileV);
  const int64_t tiles = ntk * ntv;

  if (warp == 0) scalar_gate_cumsum(sb, p, t0, h, L);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + t0 * p.q_tok_stride + d0;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + t0 * p.k_tok_stride + d0;
  load_value_rows<T>(r1, ldv, p.do_, p, h, t0, L, V, vp, static_cast<float>(p.do_scale));
  load_value_rows<T>(r2, ldv, p.v, p, h, t0, L, V, vp);
  wt::load_rows_padded<kThreadsTc>(sq, kLd, qh, p.q_tok_stride, L, kcols, kChunk, kTileK);
  wt::load_rows_padded<kThreadsTc>(sk, kLd, kh, p.k_tok_stride, L, kcols, kChunk, kTileK);
  __syncthreads();

  // dO V^T on and below the diagonal; with dg also this K tile's Q K^T (blocks kScoreBlocks ..).
  const int ntasks = want_dg ? 2 * kScoreBlocks : kScoreBlocks;
  for (int task = warp; task < ntasks; task += kWarps) {
    const bool scores = task >= kScoreBlocks;
    int ib = 0, jb = 0;
    score_block(scores ? task - kScoreBlocks : task, ib, jb);
    if (ib >= nrb) continue;
    typename Fr::Acc acc;
    wmma::fill_fragment(acc, 0.f);
    if (!scores) {
      for (int vs = 0; vs < nvs; ++vs) {
        typename Fr::ARow a;
        typename Fr::BCol b;  // V^T: a column-major view of the row-major value tile
        wmma::load_matrix_sync(a, r1 + ib * kFrag * ldv + vs * kFrag, ldv);
        wmma::load_matrix_sync(b, r2 + jb * kFrag * ldv + vs * kFrag, ldv);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(sf + ib * kFrag * kLdf + jb * kFrag, acc, kLdf, wmma::mem_row_major);
    } else {
      for (int ks = 0; ks < nkb; ++ks) {
        typename Fr::ARow a;
        typename Fr::BCol b;
        wmma::load_matrix_sync(a, sq + ib * kFrag * kLd + ks * kFrag, kLd);
        wmma::load_matrix_sync(b, sk + jb * kFrag * kLd + ks * kFrag, kLd);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(sm + ib * kFrag * kLdf + jb * kFrag, acc, kLdf, wmma::mem_row_major);
    }
  }
  __syncthreads();

  // D (16-bit operand) and, for dg, M = D * (Q K^T) in fp32: the in-chunk part of q . dq - k . dk is
  // rowsum(M) - colsum(M) exactly, so rounding D for the products does not reach dg.
  for (int e = threadIdx.x; e < kChunk * kChunk; e += kThreadsTc) {
    const int i = e / kChunk, j = e % kChunk;
    float x = 0.f;
    if (i < L && j <= i) x = scale * expf(sb[i] - sb[j]) * sf[i * kLdf + j];
    sd[i * kLd + j] = from_float<T>(x);
    if (want_dg) sm[i * kLdf + j] = (i < L && j <= i) ? x * sm[i * kLdf + j] : 0.f;
  }
  // v is dead until the dk phase: S_c takes its region.
  // fp16 range factors 2^{-e} (down, before rounding) and 2^{e} (up, on the fp32 products) for the S_c and dS
  // slabs of this K tile: recomputed from the few tile maxima at each use rather than held in registers
  // across the phases (which pushed the fp16 kernel into spills).
  const int64_t max_off = (slot * H + h) * tiles + kt * ntv;
  const auto range_factor = [&](const float* __restrict__ maxima, bool up) {
    if constexpr (!kRangeScale) return 1.f;
    const int e = fp16_range_exponent_strided(maxima + max_off, ntv, 1);
    return ldexpf(1.f, up ? e : -e);
  };
  const float* __restrict__ S0 = states + (slot * H + h) * KV + int64_t(d0) * V;
  const float* __restrict__ dS = dstates + (slot * H + h) * KV + int64_t(d0) * V;
  const float* __restrict__ S1 = states + ((slot + 1) * H + h) * KV + int64_t(d0) * V;  // leaving the chunk
  state_slab_to_tile(r2, ldv, S0, V, kcols, V, kTileK, vp, range_factor(state_max, false));
  __syncthreads();

  // Warp w owns key columns 16 w ..; rows past nrb blocks and columns past nkb blocks of sf stay unused.
  const int cb = warp;
  float* __restrict__ col = sf + cb * kFrag;
  float* __restrict__ mypart = spart + warp * kChunk;
  typename Fr::Acc acc[kRowBlocks];
  if (warp < nkb) {
    // dq = scale e^{b_i} (dO S_c^T) + D K
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) wmma::fill_fragment(acc[r], 0.f);
    for (int vs = 0; vs < nvs; ++vs) {
      typename Fr::BCol b;  // S_c^T: a column-major view of the row-major [key rows x vp] slab
      wmma::load_matrix_sync(b, r2 + cb * kFrag * ldv + vs * kFrag, ldv);
#pragma unroll
      for (int r = 0; r < kRowBlocks; ++r) {
        if (r < nrb) {
          typename Fr::ARow a;
          wmma::load_matrix_sync(a, r1 + r * kFrag * ldv + vs * kFrag, ldv);
          wmma::mma_sync(acc[r], a, b, acc[r]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
    }
    __syncwarp();
    const float s_up = range_factor(state_max, true);
    for (int e = lane; e < nrb * kFrag * kFrag; e += 32) {
      const int i = e / kFrag, cc = e % kFrag;
      col[i * kLdf + cc] *= scale * expf(sb[i]) * s_up;
    }
    __syncwarp();
    if (want_dg) warp_row_dots<T, false>(mypart, sq + cb * kFrag, kLd, col, kLdf, nrb * kFrag, 1.f);
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) {
        wmma::load_matrix_sync(acc[r], col + r * kFrag * kLdf, kLdf, wmma::mem_row_major);
        for (int jb = 0; jb <= r; ++jb) {
          typename Fr::ARow a;
          typename Fr::BRow b;
          wmma::load_matrix_sync(a, sd + r * kFrag * kLd + jb * kFrag, kLd);
          wmma::load_matrix_sync(b, sk + jb * kFrag * kLd + cb * kFrag, kLd);
          wmma::mma_sync(acc[r], a, b, acc[r]);
        }
        wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
      }
    }
  } else if (want_dg) {
    for (int i = lane; i < kChunk; i += 32) mypart[i] = 0.f;
  }
  __syncthreads();

  // dq out; then the high part of dS over dO and v over S_c.
  T* __restrict__ dqh = static_cast<T*>(p.dq) + h * p.q_head_stride + t0 * p.q_tok_stride + d0;
  for (int e = threadIdx.x; e < kChunk * kTileK; e += kThreadsTc) {
    const int i = e / kTileK, d = e % kTileK;
    if (i < L && d < kcols) dqh[i * p.q_tok_stride + d] = from_float<T>(sf[i * kLdf + d]);
  }
  dstate_slab_part<T, false>(r1, ldv, dS, V, kcols, vp, range_factor(dstate_max, false));
  load_value_rows<T>(r2, ldv, p.v, p, h, t0, L, V, vp);
  // carry = sum(dS * S_{c+1}) over this K tile and every value column (fp32, from global memory).
  if (want_dg) {
    float carry = 0.f;
    for (int e = threadIdx.x; e < kcols * V; e += kThreadsTc) {
      const int d = e / V, cc = e % V;
      carry += dS[int64_t(d) * V + cc] * S1[int64_t(d) * V + cc];
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) carry += __shfl_xor_sync(0xffffffffu, carry, off);
    if (lane == 0) red[warp] = carry;
  }
  __syncthreads();

  // dk = e^{b_L - b_j} (V dS^T) + D^T Q, with dS as hi + lo: its rounding would otherwise dominate dg (the
  // error of k . dk_inter, weighted by up to 64 rows of the suffix sums), at one more product of this size.
  if (warp < nkb) {
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) wmma::fill_fragment(acc[r], 0.f);
  }
#pragma unroll
  for (int part = 0; part < 2; ++part) {
    if (part == 1) {
      __syncthreads();  // every warp is done with the high part
      dstate_slab_part<T, true>(r1, ldv, dS, V, kcols, vp, range_factor(dstate_max, false));
      __syncthreads();
    }
    if (warp < nkb) {
      for (int vs = 0; vs < nvs; ++vs) {
        typename Fr::BCol b;  // dS^T
        wmma::load_matrix_sync(b, r1 + cb * kFrag * ldv + vs * kFrag, ldv);
#pragma unroll
        for (int r = 0; r < kRowBlocks; ++r) {
          if (r < nrb) {
            typename Fr::ARow a;
            wmma::load_matrix_sync(a, r2 + r * kFrag * ldv + vs * kFrag, ldv);
            wmma::mma_sync(acc[r], a, b, acc[r]);
          }
        }
      }
    }
  }
  if (warp < nkb) {
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
    }
    __syncwarp();
    const float bl = sb[kChunk - 1], ds_up = range_factor(dstate_max, true);
    for (int e = lane; e < nrb * kFrag * kFrag; e += 32) {
      const int j = e / kFrag, cc = e % kFrag;
      col[j * kLdf + cc] *= expf(bl - sb[j]) * ds_up;
    }
    __syncwarp();
    if (want_dg) warp_row_dots<T, true>(mypart, sk + cb * kFrag, kLd, col, kLdf, nrb * kFrag, -1.f);
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) {
        wmma::load_matrix_sync(acc[r], col + r * kFrag * kLdf, kLdf, wmma::mem_row_major);
        add_transposed_lower(acc[r], sd, kLd, sq, kLd, r, cb, nrb);  // + D^T Q
        wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
      }
    }
  }
  __syncthreads();

  T* __restrict__ dkh = static_cast<T*>(p.dk) + h * p.k_head_stride + t0 * p.k_tok_stride + d0;
  for (int e = threadIdx.x; e < kChunk * kTileK; e += kThreadsTc) {
    const int j = e / kTileK, d = e % kTileK;
    if (j < L && d < kcols) dkh[j * p.k_tok_stride + d] = from_float<T>(sf[j * kLdf + d]);
  }
  if (!want_dg) return;  // uniform over the block

  // Row i of this K tile: (q . dq - k . dk)_i = the warps' inter-chunk parts + rowsum_i(M) - colsum_i(M).
  // Two threads per row (consecutive lanes), 32 of the 64 rows / columns of M each.
  {
    const int i = threadIdx.x / 2, half = threadIdx.x % 2;
    float s = 0.f;
    if (i < L) {
      if (half == 0) {
#pragma unroll
        for (int w = 0; w < kWarps; ++w) s += spart[w * kChunk + i];
      }
      for (int jj = 0; jj < kChunk / 2; ++jj) {
        const int j = half * (kChunk / 2) + jj;
        s += sm[i * kLdf + j] - sm[j * kLdf + i];
      }
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if (half == 0) srow[i] = s;  // 0 for rows past L
  }
  __syncthreads();

  if (warp == 0) {
    // In-chunk suffix sums of the row sums (two rows per lane, then a reverse warp scan), plus the carry.
    const int r0 = 2 * lane, r1i = r0 + 1;
    const float x0 = srow[r0], x1 = srow[r1i];
    float s = x0 + x1;
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const float y = __shfl_sync(0xffffffffu, s, min(lane + off, 31));
      if (lane + off < 32) s += y;
    }
    float after = __shfl_sync(0xffffffffu, s, min(lane + 1, 31));
    if (lane == 31) after = 0.f;
    float cy = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) cy += red[w];
    const float g1 = after + x1 + cy, g0 = g1 + x0;
    float* __restrict__ out =
        gridDim.y == 1 ? static_cast<float*>(p.dg) : dg_partial + int64_t(kt) * p.batch * p.seqlen * H;
    if (r0 < L) out[(t0 + r0) * H + h] = g0;
    if (r1i < L) out[(t0 + r1i) * H + h] = g1;
  }
}

// 5. dg[e] = sum over K tiles of the partials. A template so that the instantiation units share one weak
// definition.
template <int kUnused = 0>
__global__ void __launch_bounds__(256)
    tc_dg_reduce_kernel(const float* __restrict__ partial, float* __restrict__ dg, int64_t count, int k_tiles) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.f;
    for (int kt = 0; kt < k_tiles; ++kt) s += partial[int64_t(kt) * count + e];
    dg[e] = s;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Launchers, one per pass so that each pass compiles in its own instantiation unit.

template <typename T>
void launch_bwd_states(const BwdParams& p, const BwdPtrs& w, cudaStream_t stream) {
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const int64_t nh = p.num_seqs * p.heads;
  const dim3 grid(static_cast<unsigned>(nh), static_cast<unsigned>(ceil_div(p.dim_k, kTileK)),
                  static_cast<unsigned>(ceil_div(p.dim_v, kTileV)));
  {
    FwdParams fp = p;
    fp.ht = nullptr;  // the final states go to their slots
    const size_t smem = StateSmem<T>(true).launch_bytes;
    auto kernel = tc_state_kernel<T, kFp16, true, true>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, kThreadsTc, smem, stream>>>(fp, w.states, w.state_max);
    LINATTN_CHECK_LAUNCH();
  }
  {
    const size_t smem = DStateSmemTc<T>().launch_bytes;
    auto kernel = tc_dstate_kernel<T, kFp16>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, kThreadsTc, smem, stream>>>(p, w.dstates, w.dstate_max);
    LINATTN_CHECK_LAUNCH();
  }
}

template <typename T>
void launch_bwd_dv(const BwdParams& p, const BwdPtrs& w, cudaStream_t stream) {
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const size_t smem = DvSmemTc<T>(wt::round_up_frag(p.dim_k)).launch_bytes;
  auto kernel = tc_dv_kernel<T, kFp16>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(num_state_slots(p)), static_cast<unsigned>(ceil_div(p.dim_v, kTileV)),
                  static_cast<unsigned>(p.heads));
  kernel<<<grid, kThreadsTc, smem, stream>>>(p, w.dstates, w.dstate_max);
  LINATTN_CHECK_LAUNCH();
}

template <typename T>
void launch_bwd_dqk(const BwdParams& p, const BwdPtrs& w, cudaStream_t stream) {
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const int64_t ntk = ceil_div(p.dim_k, kTileK);
  {
    const size_t smem = DqkSmemTc<T>(wt::round_up_frag(p.dim_v)).launch_bytes;
    auto kernel = tc_dqk_kernel<T, kFp16>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(num_state_slots(p)), static_cast<unsigned>(ntk),
                    static_cast<unsigned>(p.heads));
    kernel<<<grid, kThreadsTc, smem, stream>>>(p, w.states, w.dstates, w.state_max, w.dstate_max, w.dg_partial);
    LINATTN_CHECK_LAUNCH();
  }
  if (p.dg != nullptr && ntk > 1) {
    const int64_t count = p.batch * p.seqlen * p.heads;
    const int64_t blocks = std::min<int64_t>(ceil_div(count, 256), 65535);
    tc_dg_reduce_kernel<><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(w.dg_partial, static_cast<float*>(p.dg),
                                                                           count, static_cast<int>(ntk));
    LINATTN_CHECK_LAUNCH();
  }
}

// Each pass is compiled once per dtype in ops/gla/cuda/inst/gla_bwd_tc_<pass>_<dtype>.cu.
#define LINATTN_GLA_TC_BWD_PASSES(PREFIX, T)                                                      \
  PREFIX template void launch_bwd_states<T>(const BwdParams&, const BwdPtrs&, cudaStream_t); \
  PREFIX template void launch_bwd_dv<T>(const BwdParams&, const BwdPtrs&, cudaStream_t);     \
  PREFIX template void launch_bwd_dqk<T>(const BwdParams&, const BwdPtrs&, cudaStream_t);
LINATTN_GLA_TC_BWD_PASSES(extern, __half)
LINATTN_GLA_TC_BWD_PASSES(extern, __nv_bfloat16)
#undef LINATTN_GLA_TC_BWD_PASSES

}  // namespace tc

template <DType D>
void chunk_backward_tc(const BwdParams& p, float* workspace, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core backward takes fp16 or bf16 inputs");
  using T = typename StorageOf<D>::type;
  if (p.num_seqs * p.heads == 0) return;
  const TcBwdWorkspaceLayout lay = chunk_backward_tc_workspace(p);
  tc::BwdPtrs w;
  w.states = workspace + lay.states;
  w.dstates = workspace + lay.dstates;
  w.state_max = workspace + lay.state_max;
  w.dstate_max = workspace + lay.dstate_max;
  w.dg_partial = lay.total > lay.dg_partial ? workspace + lay.dg_partial : nullptr;
  tc::launch_bwd_states<T>(p, w, stream);
  if (p.batch * p.seqlen == 0) return;  // no tokens: nothing but dh0
  tc::launch_bwd_dv<T>(p, w, stream);
  tc::launch_bwd_dqk<T>(p, w, stream);
}

}  // namespace linattn::gla::gpu
