#pragma once
// Tensor-core chunked forward of simple GLA / lightning attention: one log gate per (token, head)
// (p.g_k_stride == 0: a per-token gate, a per-head constant, or none), fp16 / bf16 inputs, fp32
// accumulation. With b the in-chunk cumulative gate (a scalar per row) and b_L its value at the last row:
//   o_i     = scale * [ e^{b_i} q_i^T S_c + sum_{j<=i} e^{b_i - b_j} (q_i . k_j) v_j ]
//   S_{c+1} = e^{b_L} S_c + sum_j e^{b_L - b_j} k_j v_j^T
// Two launches:
//  1. tc_state_kernel, per (sequence, head, 64-row K tile, 64-column V tile), chunks in order: the fp32 state
//     tile stays in wmma accumulators across chunks (the decay is a uniform scale, legal on any fragment
//     layout) and is stored, as it enters each chunk, into the fp32 workspace (slots of num_state_slots);
//     fp16 also stores the tile's max |S|. ht comes from the accumulators at the end.
//  2. tc_output_kernel, per (chunk slot, 64-column V tile, head), every chunk in parallel: Q K^T on tensor
//     cores, the causal decay mask in fp32, then Q S_c and P V on tensor cores.
//
// Precision (the choice and why): every tensor-core operand is rounded once to the input dtype: q, k, v as
// given, the decayed keys k_j e^{b_L - b_j}, the masked scores P and the chunk-start states S_c. Sums are
// fp32 and the carried state never leaves fp32 (kernel 1 decays its accumulators, kernel 2 reads fp32 S_c),
// so each rounding is the size of the inputs' own and none compounds over chunks. That keeps the
// inter-chunk product on tensor cores instead of fp32 SIMT, where it would be half the work. q stays exact:
// the row factor e^{b_i} is applied in fp32 to Q S_c, not folded into q. fp16 has 5 exponent bits, so S_c is
// scaled by an exact power of two chosen from kernel 1's tile maxima before the conversion (large
// undecayed states would overflow otherwise); bf16 has fp32's range and skips it. Not guarded: fp16 scores
// |scale q.k| above 65504 (fla has the same limit).
// Stability: the only exponents are b_i - b_j with j <= i (masked before the exp), b_i and b_L - b_j.
#include <type_traits>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "csrc/cuda/wmma_tiles.cuh"
#include "ops/gla/cuda/gla_common.cuh"

namespace linattn::gla::gpu {
namespace tc {

namespace wt = cuda_utils::wmma_tiles;
namespace cu = cuda_utils;
namespace wmma = nvcuda::wmma;
using wt::kFrag;

constexpr int kWarps = 4;
constexpr int kThreadsTc = 32 * kWarps;
constexpr int kTileK = static_cast<int>(kTcTileK);
constexpr int kTileV = static_cast<int>(kTcTileV);
constexpr int kRowBlocks = kChunk / kFrag;                          // 16-row blocks of a chunk
constexpr int kScoreBlocks = kRowBlocks * (kRowBlocks + 1) / 2;     // blocks on and below the diagonal
constexpr float kFp16Headroom = 14.f;                               // scaled |S_c| < 2^14 < fp16 max

static_assert(kTileK / kFrag == kWarps, "the state kernel gives warp w the key rows 16w .. 16w + 15");
static_assert(kTileV / kFrag == kWarps, "the output kernel gives warp w the value columns 16w .. 16w + 15");
static_assert(kTileV == kChunk, "the fp32 score tile [64 x 64] is reused as the [64 x kTileV] output tile");

template <typename T>
using RowTile = wt::SmemTile<T, kChunk, kTileV>;  // [chunk rows x 64]: keys (kernel 1), values, P
using F32Tile = wt::SmemTile<float, kChunk, kTileV>;  // fp32 staging: state tile, scores, output

// sb[i] = g_{t0} + .. + g_{t0+i}, the in-chunk cumulative log gate of a scalar gate; rows i >= L and a missing
// gate add 0, so sb[kChunk - 1] = b_L. Warp 0 only (two rows per lane, then a warp scan); the caller
// synchronises before the block reads sb. Both kernels call it, so they see the same bits.
__device__ __forceinline__ void scalar_gate_cumsum(float* __restrict__ sb, const FwdParams& p, int64_t t0,
                                                   int64_t h, int L) {
  static_assert(kChunk == 64, "two rows per lane of one warp");
  const int lane = threadIdx.x % 32, r0 = 2 * lane, r1 = r0 + 1;
  float x0 = 0.f, x1 = 0.f;
  if (p.g != nullptr) {
    const float* __restrict__ gh = static_cast<const float*>(p.g) + h * p.g_head_stride;
    if (r0 < L) x0 = gh[(t0 + r0) * p.g_tok_stride];
    if (r1 < L) x1 = gh[(t0 + r1) * p.g_tok_stride];
  }
  float s = x0 + x1;  // inclusive scan over lanes (a shuffle from lane - off: no __shfl_up needed)
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const float y = __shfl_sync(0xffffffffu, s, max(lane - off, 0));
    if (lane >= off) s += y;
  }
  float before = __shfl_sync(0xffffffffu, s, max(lane - 1, 0));
  if (lane == 0) before = 0.f;
  sb[r0] = before + x0;
  sb[r1] = before + x0 + x1;
}

// ---------------------------------------------------------------------------------------------------------
// 1. chunk-start states

template <typename T>
struct StateSmem {  // byte offsets into the realigned dynamic buffer
  size_t k, k_lo, v, stage, gate, red, launch_bytes;
  __host__ __device__ explicit StateSmem(bool split_keys = false) {
    wt::SmemCarver c;
    k = c.take<T>(RowTile<T>::kElems);      // decayed keys [64 rows x 64 key columns]
    k_lo = split_keys ? c.take<T>(RowTile<T>::kElems) : k;  // their rounding residue (kSplitKeys)
    v = c.take<T>(RowTile<T>::kElems);      // values [64 rows x 64 value columns]
    stage = c.take<float>(F32Tile::kElems);  // the state tile between accumulators and global memory
    gate = c.take<float>(kChunk);
    red = c.take<float>(kWarps);
    launch_bytes = c.launch_bytes();
  }
};

// stage <- rows d < rows, columns c < cols of a [*, V] fp32 state (src at its first element), 0 elsewhere.
__device__ __forceinline__ void state_to_stage(float* __restrict__ stage, const float* __restrict__ src, int V,
                                               int rows, int cols) {
  cu::batched_copy<kThreadsTc, 4>(
      kTileK * kTileV,
      [&](int e) {
        const int d = e / kTileV, c = e % kTileV;
        return (src != nullptr && d < rows && c < cols) ? src[int64_t(d) * V + c] : 0.f;
      },
      [&](int e, float x) { stage[(e / kTileV) * F32Tile::kLd + e % kTileV] = x; });
}

// The reverse copy; returns the max |x| this thread copied.
__device__ __forceinline__ float stage_to_state(float* __restrict__ dst, const float* __restrict__ stage, int V,
                                                int rows, int cols) {
  float m = 0.f;
  for (int e = threadIdx.x; e < kTileK * kTileV; e += kThreadsTc) {
    const int d = e / kTileV, c = e % kTileV;
    if (d < rows && c < cols) {
      const float x = stage[d * F32Tile::kLd + c];
      dst[int64_t(d) * V + c] = x;
      m = fmaxf(m, fabsf(x));
    }
  }
  return m;
}

// The sequential state kernels (scalar and per-key gate, forward and backward) carry the warp's 16 key rows of
// the tile in accumulators, one per 16-column block, and pass them through the fp32 stage once per chunk.
template <typename Acc, int kBlocks>
__device__ __forceinline__ void stage_to_acc(Acc (&acc)[kBlocks], const float* __restrict__ stage, int warp) {
#pragma unroll
  for (int cb = 0; cb < kBlocks; ++cb) {
    wmma::load_matrix_sync(acc[cb], stage + warp * kFrag * F32Tile::kLd + cb * kFrag, F32Tile::kLd,
                           wmma::mem_row_major);
  }
}
template <typename Acc, int kBlocks>
__device__ __forceinline__ void acc_to_stage(float* __restrict__ stage, const Acc (&acc)[kBlocks], int warp) {
#pragma unroll
  for (int cb = 0; cb < kBlocks; ++cb) {
    wmma::store_matrix_sync(stage + warp * kFrag * F32Tile::kLd + cb * kFrag, acc[cb], F32Tile::kLd,
                            wmma::mem_row_major);
  }
}

// fp16 tile maxima in two steps around the barrier that follows the stage copy: each warp's max |S| of the
// copy into red[warp], then thread 0 folds the warps into *dst.
template <bool kTrackMax>
__device__ __forceinline__ void warp_max_to_red(float m, float* __restrict__ red, int warp, int lane) {
  if (kTrackMax) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    if (lane == 0) red[warp] = m;
  }
}
template <bool kTrackMax>
__device__ __forceinline__ void red_to_tile_max(float* __restrict__ dst, const float* __restrict__ red) {
  if (kTrackMax && threadIdx.x == 0) {
    float mm = red[0];
    for (int w = 1; w < kWarps; ++w) mm = fmaxf(mm, red[w]);
    *dst = mm;
  }
}

// The backward's states pass sets both flags. kFinalSlot: the state leaving the last chunk also goes to the slot
// after the sequence's chunks, where the backward's gate gradient reads it as "the state leaving the chunk".
// kSplitKeys: the decayed keys enter as hi + lo (two 16-bit parts, twice the products): the gate gradient
// sums dS * S over the state once per chunk and adds it to all 64 rows, so one rounding of the decayed keys
// would be weighted by the chunk length there (the forward's outputs see it once).
template <typename T, bool kTrackMax, bool kFinalSlot = false, bool kSplitKeys = false>
__global__ void __launch_bounds__(kThreadsTc)
    tc_state_kernel(const FwdParams p, float* __restrict__ states, float* __restrict__ tile_max) {
  using Fr = wt::Frag<T>;
  constexpr int kLd = RowTile<T>::kLd;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const StateSmem<T> lay(kSplitKeys);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ skl = reinterpret_cast<T*>(base + lay.k_lo);
  T* __restrict__ sv = reinterpret_cast<T*>(base + lay.v);
  float* __restrict__ stage = reinterpret_cast<float*>(base + lay.stage);
  float* __restrict__ sb = reinterpret_cast<float*>(base + lay.gate);
  float* __restrict__ red = reinterpret_cast<float*>(base + lay.red);
  const bool split = kSplitKeys && p.g != nullptr;  // undecayed keys are exact in the input dtype

  const int64_t H = p.heads, nh = blockIdx.x, n = nh / H, h = nh % H;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kt = blockIdx.y, vt = blockIdx.z;
  const int d0 = kt * kTileK, v0 = vt * kTileV;
  const int kcols = min(kTileK, K - d0), vcols = min(kTileV, V - v0);
  const int nvb = static_cast<int>(ceil_div(vcols, kFrag));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool active = warp * kFrag < kcols;  // the warp's key rows exist
  const SeqSpan seq = seq_span(p, n);
  const int64_t nchunks = ceil_div(seq.len, kChunk), slot0 = slot_base(seq.bos, n);
  const int64_t KV = int64_t(K) * V, ntv = ceil_div(V, kTileV), tiles = ceil_div(K, kTileK) * ntv;
  const int64_t tile_off = int64_t(d0) * V + v0;  // of this tile inside a [K, V] state
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + d0;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride + v0;

  const float* __restrict__ h0 = p.h0 != nullptr ? static_cast<const float*>(p.h0) + nh * KV + tile_off : nullptr;
  state_to_stage(stage, h0, V, kcols, vcols);
  __syncthreads();
  typename Fr::Acc acc[kWarps];  // columns 16 cb .. of the warp's 16 key rows
  stage_to_acc(acc, stage, warp);

  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t t0 = seq.bos + c * kChunk;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    __syncthreads();  // the last chunk's products are done with sk, sv and sb
    acc_to_stage(stage, acc, warp);
    if (warp == 0) scalar_gate_cumsum(sb, p, t0, h, L);
    __syncthreads();

    const int64_t slot = slot0 + c;
    float m = stage_to_state(states + (slot * H + h) * KV + tile_off, stage, V, kcols, vcols);
    warp_max_to_red<kTrackMax>(m, red, warp, lane);
    if (p.g == nullptr) {
      wt::load_rows_padded<kThreadsTc>(sk, kLd, kh + t0 * p.k_tok_stride, p.k_tok_stride, L, kcols, kChunk, kTileK);
    } else {
      const float bl = sb[kChunk - 1];
      cu::batched_copy<kThreadsTc, 4>(
          kChunk * kTileK,
          [&](int e) {
            const int j = e / kTileK, d = e % kTileK;
            return (j < L && d < kcols) ? kh[(t0 + j) * p.k_tok_stride + d] : from_float<T>(0.f);
          },
          [&](int e, const T& raw) {
            const int j = e / kTileK, d = e % kTileK;
            const float x = j < L ? to_float(raw) * expf(bl - sb[j]) : 0.f;
            const T hi = from_float<T>(x);
            sk[j * kLd + d] = hi;
            if (kSplitKeys) skl[j * kLd + d] = from_float<T>(x - to_float(hi));
          });
    }
    wt::load_rows_padded<kThreadsTc>(sv, kLd, vh + t0 * p.v_tok_stride, p.v_tok_stride, L, vcols, kChunk, kTileV);
    __syncthreads();

    red_to_tile_max<kTrackMax>(tile_max + (slot * H + h) * tiles + kt * ntv + vt, red);
    if (active) {
      const float decay = expf(sb[kChunk - 1]);
#pragma unroll
      for (int cb = 0; cb < kWarps; ++cb) wt::scale_fragment(acc[cb], decay);
      const int nrb = static_cast<int>(ceil_div(L, kFrag));  // rows past L are zero
      for (int jb = 0; jb < nrb; ++jb) {
        typename Fr::ACol a, a_lo;  // (decayed K)^T: a column-major view of the row-major key tile
        wmma::load_matrix_sync(a, sk + jb * kFrag * kLd + warp * kFrag, kLd);
        if (split) wmma::load_matrix_sync(a_lo, skl + jb * kFrag * kLd + warp * kFrag, kLd);
#pragma unroll
        for (int cb = 0; cb < kWarps; ++cb) {
          if (cb < nvb) {
            typename Fr::BRow b;
            wmma::load_matrix_sync(b, sv + jb * kFrag * kLd + cb * kFrag, kLd);
            wmma::mma_sync(acc[cb], a, b, acc[cb]);
            if (split) wmma::mma_sync(acc[cb], a_lo, b, acc[cb]);
          }
        }
      }
    }
  }

  if (!kFinalSlot && p.ht == nullptr) return;  // uniform over the block
  __syncthreads();  // the stage was last read before the final chunk's products
  acc_to_stage(stage, acc, warp);
  __syncthreads();
  if (kFinalSlot) stage_to_state(states + ((slot0 + nchunks) * H + h) * KV + tile_off, stage, V, kcols, vcols);
  if (p.ht != nullptr) stage_to_state(static_cast<float*>(p.ht) + nh * KV + tile_off, stage, V, kcols, vcols);
}

// ---------------------------------------------------------------------------------------------------------
// 2. outputs

template <typename T>
struct OutSmem {  // byte offsets into the realigned dynamic buffer, for K padded to kp
  int ldq;
  size_t q, k, s, v, pm, f32, gate, launch_bytes;
  __host__ __device__ explicit OutSmem(int kp) {
    ldq = wt::padded_ld<T>(kp);
    wt::SmemCarver c;
    q = c.take<T>(int64_t(kChunk) * ldq);  // [64 x kp] queries
    // keys are dead once the scores are stored and S_c is loaded after that: one region for both
    const int64_t k_elems = int64_t(kChunk) * ldq, s_elems = int64_t(kp) * RowTile<T>::kLd;
    k = s = c.take<T>(k_elems > s_elems ? k_elems : s_elems);  // [64 x kp] keys, then [kp x 64] S_c
    v = c.take<T>(RowTile<T>::kElems);     // [64 x 64] values
    pm = c.take<T>(RowTile<T>::kElems);    // [64 x 64] masked, decayed, scaled scores P
    f32 = c.take<float>(F32Tile::kElems);  // [64 x 64] fp32 scores, then the output tile
    gate = c.take<float>(kChunk);
    launch_bytes = c.launch_bytes();
  }
};

// Block blk (0 .. kScoreBlocks - 1) of the lower triangle of 16 x 16 blocks, row by row.
__device__ __forceinline__ void score_block(int blk, int& i, int& j) {
  i = 0;
  while (blk > i) {
    blk -= i + 1;
    ++i;
  }
  j = blk;
}

// fp16: exponent e with m 2^-e < 2^14 for a tile maximum m (0 for a zero or non-finite m).
__device__ __forceinline__ int fp16_exponent_for_max(float m) {
  if (!(m > 0.f) || !isfinite(m)) return 0;
  int e = 0;
  frexpf(m, &e);  // m < 2^e
  e -= static_cast<int>(kFp16Headroom);
  return e < -120 ? -120 : (e > 120 ? 120 : e);  // 2^e and 2^-e stay normal floats
}

// The exponent for max |S| over `count` tile maxima `stride` apart (the K tiles of one V tile, or the V tiles
// of one K tile): one exponent per operand slab, so a product summed over the slab sees a single scale.
__device__ __forceinline__ int fp16_range_exponent_strided(const float* __restrict__ maxima, int64_t count,
                                                           int64_t stride) {
  float m = 0.f;
  for (int64_t i = 0; i < count; ++i) m = fmaxf(m, maxima[i * stride]);
  return fp16_exponent_for_max(m);
}

// Over the K tiles of V tile vt.
__device__ __forceinline__ int fp16_range_exponent(const float* __restrict__ maxima, int64_t ntk, int64_t ntv,
                                                   int vt) {
  return fp16_range_exponent_strided(maxima + vt, ntk, ntv);
}

// fp16 range factors of V tile vt of one (slot, head) from the K-tile maxima: 2^{-e} for the state slab before its
// rounding, 2^{e} for the fp32 products (one exponent per V tile, since those products sum over all of K).
struct RangeFactors {
  float down = 1.f, up = 1.f;
};
template <bool kRangeScale>
__device__ __forceinline__ RangeFactors v_tile_range_factors(const float* __restrict__ maxima, int64_t slot,
                                                             int64_t H, int64_t h, int K, int V, int vt) {
  const int64_t ntk = ceil_div(K, kTileK), ntv = ceil_div(V, kTileV);
  RangeFactors r;
  if constexpr (kRangeScale) {
    const int e = fp16_range_exponent(maxima + (slot * H + h) * ntk * ntv, ntk, ntv, vt);
    r.down = ldexpf(1.f, -e);
    r.up = ldexpf(1.f, e);
  }
  return r;
}

// A [nrows x ncols] slab of a [*, V] fp32 state (S at its first element) into a 16-bit tile, times `factor` (a
// power of two); zeros past `nrows` / `ncols` up to [total_rows x total_cols]. Shared by the forward's S_c and
// the backward's S_c / dS slabs; all threads, the caller synchronises afterwards.
template <typename T>
__device__ __forceinline__ void state_slab_to_tile(T* __restrict__ dst, int ld, const float* __restrict__ S, int V,
                                                   int nrows, int ncols, int total_rows, int total_cols,
                                                   float factor) {
  cu::batched_copy<kThreadsTc, 8>(
      total_rows * total_cols,
      [&](int e) {
        const int d = e / total_cols, c = e % total_cols;
        return (d < nrows && c < ncols) ? S[int64_t(d) * V + c] : 0.f;
      },
      [&](int e, float x) { dst[(e / total_cols) * ld + e % total_cols] = from_float<T>(x * factor); });
}

// Raw scores q_i . k_j of the 16 x 16 blocks on and below the diagonal into the fp32 tile sf (round-robin: 3, 3,
// 2, 2 blocks per warp); blocks of rows past nrb row blocks stay unwritten.
template <typename T>
__device__ __forceinline__ void causal_scores(float* __restrict__ sf, const T* __restrict__ sq,
                                              const T* __restrict__ sk, int ldq, int nks, int nrb, int warp) {
  using Fr = wt::Frag<T>;
  constexpr int kLdf = F32Tile::kLd;
  for (int blk = warp; blk < kScoreBlocks; blk += kWarps) {
    int ib = 0, jb = 0;
    score_block(blk, ib, jb);
    if (ib >= nrb) continue;
    typename Fr::Acc acc;
    wmma::fill_fragment(acc, 0.f);
    for (int ks = 0; ks < nks; ++ks) {
      typename Fr::ARow a;
      typename Fr::BCol b;  // K^T: a column-major view of the row-major key tile
      wmma::load_matrix_sync(a, sq + ib * kFrag * ldq + ks * kFrag, ldq);
      wmma::load_matrix_sync(b, sk + jb * kFrag * ldq + ks * kFrag, ldq);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(sf + ib * kFrag * kLdf + jb * kFrag, acc, kLdf, wmma::mem_row_major);
  }
}

// P = scale e^{b_i - b_j} (q_i . k_j) for j <= i < L, else 0; the mask comes first, so the exp never sees a
// positive exponent (and unwritten score blocks are never read).
template <typename T>
__device__ __forceinline__ void decayed_scores(T* __restrict__ sp, const float* __restrict__ sf,
                                               const float* __restrict__ sb, int L, float scale) {
  constexpr int kLdv = RowTile<T>::kLd, kLdf = F32Tile::kLd;
  for (int e = threadIdx.x; e < kChunk * kChunk; e += kThreadsTc) {
    const int i = e / kChunk, j = e % kChunk;
    float x = 0.f;
    if (i < L && j <= i) x = scale * expf(sb[i] - sb[j]) * sf[i * kLdf + j];
    sp[i * kLdv + j] = from_float<T>(x);
  }
}

template <typename T, bool kRangeScale>
__global__ void __launch_bounds__(kThreadsTc)
    tc_output_kernel(const FwdParams p, const float* __restrict__ states, const float* __restrict__ tile_max) {
  int64_t n = 0, c = 0;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  using Fr = wt::Frag<T>;
  constexpr int kLdv = RowTile<T>::kLd, kLdf = F32Tile::kLd;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kp = wt::round_up_frag(K), nks = kp / kFrag;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const OutSmem<T> lay(kp);
  const int ldq = lay.ldq;
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ ss = reinterpret_cast<T*>(base + lay.s);
  T* __restrict__ sv = reinterpret_cast<T*>(base + lay.v);
  T* __restrict__ sp = reinterpret_cast<T*>(base + lay.pm);
  float* __restrict__ sf = reinterpret_cast<float*>(base + lay.f32);
  float* __restrict__ sb = reinterpret_cast<float*>(base + lay.gate);

  const int64_t slot = blockIdx.x, H = p.heads, h = blockIdx.z;
  const int vt = blockIdx.y, v0 = vt * kTileV;
  const int vcols = min(kTileV, V - v0), nvb = static_cast<int>(ceil_div(vcols, kFrag));
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int nrb = static_cast<int>(ceil_div(L, kFrag));  // row blocks holding real rows
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float scale = static_cast<float>(p.scale);

  if (warp == 0) scalar_gate_cumsum(sb, p, t0, h, L);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + t0 * p.q_tok_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + t0 * p.k_tok_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride + t0 * p.v_tok_stride + v0;
  wt::load_rows_padded<kThreadsTc>(sq, ldq, qh, p.q_tok_stride, L, K, kChunk, kp);
  wt::load_rows_padded<kThreadsTc>(sk, ldq, kh, p.k_tok_stride, L, K, kChunk, kp);
  wt::load_rows_padded<kThreadsTc>(sv, kLdv, vh, p.v_tok_stride, L, vcols, kChunk, kTileV);
  __syncthreads();

  causal_scores(sf, sq, sk, ldq, nks, nrb, warp);
  __syncthreads();
  decayed_scores(sp, sf, sb, L, scale);
  // S_c (fp32) -> the input dtype, over the keys' region.
  const RangeFactors range = v_tile_range_factors<kRangeScale>(tile_max, slot, H, h, K, V, vt);
  state_slab_to_tile(ss, kLdv, states + (slot * H + h) * int64_t(K) * V + v0, V, K, vcols, kp, kTileV, range.down);
  __syncthreads();

  // Warp w owns value columns 16 w ..: Q S_c, then the fp32 row factor, then + P V (causal blocks only).
  if (warp < nvb) {
    const int cb = warp;
    typename Fr::Acc acc[kRowBlocks];
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) wmma::fill_fragment(acc[r], 0.f);
    for (int ks = 0; ks < nks; ++ks) {
      typename Fr::BRow b;
      wmma::load_matrix_sync(b, ss + ks * kFrag * kLdv + cb * kFrag, kLdv);
#pragma unroll
      for (int r = 0; r < kRowBlocks; ++r) {
        if (r < nrb) {
          typename Fr::ARow a;
          wmma::load_matrix_sync(a, sq + r * kFrag * ldq + ks * kFrag, ldq);
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
    for (int e = lane; e < nrb * kFrag * kFrag; e += 32) {
      const int i = e / kFrag, cc = e % kFrag;
      col[i * kLdf + cc] *= scale * expf(sb[i]) * range.up;
    }
    __syncwarp();
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) {
        wmma::load_matrix_sync(acc[r], col + r * kFrag * kLdf, kLdf, wmma::mem_row_major);
        for (int jb = 0; jb <= r; ++jb) {
          typename Fr::ARow a;
          typename Fr::BRow b;
          wmma::load_matrix_sync(a, sp + r * kFrag * kLdv + jb * kFrag, kLdv);
          wmma::load_matrix_sync(b, sv + jb * kFrag * kLdv + cb * kFrag, kLdv);
          wmma::mma_sync(acc[r], a, b, acc[r]);
        }
        wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
      }
    }
  }
  __syncthreads();

  const int64_t o_off = h * p.v_head_stride + t0 * p.v_tok_stride + v0;
  T* __restrict__ oh = static_cast<T*>(p.o) + o_off;
  const T* __restrict__ mh = p.o_mix != nullptr ? static_cast<const T*>(p.o_mix) + o_off : nullptr;
  for (int e = threadIdx.x; e < kChunk * kTileV; e += kThreadsTc) {
    const int i = e / kTileV, col = e % kTileV;
    const int64_t off = i * p.v_tok_stride + col;
    if (i < L && col < vcols) oh[off] = output_value<T>(p, mh, off, sf[i * kLdf + col]);
  }
}

template <typename T>
void launch(const FwdParams& p, float* workspace, cudaStream_t stream) {
  const int64_t nh = p.num_seqs * p.heads;
  if (nh == 0) return;
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const int64_t slots = num_state_slots(p);
  const int64_t ntk = ceil_div(p.dim_k, kTileK), ntv = ceil_div(p.dim_v, kTileV);
  float* states = workspace;
  float* tile_max = workspace + slots * p.heads * p.dim_k * p.dim_v;
  {
    const size_t smem = StateSmem<T>().launch_bytes;
    auto kernel = tc_state_kernel<T, kFp16>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(nh), static_cast<unsigned>(ntk), static_cast<unsigned>(ntv));
    kernel<<<grid, kThreadsTc, smem, stream>>>(p, states, tile_max);
    LINATTN_CHECK_LAUNCH();
  }
  if (p.batch * p.seqlen == 0) return;  // no tokens: only the final states
  {
    const size_t smem = OutSmem<T>(wt::round_up_frag(p.dim_k)).launch_bytes;
    auto kernel = tc_output_kernel<T, kFp16>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(ntv), static_cast<unsigned>(p.heads));
    kernel<<<grid, kThreadsTc, smem, stream>>>(p, states, tile_max);
    LINATTN_CHECK_LAUNCH();
  }
}

}  // namespace tc

template <DType D>
void chunk_forward_tc(const FwdParams& p, float* workspace, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core forward takes fp16 or bf16 inputs");
  tc::launch<typename StorageOf<D>::type>(p, workspace, stream);
}

}  // namespace linattn::gla::gpu
