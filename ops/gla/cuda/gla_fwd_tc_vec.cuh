#pragma once
// Tensor-core chunked forward of GLA with per-key (vector) log gates (p.g_k_stride != 0), fp16 / bf16 inputs,
// fp32 accumulation. G is the in-chunk cumulative log gate, one value per (row i, key d); G never increases
// down a column, and G_L is its last row:
//   o_i     = scale * [ (q_i e^{G_i})^T S_c + sum_{j<=i} A_ij v_j ],   A_ij = sum_d q_id k_jd e^{G_id - G_jd}
//   S_{c+1} = diag(e^{G_L}) S_c + sum_j (k_j e^{G_L - G_j}) v_j^T
// Same two launches and the same workspace as the scalar-gate forward (gla_fwd_tc.cuh):
//  1. vec_state_kernel, per (sequence, head, 64-row K tile, 64-column V tile), chunks in order. The decay is a
//     different factor per state row, which cannot be applied to a wmma fragment without knowing its layout,
//     so the fp32 tile makes one round trip through shared memory per chunk (it is staged there anyway to be
//     stored into the workspace) and is decayed row by row in fp32 before it returns to the accumulators.
//  2. vec_output_kernel, per (chunk slot, 64-column V tile, head), every chunk in parallel. The gate differs
//     per key, so it cannot be a mask on Q K^T: K is walked in 64-column slabs and each slab adds, with
//     accumulators held across the slabs,
//       * the off-diagonal 16-row score blocks (query block ib > key block jb) as a tensor-core product of
//         re-based operands q_i e^{G_i - G_p} and k_j e^{G_p - G_j}, p = 16 ib the query block's first row:
//         j < p <= i, so both exponents are <= 0 and their product is the exact factor;
//       * the four diagonal 16 x 16 blocks in fp32 SIMT with the exact difference e^{G_i - G_j}, formed only
//         for j <= i (a re-base inside a block would need a positive exponent somewhere);
//       * the inter-chunk term (q e^{G}) S_c on tensor cores.
//     Then P = scale A (masked) and + P V on tensor cores, as the scalar forward.
//
// Stability: every exponent is <= 0 (G_i - G_p, G_p - G_j, G_i - G_j for j <= i, G_i, G_L - G_j, G_L), so
// strong decay underflows to 0 and never overflows; no e^{-G} of a cumulative gate is formed.
// Precision: each tensor-core operand is rounded once to the input dtype (re-based q and k, q e^{G}, decayed
// keys, P, S_c); sums and the carried state stay fp32, so no rounding compounds over chunks. fp16 scales S_c by
// an exact power of two from kernel 1's tile maxima (gla_fwd_tc.cuh), since undecayed states can pass 65504.
// The re-based operands are at most |q| and |k| (factors <= 1): they need no range scaling; a factor that falls
// into fp16's subnormals loses relative precision, but the term it scales is then below 2^-14 |q| |k|.
#include "ops/gla/cuda/gla_fwd_tc.cuh"

namespace linattn::gla::gpu {
namespace tc_vec {

namespace wt = cuda_utils::wmma_tiles;
namespace cu = cuda_utils;
namespace wmma = nvcuda::wmma;
using tc::kThreadsTc;
using tc::kWarps;
using wt::kFrag;

constexpr int kTile = 64;                                       // state tile rows / cols, key slab width
constexpr int kRowBlocks = kChunk / kFrag;                      // 16-row blocks of a chunk
constexpr int kOffBlocks = kRowBlocks * (kRowBlocks - 1) / 2;   // score blocks strictly below the diagonal
constexpr int kDiagPerThread = kRowBlocks * kFrag * kFrag / kThreadsTc;  // diagonal-block entries per thread
constexpr int kRebasedKeyRows = kFrag * kOffBlocks;             // keys re-based for query blocks 1..3: 16+32+48
constexpr int kLdg = kTile + 1;                                 // fp32 gate tile (+1: conflict-free columns)

static_assert(kRowBlocks == 4 && kFrag == kSub, "secondary chunks are the 16-row wmma blocks");
static_assert(kDiagPerThread * kThreadsTc == kRowBlocks * kFrag * kFrag && kDiagPerThread == 8,
              "thread t owns diagonal entries t + 128 m, m < 8: two per diagonal block");
static_assert(kOffBlocks <= 2 * kWarps, "each warp holds at most two off-diagonal score accumulators");
static_assert(kThreadsTc == 2 * kTile, "the gate scan gives each key column two threads (row halves)");

template <typename T>
using Tile = wt::SmemTile<T, kChunk, kTile>;  // [64 x 64]: q / k / re-based slabs, S slab, values, P
using F32Tile = wt::SmemTile<float, kChunk, kTile>;
static_assert(std::is_same_v<F32Tile, tc::F32Tile>, "the tc:: stage helpers address this stage layout");

// sg[i * kLdg + d] = g_{t0, d0+d} + .. + g_{t0+i, d0+d}: the in-chunk cumulative gate of key column d0 + d;
// rows i >= L and columns d >= cols add 0, so row kChunk - 1 holds G_L and padded columns stay 0. Each column
// is scanned by two threads (rows 0..31, then 32..63 add the first half's total) in a fixed order, so both
// kernels get the same bits. All threads; contains a barrier and ends synchronised.
__device__ __forceinline__ void vector_gate_cumsum(float* __restrict__ sg, const FwdParams& p, int64_t t0, int64_t h,
                                                   int d0, int L, int cols) {
  constexpr int kHalf = kChunk / 2;
  const int d = threadIdx.x % kTile, half = threadIdx.x / kTile, r0 = half * kHalf;
  const float* __restrict__ gh = static_cast<const float*>(p.g) + h * p.g_head_stride + int64_t(d0 + d) * p.g_k_stride;
  float run = 0.f;
#pragma unroll 8
  for (int r = 0; r < kHalf; ++r) {
    const int i = r0 + r;
    if (i < L && d < cols) run += gh[(t0 + i) * p.g_tok_stride];
    sg[i * kLdg + d] = run;
  }
  __syncthreads();
  if (half == 1) {
    const float before = sg[(kHalf - 1) * kLdg + d];
#pragma unroll 8
    for (int r = 0; r < kHalf; ++r) sg[(kHalf + r) * kLdg + d] += before;
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------------------
// 1. chunk-start states

// The stage (the state entering the chunk, or in the backward dS leaving it) goes out to dst, then each row d
// decays by e^{G_L,d}: the same thread reads, stores and rescales an element, so no barrier is needed between
// the two. Padded rows / columns hold 0. Returns the max |x| this thread stored.
__device__ __forceinline__ float stage_out_and_decay(float* __restrict__ dst, float* __restrict__ stage,
                                                     const float* __restrict__ sg, int V, int kcols, int vcols) {
  constexpr int kLdf = F32Tile::kLd;
  float m = 0.f;
  for (int e = threadIdx.x; e < kTile * kTile; e += kThreadsTc) {
    const int d = e / kTile, col = e % kTile;
    const float x = stage[d * kLdf + col];
    if (d < kcols && col < vcols) {
      dst[int64_t(d) * V + col] = x;
      m = fmaxf(m, fabsf(x));
    }
    stage[d * kLdf + col] = x * expf(sg[(kChunk - 1) * kLdg + d]);
  }
  return m;
}

template <typename T>
struct StateSmem {  // byte offsets into the realigned dynamic buffer
  size_t k, k_lo, v, stage, gate, red, launch_bytes;
  __host__ __device__ explicit StateSmem(bool split_keys = false) {
    wt::SmemCarver c;
    k = c.take<T>(Tile<T>::kElems);         // decayed keys [64 rows x 64 key columns]
    k_lo = split_keys ? c.take<T>(Tile<T>::kElems) : k;  // their rounding residue (kSplitKeys)
    v = c.take<T>(Tile<T>::kElems);         // values [64 rows x 64 value columns]
    stage = c.take<float>(F32Tile::kElems);  // the state tile between accumulators, decay and global memory
    gate = c.take<float>(kChunk * kLdg);
    red = c.take<float>(kWarps);
    launch_bytes = c.launch_bytes();
  }
};

// The backward's states pass (gla_bwd_tc_vec.cuh) sets both flags. kFinalSlot: the state leaving the last chunk
// also goes to the slot after the sequence's chunks, where the gate gradient's carry reads S_{c+1}. kSplitKeys: the
// decayed keys enter as hi + lo 16-bit parts (one more product): that carry, sum_v dS * S_{c+1}, is added to
// every row of its chunk, so one rounding of the keys would be weighted by the chunk length there.
template <typename T, int kTileK, bool kTrackMax, bool kFinalSlot = false, bool kSplitKeys = false>
__global__ void __launch_bounds__(kThreadsTc, 1)
    vec_state_kernel(const FwdParams p, float* __restrict__ states, float* __restrict__ tile_max) {
  static_assert(kTileK == kWarps * kFrag, "warp w owns key rows 16w .. 16w + 15 of the state tile");
  static_assert(kTileK == tc::kTileK && kTileK == kTile,
                "the workspace keeps one max |S| per 64 x 64 state tile, shared with the scalar-gate forward");
  using Fr = wt::Frag<T>;
  constexpr int kLd = Tile<T>::kLd;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const StateSmem<T> lay(kSplitKeys);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ skl = reinterpret_cast<T*>(base + lay.k_lo);
  T* __restrict__ sv = reinterpret_cast<T*>(base + lay.v);
  float* __restrict__ stage = reinterpret_cast<float*>(base + lay.stage);
  float* __restrict__ sg = reinterpret_cast<float*>(base + lay.gate);
  float* __restrict__ red = reinterpret_cast<float*>(base + lay.red);

  const int64_t H = p.heads, nh = blockIdx.x, n = nh / H, h = nh % H;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kt = blockIdx.y, vt = blockIdx.z;
  const int d0 = kt * kTileK, v0 = vt * kTile;
  const int kcols = min(kTileK, K - d0), vcols = min(kTile, V - v0);
  const int nvb = static_cast<int>(ceil_div(vcols, kFrag));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool active = warp * kFrag < kcols;  // the warp's key rows exist
  const SeqSpan seq = seq_span(p, n);
  const int64_t nchunks = ceil_div(seq.len, kChunk), slot0 = slot_base(seq.bos, n);
  const int64_t KV = int64_t(K) * V, ntv = ceil_div(V, kTile), tiles = ceil_div(K, kTileK) * ntv;
  const int64_t tile_off = int64_t(d0) * V + v0;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + d0;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride + v0;

  const float* __restrict__ h0 = p.h0 != nullptr ? static_cast<const float*>(p.h0) + nh * KV + tile_off : nullptr;
  tc::state_to_stage(stage, h0, V, kcols, vcols);
  __syncthreads();
  typename Fr::Acc acc[kTile / kFrag];  // value columns 16 cb .. of the warp's 16 key rows
  tc::stage_to_acc(acc, stage, warp);

  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t t0 = seq.bos + c * kChunk;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    __syncthreads();  // the last chunk's products are done with sk, sv and the stage
    tc::acc_to_stage(stage, acc, warp);
    vector_gate_cumsum(sg, p, t0, h, d0, L, kcols);  // ends synchronised: the stage is complete too

    const float m = stage_out_and_decay(states + ((slot0 + c) * H + h) * KV + tile_off, stage, sg, V, kcols, vcols);
    tc::warp_max_to_red<kTrackMax>(m, red, warp, lane);
    cu::batched_copy<kThreadsTc, 8>(
        kChunk * kTileK,
        [&](int e) {
          const int j = e / kTileK, d = e % kTileK;
          return (j < L && d < kcols) ? kh[(t0 + j) * p.k_tok_stride + d] : from_float<T>(0.f);
        },
        [&](int e, const T& raw) {
          const int j = e / kTileK, d = e % kTileK;
          float x = 0.f;
          if (j < L && d < kcols) x = to_float(raw) * expf(sg[(kChunk - 1) * kLdg + d] - sg[j * kLdg + d]);
          const T hi = from_float<T>(x);
          sk[j * kLd + d] = hi;
          if (kSplitKeys) skl[j * kLd + d] = from_float<T>(x - to_float(hi));
        });
    wt::load_rows_padded<kThreadsTc>(sv, kLd, vh + t0 * p.v_tok_stride, p.v_tok_stride, L, vcols, kChunk, kTile);
    __syncthreads();

    tc::red_to_tile_max<kTrackMax>(tile_max + ((slot0 + c) * H + h) * tiles + kt * ntv + vt, red);
    if (active) {
      const int nrb = static_cast<int>(ceil_div(L, kFrag));  // rows past L are zero
      tc::stage_to_acc(acc, stage, warp);
      for (int jb = 0; jb < nrb; ++jb) {
        typename Fr::ACol a, a_lo;  // (decayed K)^T: a column-major view of the row-major key tile
        wmma::load_matrix_sync(a, sk + jb * kFrag * kLd + warp * kFrag, kLd);
        if (kSplitKeys) wmma::load_matrix_sync(a_lo, skl + jb * kFrag * kLd + warp * kFrag, kLd);
#pragma unroll
        for (int cb = 0; cb < kTile / kFrag; ++cb) {
          if (cb < nvb) {
            typename Fr::BRow b;
            wmma::load_matrix_sync(b, sv + jb * kFrag * kLd + cb * kFrag, kLd);
            wmma::mma_sync(acc[cb], a, b, acc[cb]);
            if (kSplitKeys) wmma::mma_sync(acc[cb], a_lo, b, acc[cb]);
          }
        }
      }
    }
  }

  if (!kFinalSlot && p.ht == nullptr) return;  // uniform over the block
  __syncthreads();  // the stage was last read before the final chunk's products
  tc::acc_to_stage(stage, acc, warp);
  __syncthreads();
  if (kFinalSlot) tc::stage_to_state(states + ((slot0 + nchunks) * H + h) * KV + tile_off, stage, V, kcols, vcols);
  if (p.ht != nullptr) tc::stage_to_state(static_cast<float*>(p.ht) + nh * KV + tile_off, stage, V, kcols, vcols);
}

// ---------------------------------------------------------------------------------------------------------
// 2. outputs

template <typename T>
struct OutSmem {  // byte offsets into the realigned dynamic buffer
  size_t q, k, qh, qt, kt, s, gate, v, pm, f32, launch_bytes;
  __host__ __device__ OutSmem() {
    wt::SmemCarver c;
    q = c.take<T>(Tile<T>::kElems);                          // query slab [64 rows x 64 keys]
    k = c.take<T>(Tile<T>::kElems);                          // key slab
    qh = c.take<T>(Tile<T>::kElems);                         // q e^{G}
    qt = c.take<T>(Tile<T>::kElems);                         // q e^{G_i - G_p}
    kt = c.take<T>(int64_t(kRebasedKeyRows) * Tile<T>::kLd);  // k e^{G_p - G_j}, packed per query block
    s = c.take<T>(Tile<T>::kElems);                          // S_c slab [64 key rows x 64 value columns]
    gate = c.take<float>(kChunk * kLdg);
    // After the slab loop the slabs are dead: values over q, P over k, the fp32 scores / output over qh + qt
    // (adjacent: a tile is a whole number of alignment units, checked below).
    v = q;
    pm = k;
    f32 = qh;
    launch_bytes = c.launch_bytes();
  }
};

// Off-diagonal score block blk (0 .. kOffBlocks - 1) row by row: (1,0), (2,0), (2,1), (3,0), (3,1), (3,2).
__device__ __forceinline__ void off_block(int blk, int& ib, int& jb) {
  ib = 1;
  while (blk >= ib) {
    blk -= ib;
    ++ib;
  }
  jb = blk;
}

// The per-key-gate scores A_ij = sum_d q_id k_jd e^{G_id - G_jd} of one 64-column key slab, shared by the forward
// output and the backward's dv / dq-dk kernels (gla_bwd_tc_vec.cuh), which must form exactly the same A.

// Keys re-based onto the first row p = 16 ib of each off-diagonal query block ib, packed per block from row
// kg_offset(ib): k_j e^{G_p - G_j} for j < p, so the exponent is <= 0. sk, sg: a whole slab; padded keys are 0.
template <typename T>
__device__ __forceinline__ void rebase_keys(T* __restrict__ skt, const T* __restrict__ sk,
                                            const float* __restrict__ sg) {
  constexpr int kLd = Tile<T>::kLd;
  static_assert(kRowBlocks == 4, "the packed rows of query blocks 1, 2, 3 start at 0, 16 and 48");
  for (int e = threadIdx.x; e < kRebasedKeyRows * kTile; e += kThreadsTc) {
    const int r = e / kTile, d = e % kTile;
    const int ib = r < kFrag ? 1 : (r < 3 * kFrag ? 2 : 3);
    const int j = r - kg_offset(ib), pr = ib * kFrag;  // j < pr: G_p - G_j <= 0
    skt[r * kLd + d] = from_float<T>(to_float(sk[j * kLd + d]) * expf(sg[pr * kLdg + d] - sg[j * kLdg + d]));
  }
}

// Diagonal blocks in fp32 SIMT with the exact e^{G_i - G_j}, j <= i (no re-base inside a block keeps every
// exponent <= 0). Entry t + 128 m is block m / 2, local row / column from t + 128 (m % 2).
template <typename T>
__device__ __forceinline__ void add_diag_scores(float (&diag)[kDiagPerThread], const T* __restrict__ sq,
                                                const T* __restrict__ sk, const float* __restrict__ sg,
                                                int kcols) {
  constexpr int kLd = Tile<T>::kLd;
  for (int d = 0; d < kcols; ++d) {
#pragma unroll
    for (int m = 0; m < kDiagPerThread; ++m) {
      const int local = threadIdx.x + kThreadsTc * (m % 2), b0 = (m / 2) * kFrag;
      const int i = b0 + local / kFrag, j = b0 + local % kFrag;
      if (j <= i) {
        diag[m] += to_float(sq[i * kLd + d]) * to_float(sk[j * kLd + d]) *
                   expf(sg[i * kLdg + d] - sg[j * kLdg + d]);
      }
    }
  }
}

// Off-diagonal blocks on tensor cores: warp w accumulates blocks w and w + kWarps (re-based q times re-based k^T).
template <typename T>
__device__ __forceinline__ void add_off_diag_scores(typename wt::Frag<T>::Acc (&acc)[2], const T* __restrict__ sqt,
                                                    const T* __restrict__ skt, int warp, int nrb, int nks) {
  using Fr = wt::Frag<T>;
  constexpr int kLd = Tile<T>::kLd;
#pragma unroll
  for (int b = 0; b < 2; ++b) {
    const int blk = warp + b * kWarps;
    if (blk < kOffBlocks) {
      int ib = 0, jb = 0;
      off_block(blk, ib, jb);
      if (ib < nrb) {
        for (int ks = 0; ks < nks; ++ks) {
          typename Fr::ARow a;
          typename Fr::BCol bk;  // re-based K^T: a column-major view of the row-major key tile
          wmma::load_matrix_sync(a, sqt + ib * kFrag * kLd + ks * kFrag, kLd);
          wmma::load_matrix_sync(bk, skt + (kg_offset(ib) + jb * kFrag) * kLd + ks * kFrag, kLd);
          wmma::mma_sync(acc[b], a, bk, acc[b]);
        }
      }
    }
  }
}

// The accumulated scores into the fp32 tile sf, blocks on and below the diagonal of the first nrb row blocks
// (named apart from the SIMT kernels' store_scores in gla_common.cuh, which this namespace would hide).
template <typename T>
__device__ __forceinline__ void store_vec_scores(float* __restrict__ sf, typename wt::Frag<T>::Acc (&acc)[2],
                                                 const float (&diag)[kDiagPerThread], int warp, int nrb) {
  constexpr int kLdf = F32Tile::kLd;
#pragma unroll
  for (int b = 0; b < 2; ++b) {
    const int blk = warp + b * kWarps;
    if (blk < kOffBlocks) {
      int ib = 0, jb = 0;
      off_block(blk, ib, jb);
      if (ib < nrb) wmma::store_matrix_sync(sf + ib * kFrag * kLdf + jb * kFrag, acc[b], kLdf, wmma::mem_row_major);
    }
  }
#pragma unroll
  for (int m = 0; m < kDiagPerThread; ++m) {
    const int local = threadIdx.x + kThreadsTc * (m % 2), b0 = (m / 2) * kFrag;
    sf[(b0 + local / kFrag) * kLdf + b0 + local % kFrag] = diag[m];
  }
}

// P = scale A for j <= i < L, else 0: the mask comes first, so unwritten score blocks (above the diagonal or
// past L) are never read.
template <typename T>
__device__ __forceinline__ void mask_scores(T* __restrict__ sp, const float* __restrict__ sf, int L, float scale) {
  constexpr int kLd = Tile<T>::kLd, kLdf = F32Tile::kLd;
  for (int e = threadIdx.x; e < kChunk * kChunk; e += kThreadsTc) {
    const int i = e / kChunk, j = e % kChunk;
    sp[i * kLd + j] = from_float<T>((i < L && j <= i) ? scale * sf[i * kLdf + j] : 0.f);
  }
}

template <typename T, int kSlabK, bool kRangeScale>
__global__ void __launch_bounds__(kThreadsTc, 1)
    vec_output_kernel(const FwdParams p, const float* __restrict__ states, const float* __restrict__ tile_max) {
  static_assert(kSlabK == kTile, "a key slab is one [64 x 64] shared tile (queries, keys, gates, S_c rows)");
  static_assert(kSlabK % kFrag == 0, "a key slab is whole wmma k-steps");
  static_assert((Tile<T>::kElems * sizeof(T)) % wt::kSmemAlign == 0 &&
                    2 * Tile<T>::kElems * sizeof(T) >= F32Tile::kElems * sizeof(float),
                "the fp32 score / output tile reuses the adjacent q e^G and re-based q slabs");
  static_assert(kTile == tc::kTileV, "V tiles match the state kernel's, so the tile maxima line up");
  int64_t n = 0, c = 0;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  using Fr = wt::Frag<T>;
  constexpr int kLd = Tile<T>::kLd, kLdf = F32Tile::kLd;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const OutSmem<T> lay;
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ sqh = reinterpret_cast<T*>(base + lay.qh);
  T* __restrict__ sqt = reinterpret_cast<T*>(base + lay.qt);
  T* __restrict__ skt = reinterpret_cast<T*>(base + lay.kt);
  T* __restrict__ ss = reinterpret_cast<T*>(base + lay.s);
  float* __restrict__ sg = reinterpret_cast<float*>(base + lay.gate);
  T* __restrict__ sv = reinterpret_cast<T*>(base + lay.v);
  T* __restrict__ sp = reinterpret_cast<T*>(base + lay.pm);
  float* __restrict__ sf = reinterpret_cast<float*>(base + lay.f32);

  const int64_t slot = blockIdx.x, H = p.heads, h = blockIdx.z;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int vt = blockIdx.y, v0 = vt * kTile;
  const int vcols = min(kTile, V - v0), nvb = static_cast<int>(ceil_div(vcols, kFrag));
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int nrb = static_cast<int>(ceil_div(L, kFrag));  // row blocks holding real rows
  const int warp = threadIdx.x / 32;
  const float scale = static_cast<float>(p.scale);

  const tc::RangeFactors range = tc::v_tile_range_factors<kRangeScale>(tile_max, slot, H, h, K, V, vt);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + t0 * p.q_tok_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + t0 * p.k_tok_stride;
  const float* __restrict__ S = states + (slot * H + h) * int64_t(K) * V + v0;

  // Accumulators carried over the slabs: warp w's off-diagonal score blocks w and w + kWarps, its 16 output
  // columns for every row block (Q e^G S_c), and this thread's 8 diagonal-block entries (fp32).
  typename Fr::Acc acc_s[2], acc_o[kRowBlocks];
#pragma unroll
  for (int b = 0; b < 2; ++b) wmma::fill_fragment(acc_s[b], 0.f);
#pragma unroll
  for (int r = 0; r < kRowBlocks; ++r) wmma::fill_fragment(acc_o[r], 0.f);
  float diag[kDiagPerThread];
#pragma unroll
  for (int m = 0; m < kDiagPerThread; ++m) diag[m] = 0.f;

  for (int d0 = 0; d0 < K; d0 += kSlabK) {
    const int kcols = min(kSlabK, K - d0), nks = static_cast<int>(ceil_div(kcols, kFrag));
    __syncthreads();  // the previous slab's products are done with every slab tile
    wt::load_rows_padded<kThreadsTc>(sq, kLd, qh + d0, p.q_tok_stride, L, kcols, kChunk, kSlabK);
    wt::load_rows_padded<kThreadsTc>(sk, kLd, kh + d0, p.k_tok_stride, L, kcols, kChunk, kSlabK);
    // Inline rather than tc::state_slab_to_tile: moving d0 from the row index into the pointer changes this
    // kernel's register allocation.
    cu::batched_copy<kThreadsTc, 8>(
        kSlabK * kTile,
        [&](int e) {
          const int d = e / kTile, col = e % kTile;
          return (d < kcols && col < vcols) ? S[int64_t(d0 + d) * V + col] : 0.f;
        },
        [&](int e, float x) {
          if constexpr (kRangeScale) x *= range.down;
          ss[(e / kTile) * kLd + e % kTile] = from_float<T>(x);
        });
    vector_gate_cumsum(sg, p, t0, h, d0, L, kcols);  // ends synchronised: sq, sk, ss complete too

    for (int e = threadIdx.x; e < kChunk * kSlabK; e += kThreadsTc) {
      const int i = e / kSlabK, d = e % kSlabK;
      const float x = to_float(sq[i * kLd + d]), gi = sg[i * kLdg + d];
      const int pr = (i / kFrag) * kFrag;  // first row of i's block: G_i - G_p <= 0
      sqh[i * kLd + d] = from_float<T>(x * expf(gi));
      sqt[i * kLd + d] = from_float<T>(x * expf(gi - sg[pr * kLdg + d]));
    }
    rebase_keys(skt, sk, sg);
    add_diag_scores(diag, sq, sk, sg, kcols);
    __syncthreads();

    add_off_diag_scores<T>(acc_s, sqt, skt, warp, nrb, nks);
    if (warp < nvb) {
      for (int ks = 0; ks < nks; ++ks) {
        typename Fr::BRow bs;
        wmma::load_matrix_sync(bs, ss + ks * kFrag * kLd + warp * kFrag, kLd);
#pragma unroll
        for (int r = 0; r < kRowBlocks; ++r) {
          if (r < nrb) {
            typename Fr::ARow a;
            wmma::load_matrix_sync(a, sqh + r * kFrag * kLd + ks * kFrag, kLd);
            wmma::mma_sync(acc_o[r], a, bs, acc_o[r]);
          }
        }
      }
    }
  }
  __syncthreads();  // the slab tiles are dead: their space now holds values, P and the fp32 tile

  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride + t0 * p.v_tok_stride + v0;
  wt::load_rows_padded<kThreadsTc>(sv, kLd, vh, p.v_tok_stride, L, vcols, kChunk, kTile);
  store_vec_scores<T>(sf, acc_s, diag, warp, nrb);
  __syncthreads();
  mask_scores(sp, sf, L, scale);
  __syncthreads();

  if (warp < nvb) {
    const int cb = warp;
    float* __restrict__ col = sf + cb * kFrag;
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) {
        wt::scale_fragment(acc_o[r], scale * range.up);  // uniform: legal on any fragment layout
        for (int jb = 0; jb <= r; ++jb) {
          typename Fr::ARow a;
          typename Fr::BRow b;
          wmma::load_matrix_sync(a, sp + r * kFrag * kLd + jb * kFrag, kLd);
          wmma::load_matrix_sync(b, sv + jb * kFrag * kLd + cb * kFrag, kLd);
          wmma::mma_sync(acc_o[r], a, b, acc_o[r]);
        }
        wmma::store_matrix_sync(col + r * kFrag * kLdf, acc_o[r], kLdf, wmma::mem_row_major);
      }
    }
  }
  __syncthreads();

  const int64_t o_off = h * p.v_head_stride + t0 * p.v_tok_stride + v0;
  T* __restrict__ oh = static_cast<T*>(p.o) + o_off;
  const T* __restrict__ mh = p.o_mix != nullptr ? static_cast<const T*>(p.o_mix) + o_off : nullptr;
  for (int e = threadIdx.x; e < kChunk * kTile; e += kThreadsTc) {
    const int i = e / kTile, cc = e % kTile;
    const int64_t off = i * p.v_tok_stride + cc;
    if (i < L && cc < vcols) oh[off] = output_value<T>(p, mh, off, sf[i * kLdf + cc]);
  }
}

template <typename T>
void launch(const FwdParams& p, float* workspace, cudaStream_t stream) {
  const int64_t nh = p.num_seqs * p.heads;
  if (nh == 0) return;
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const int64_t slots = num_state_slots(p);
  const int64_t ntk = ceil_div(p.dim_k, kTcTileK), ntv = ceil_div(p.dim_v, kTcTileV);
  float* states = workspace;
  float* tile_max = workspace + slots * p.heads * p.dim_k * p.dim_v;
  {
    const size_t smem = StateSmem<T>().launch_bytes;
    auto kernel = vec_state_kernel<T, kTile, kFp16>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(nh), static_cast<unsigned>(ntk), static_cast<unsigned>(ntv));
    kernel<<<grid, kThreadsTc, smem, stream>>>(p, states, tile_max);
    LINATTN_CHECK_LAUNCH();
  }
  if (p.batch * p.seqlen == 0) return;  // no tokens: only the final states
  {
    const size_t smem = OutSmem<T>().launch_bytes;
    auto kernel = vec_output_kernel<T, kTile, kFp16>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(ntv), static_cast<unsigned>(p.heads));
    kernel<<<grid, kThreadsTc, smem, stream>>>(p, states, tile_max);
    LINATTN_CHECK_LAUNCH();
  }
}

}  // namespace tc_vec

template <DType D>
void chunk_forward_tc_vec(const FwdParams& p, float* workspace, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core forward takes fp16 or bf16 inputs");
  tc_vec::launch<typename StorageOf<D>::type>(p, workspace, stream);
}

}  // namespace linattn::gla::gpu
