#pragma once
// Tensor-core chunked backward of GLA with per-key (vector) log gates (p.g_k_stride != 0, chunk_gla), fp16 / bf16
// inputs, fp32 accumulation. Per chunk c (rows i, j; key d), with G the in-chunk cumulative gate per (row, key),
// non-increasing down each column, G_L its last row, S_c / S_{c+1} the states entering / leaving the chunk and
// dS the gradient w.r.t. S_{c+1}:
//   A_ij  = sum_d q_id k_jd e^{G_id - G_jd},   P = scale A,   D_ij = scale (do_i . v_j)        (j <= i, else 0)
//   dv_j  = sum_d (k_jd e^{G_Ld - G_jd}) dS[d, :]      + sum_{i >= j} P_ij do_i
//   dq_id = scale e^{G_id} (S_c do_i)_d                + sum_{j <= i} D_ij k_jd e^{G_id - G_jd}
//   dk_jd = e^{G_Ld - G_jd} (dS v_j)_d                 + sum_{i >= j} D_ij q_id e^{G_id - G_jd}
//   dS_c  = diag(e^{G_L}) dS + sum_i (scale q_i e^{G_i}) do_i^T          (the gradient leaving chunk c - 1)
//   dg_id = sum_{i' >= i in chunk} (q dq - k dk)_{i'd} + sum_v dS[d, v] S_{c+1}[d, v],       dh0 = dS_0
// D carries no gate: with per-key gates the decay sits inside the sum over d, so it is applied per (row, key)
// to the products of D, never to D itself. The dg line is the SIMT kernel's identity (gla_bwd.cuh), per key
// column: the reverse cumsum of q dq - k dk over the whole sequence plus sum_v dht * S_T splits into an in-chunk
// suffix sum and one carry per (chunk, key).
//
// Intra-chunk terms without any positive exponent (16-row blocks; D and the scores are lower block-triangular):
//   * dq, off-diagonal: for query block ib with first row p, every key j < p, and
//     e^{G_i - G_j} = e^{G_i - G_p} e^{G_p - G_j}: dq_off = e^{G_i - G_p} * (D[ib, :p] Kt_ib), where Kt_ib holds
//     k_j e^{G_p - G_j} (the forward's re-based keys, packed 16 + 32 + 48 rows);
//   * dk, off-diagonal: for key block jb the pivot is the first row p' = 16 (jb + 1) of the next block, which
//     every later query row i reaches: dk_off = e^{G_p' - G_j} * (D[p':, jb]^T Qt_jb), Qt_jb holding
//     q_i e^{G_i - G_p'} (packed 48 + 32 + 16 rows);
//   * diagonal 16 x 16 blocks: fp32 SIMT with the exact e^{G_i - G_j}, formed only for j <= i (a pivot inside a
//     block would need a positive exponent on one side), as the forward does.
// The inter-chunk term joins the off-diagonal one before the last row factor: e^{G_i} = e^{G_p} e^{G_i - G_p} and
// e^{G_L - G_j} = e^{G_L - G_p'} e^{G_p' - G_j}, so each warp scales its fp32 inter-chunk product by the first
// factor in shared memory, reloads it as the accumulator of the off-diagonal product, and applies the second
// factor once (a fragment's layout is unknown, so per-element factors always go through shared memory). The
// last key block has no later rows: its pivot is row 63, whose G is G_L (padded rows add no gate).
//
// Four launches of 128 threads (plus nothing per token stored: states, scores and D are recomputed):
//  1. states: the forward's vec_state_kernel with kFinalSlot (the final state also goes to the slot after the
//     sequence's chunks, S_{c+1} of the last chunk for the carry) and kSplitKeys (decayed keys as hi + lo);
//     fp16 also stores per-tile max |S|;
//  2. vec_dstate_kernel, per (sequence, head, 64 x 64 tile of dS), chunks in reverse: dS in wmma accumulators,
//     staged in shared memory each chunk (stored as it leaves the chunk, fp16 tile maximum, then decayed row by
//     row by e^{G_L}, as the forward's state kernel), then + (scale Q e^G)^T dO on tensor cores; dh0 at the end;
//  3. vec_dv_kernel, per (chunk slot, 64-column V tile, head): K walked in 64-column slabs as in the forward's
//     output kernel, accumulating the off-diagonal score blocks (re-based operands), the diagonal blocks (fp32)
//     and (K e^{G_L - G}) dS; then P^T dO;
//  4. vec_dqk_kernel, per (chunk slot, 64-column K tile, head), V walked in 64-column slabs three times:
//     D = dO V^T; dq (dO S_c^T, then + D Kt, then the diagonal blocks); dk (V dS^T, then + D^T Qt, then the
//     diagonal blocks); then dg: q dq - k dk from the fp32 dq, dk, in-chunk suffix sums per key column, plus the
//     carry summed in fp32 from the two workspaces.
// No reduction pass: dg is per key, and each (chunk, K tile) owns its rows and columns of it.
//
// Precision follows the scalar backward (gla_bwd_tc.cuh): every tensor-core operand is rounded once to the input
// dtype (q, k, v, do as given; D, P, the re-based q / k, K e^{G_L - G}, scale q e^G, S_c, dS); sums are fp32 and
// S, dS are carried in fp32, so no rounding compounds over chunks. The states pass splits its decayed keys into
// hi + lo (kSplitStateKeys) because the carry reaches every row of a chunk. fp16 scales the S_c / dS slabs by
// exact powers of two from the per-tile maxima (one exponent per product: the K tiles of a V tile for dv, the
// V tiles of a K tile for dq / dk). Stability: every exponent is <= 0 (G_i, G_L, G_i - G_p, G_p - G_j,
// G_L - G_p', G_p' - G_j, G_L - G_j, and G_i - G_j for j <= i).
//
// Shared memory (bf16 and fp16 alike, any K and V: both are walked in 64-column slabs): states 60.4 KB,
// dstates 51.4 KB, dv 74.9 KB, dq / dk / dg 109 KB (two CTAs per SM on sm_90).
#include <type_traits>

#include "ops/gla/cuda/gla_bwd_tc.cuh"
#include "ops/gla/cuda/gla_fwd_tc_vec.cuh"

namespace linattn::gla::gpu {
namespace tc_vec {

// The carry sum(dS * S_{c+1}) reaches every row of a chunk (see vec_state_kernel's kSplitKeys).
constexpr bool kSplitStateKeys = true;

constexpr int kRebasedQueryRows = kFrag * kOffBlocks;  // queries re-based for key blocks 0..2: 48 + 32 + 16

// Packed first row of the queries re-based for key block jb (0..2): rows 16 (jb + 1) .. 63, i.e. 48 - 16 jb rows.
__host__ __device__ constexpr int qt_offset(int jb) { return 8 * jb * (7 - jb); }
static_assert(qt_offset(1) == 48 && qt_offset(2) == 80 && qt_offset(kRowBlocks - 1) == kRebasedQueryRows,
              "re-based query rows: 48, 32, 16 per key block");
static_assert(kRebasedQueryRows == kRebasedKeyRows, "Kt and Qt share one shared-memory region");

// dk's pivot row for key block jb: the first row of the next block, which every later query row reaches; the
// last block has no later rows and takes row 63, whose cumulative gate is G_L.
__device__ __forceinline__ int key_pivot(int jb) { return min(kFrag * (jb + 1), kChunk - 1); }

// ---------------------------------------------------------------------------------------------------------
// 2. state gradients, chunks in reverse

template <typename T>
struct DStateSmem {  // byte offsets into the realigned dynamic buffer
  size_t q, dout, stage, gate, red, launch_bytes;
  __host__ __device__ DStateSmem() {
    wt::SmemCarver c;
    q = c.take<T>(Tile<T>::kElems);          // scale q e^{G} [64 rows x 64 key columns]
    dout = c.take<T>(Tile<T>::kElems);       // do [64 rows x 64 value columns]
    stage = c.take<float>(F32Tile::kElems);  // dS between accumulators, the row decay and global memory
    gate = c.take<float>(kChunk * kLdg);
    red = c.take<float>(kWarps);
    launch_bytes = c.launch_bytes();
  }
};

template <typename T, bool kTrackMax>
__global__ void __launch_bounds__(kThreadsTc, 1)
    vec_dstate_kernel(const BwdParams p, float* __restrict__ dstates, float* __restrict__ tile_max) {
  static_assert(kTile == kWarps * kFrag, "warp w owns key rows 16w .. 16w + 15 of the dS tile");
  static_assert(kTile == tc::kTileK && kTile == tc::kTileV,
                "one max |dS| per 64 x 64 tile: the workspace layout of the scalar-gate backward");
  using Fr = wt::Frag<T>;
  constexpr int kLd = Tile<T>::kLd;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const DStateSmem<T> lay;
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sdo = reinterpret_cast<T*>(base + lay.dout);
  float* __restrict__ stage = reinterpret_cast<float*>(base + lay.stage);
  float* __restrict__ sg = reinterpret_cast<float*>(base + lay.gate);
  float* __restrict__ red = reinterpret_cast<float*>(base + lay.red);

  const int64_t H = p.heads, nh = blockIdx.x, n = nh / H, h = nh % H;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kt = blockIdx.y, vt = blockIdx.z;
  const int d0 = kt * kTile, v0 = vt * kTile;
  const int kcols = min(kTile, K - d0), vcols = min(kTile, V - v0);
  const int nvb = static_cast<int>(ceil_div(vcols, kFrag));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool active = warp * kFrag < kcols;  // the warp's key rows exist
  const float scale = static_cast<float>(p.scale);
  const SeqSpan seq = seq_span(p, n);
  const int64_t nchunks = ceil_div(seq.len, kChunk), slot0 = slot_base(seq.bos, n);
  const int64_t KV = int64_t(K) * V, ntv = ceil_div(V, kTile), tiles = ceil_div(K, kTile) * ntv;
  const int64_t tile_off = int64_t(d0) * V + v0;
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + d0;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride + v0;

  const float* __restrict__ dht = p.dht != nullptr ? static_cast<const float*>(p.dht) + nh * KV + tile_off : nullptr;
  tc::state_to_stage(stage, dht, V, kcols, vcols);
  __syncthreads();
  typename Fr::Acc acc[kTile / kFrag];  // value columns 16 cb .. of the warp's 16 key rows
  tc::stage_to_acc(acc, stage, warp);

  for (int64_t c = nchunks - 1; c >= 0; --c) {
    const int64_t t0 = seq.bos + c * kChunk;
    const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
    __syncthreads();  // the previous chunk's products are done with sq, sdo and the stage
    tc::acc_to_stage(stage, acc, warp);
    vector_gate_cumsum(sg, p, t0, h, d0, L, kcols);  // ends synchronised: the stage is complete too

    // dS leaves chunk c here, then decays.
    const float m =
        stage_out_and_decay(dstates + ((slot0 + c) * H + h) * KV + tile_off, stage, sg, V, kcols, vcols);
    tc::warp_max_to_red<kTrackMax>(m, red, warp, lane);
    // e^{G_i} <= 1 goes into the operand: the product sums over rows i, so no row factor can follow it.
    cu::batched_copy<kThreadsTc, 8>(
        kChunk * kTile,
        [&](int e) {
          const int i = e / kTile, d = e % kTile;
          return (i < L && d < kcols) ? qh[(t0 + i) * p.q_tok_stride + d] : from_float<T>(0.f);
        },
        [&](int e, const T& raw) {
          const int i = e / kTile, d = e % kTile;
          float x = 0.f;
          if (i < L && d < kcols) x = to_float(raw) * (scale * expf(sg[i * kLdg + d]));
          sq[i * kLd + d] = from_float<T>(x);
        });
    wt::load_rows_padded<kThreadsTc>(sdo, kLd, doh + t0 * p.v_tok_stride, p.v_tok_stride, L, vcols, kChunk, kTile,
                                     static_cast<float>(p.do_scale));
    __syncthreads();

    tc::red_to_tile_max<kTrackMax>(tile_max + ((slot0 + c) * H + h) * tiles + kt * ntv + vt, red);
    if (active) {
      const int nrb = static_cast<int>(ceil_div(L, kFrag));  // rows past L are zero
      tc::stage_to_acc(acc, stage, warp);
      for (int ib = 0; ib < nrb; ++ib) {
        typename Fr::ACol a;  // (scale Q e^G)^T: a column-major view of the row-major query tile
        wmma::load_matrix_sync(a, sq + ib * kFrag * kLd + warp * kFrag, kLd);
#pragma unroll
        for (int cb = 0; cb < kTile / kFrag; ++cb) {
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
  __syncthreads();  // the stage was last read before the first chunk's products
  tc::acc_to_stage(stage, acc, warp);
  __syncthreads();
  tc::stage_to_state(static_cast<float*>(p.dh0) + nh * KV + tile_off, stage, V, kcols, vcols);
}

// ---------------------------------------------------------------------------------------------------------
// 3. dv

template <typename T>
struct DvSmem {  // byte offsets into the realigned dynamic buffer
  size_t q, k, kd, qt, kt, s, gate, dout, pm, f32, launch_bytes;
  __host__ __device__ DvSmem() {
    wt::SmemCarver c;
    q = c.take<T>(Tile<T>::kElems);                          // query slab [64 rows x 64 keys]
    k = c.take<T>(Tile<T>::kElems);                          // key slab
    kd = c.take<T>(Tile<T>::kElems);                         // k e^{G_L - G}
    qt = c.take<T>(Tile<T>::kElems);                         // q e^{G_i - G_p}
    kt = c.take<T>(int64_t(kRebasedKeyRows) * Tile<T>::kLd);  // k e^{G_p - G_j}, packed per query block
    s = c.take<T>(Tile<T>::kElems);                          // dS slab [64 key rows x 64 value columns]
    gate = c.take<float>(kChunk * kLdg);
    // After the slab loop: do over q, P over k, the fp32 scores / dv tile over kd + qt (adjacent).
    dout = q;
    pm = k;
    f32 = kd;
    launch_bytes = c.launch_bytes();
  }
};

template <typename T, bool kRangeScale>
__global__ void __launch_bounds__(kThreadsTc, 1)
    vec_dv_kernel(const BwdParams p, const float* __restrict__ dstates, const float* __restrict__ dstate_max) {
  static_assert((Tile<T>::kElems * sizeof(T)) % wt::kSmemAlign == 0 &&
                    2 * Tile<T>::kElems * sizeof(T) >= F32Tile::kElems * sizeof(float),
                "the fp32 score / dv tile reuses the adjacent k e^{G_L - G} and re-based q slabs");
  static_assert(kTile == tc::kTileK && kTile == tc::kTileV,
                "K slabs and V tiles match the dS tiles, so the tile maxima line up");
  int64_t n = 0, c = 0;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  using Fr = wt::Frag<T>;
  constexpr int kLd = Tile<T>::kLd, kLdf = F32Tile::kLd;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const DvSmem<T> lay;
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ skd = reinterpret_cast<T*>(base + lay.kd);
  T* __restrict__ sqt = reinterpret_cast<T*>(base + lay.qt);
  T* __restrict__ skt = reinterpret_cast<T*>(base + lay.kt);
  T* __restrict__ ss = reinterpret_cast<T*>(base + lay.s);
  float* __restrict__ sg = reinterpret_cast<float*>(base + lay.gate);
  T* __restrict__ sdo = reinterpret_cast<T*>(base + lay.dout);
  T* __restrict__ sp = reinterpret_cast<T*>(base + lay.pm);
  float* __restrict__ sf = reinterpret_cast<float*>(base + lay.f32);

  const int64_t slot = blockIdx.x, H = p.heads, h = blockIdx.z;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int vt = blockIdx.y, v0 = vt * kTile;
  const int vcols = min(kTile, V - v0), nvb = static_cast<int>(ceil_div(vcols, kFrag));
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int nrb = static_cast<int>(ceil_div(L, kFrag));
  const int warp = threadIdx.x / 32;
  const float scale = static_cast<float>(p.scale);

  const tc::RangeFactors range = tc::v_tile_range_factors<kRangeScale>(dstate_max, slot, H, h, K, V, vt);
  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + t0 * p.q_tok_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + t0 * p.k_tok_stride;
  const float* __restrict__ dS = dstates + (slot * H + h) * int64_t(K) * V + v0;

  // Carried over the slabs: warp w's off-diagonal score blocks w and w + kWarps, its 16 dv columns for every row
  // block ((K e^{G_L - G}) dS), and this thread's 8 diagonal-block entries (fp32).
  typename Fr::Acc acc_s[2], acc_v[kRowBlocks];
#pragma unroll
  for (int b = 0; b < 2; ++b) wmma::fill_fragment(acc_s[b], 0.f);
#pragma unroll
  for (int r = 0; r < kRowBlocks; ++r) wmma::fill_fragment(acc_v[r], 0.f);
  float diag[kDiagPerThread];
#pragma unroll
  for (int m = 0; m < kDiagPerThread; ++m) diag[m] = 0.f;

  for (int d0 = 0; d0 < K; d0 += kTile) {
    const int kcols = min(kTile, K - d0), nks = static_cast<int>(ceil_div(kcols, kFrag));
    __syncthreads();  // the previous slab's products are done with every slab tile
    wt::load_rows_padded<kThreadsTc>(sq, kLd, qh + d0, p.q_tok_stride, L, kcols, kChunk, kTile);
    wt::load_rows_padded<kThreadsTc>(sk, kLd, kh + d0, p.k_tok_stride, L, kcols, kChunk, kTile);
    tc::state_slab_to_tile(ss, kLd, dS + int64_t(d0) * V, V, kcols, vcols, kTile, kTile, range.down);
    vector_gate_cumsum(sg, p, t0, h, d0, L, kcols);  // ends synchronised: sq, sk, ss complete too

    for (int e = threadIdx.x; e < kChunk * kTile; e += kThreadsTc) {
      const int i = e / kTile, d = e % kTile;
      const float gi = sg[i * kLdg + d];
      const int pr = (i / kFrag) * kFrag;  // first row of i's block: G_i - G_p <= 0
      sqt[i * kLd + d] = from_float<T>(to_float(sq[i * kLd + d]) * expf(gi - sg[pr * kLdg + d]));
      skd[i * kLd + d] = from_float<T>(to_float(sk[i * kLd + d]) * expf(sg[(kChunk - 1) * kLdg + d] - gi));
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
            wmma::load_matrix_sync(a, skd + r * kFrag * kLd + ks * kFrag, kLd);
            wmma::mma_sync(acc_v[r], a, bs, acc_v[r]);
          }
        }
      }
    }
  }
  __syncthreads();  // the slab tiles are dead: their space now holds do, P and the fp32 tile

  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride + t0 * p.v_tok_stride + v0;
  wt::load_rows_padded<kThreadsTc>(sdo, kLd, doh, p.v_tok_stride, L, vcols, kChunk, kTile,
                                   static_cast<float>(p.do_scale));
  store_vec_scores<T>(sf, acc_s, diag, warp, nrb);
  __syncthreads();
  mask_scores(sp, sf, L, scale);
  __syncthreads();

  // Warp w owns dv columns 16 w ..: + P^T dO over the query blocks at or below each key block.
  if (warp < nvb) {
    const int cb = warp;
    float* __restrict__ col = sf + cb * kFrag;
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) {
      if (r < nrb) {
        wt::scale_fragment(acc_v[r], range.up);  // uniform: legal on any fragment layout
        tc::add_transposed_lower(acc_v[r], sp, kLd, sdo, kLd, r, cb, nrb);  // + P^T dO
        wmma::store_matrix_sync(col + r * kFrag * kLdf, acc_v[r], kLdf, wmma::mem_row_major);
      }
    }
  }
  __syncthreads();

  T* __restrict__ dvh = static_cast<T*>(p.dv) + h * p.v_head_stride + t0 * p.v_tok_stride + v0;
  for (int e = threadIdx.x; e < kChunk * kTile; e += kThreadsTc) {
    const int j = e / kTile, cc = e % kTile;
    if (j < L && cc < vcols) dvh[j * p.v_tok_stride + cc] = from_float<T>(sf[j * kLdf + cc]);
  }
}

// ---------------------------------------------------------------------------------------------------------
// 4. dq, dk, dg

template <typename T>
struct DqkSmem {  // byte offsets into the realigned dynamic buffer
  size_t r1, r2, q, k, reb, dm, gate, fa, fb, carry, launch_bytes;
  __host__ __device__ DqkSmem() {
    wt::SmemCarver c;
    // Two [64 x 64] slab regions over three walks of V: (do, v) for D, (do, S_c) for dq, (dS, v) for dk.
    r1 = c.take<T>(Tile<T>::kElems);                          // do slab, then the dS slab
    r2 = c.take<T>(Tile<T>::kElems);                          // v slab, then the S_c slab, then v again
    q = c.take<T>(Tile<T>::kElems);                           // [64 x 64] queries of this K tile
    k = c.take<T>(Tile<T>::kElems);                           // [64 x 64] keys of this K tile
    reb = c.take<T>(int64_t(kRebasedKeyRows) * Tile<T>::kLd);  // Kt (for dq), then Qt (for dk)
    dm = c.take<T>(Tile<T>::kElems);                          // D [64 x 64]
    gate = c.take<float>(kChunk * kLdg);
    fa = c.take<float>(F32Tile::kElems);  // fp32 D, then dq, then q dq - k dk and its suffix sums
    fb = c.take<float>(F32Tile::kElems);  // the low part of the dS slab during dk's V walk, then dk
    carry = c.take<float>(kTile);         // sum_v dS * S_{c+1} per key row of this K tile
    launch_bytes = c.launch_bytes();
  }
};

// A [64 x 64] slab of a [*, V] fp32 state gradient (rows from S, nrows x ncols of it, zeros elsewhere) times
// `factor` (a power of two) as two 16-bit parts, hi = round(x) and lo = round(x - hi): hi + lo carries about
// twice the dtype's mantissa. All threads; the caller synchronises afterwards.
template <typename T>
__device__ __forceinline__ void state_slab_to_split_tiles(T* __restrict__ hi, T* __restrict__ lo, int ld,
                                                          const float* __restrict__ S, int V, int nrows, int ncols,
                                                          float factor) {
  cu::batched_copy<kThreadsTc, 8>(
      kTile * kTile,
      [&](int e) {
        const int d = e / kTile, c = e % kTile;
        return (d < nrows && c < ncols) ? S[int64_t(d) * V + c] : 0.f;
      },
      [&](int e, float raw) {
        const float x = raw * factor;
        const T h = from_float<T>(x);
        const int at = (e / kTile) * ld + e % kTile;
        hi[at] = h;
        lo[at] = from_float<T>(x - to_float(h));
      });
}

// Up to 3 of the kScoreBlocks (10) blocks of D per warp: blk = warp, warp + 4, warp + 8.
constexpr int kDBlocksPerWarp = (tc::kScoreBlocks + kWarps - 1) / kWarps;
static_assert(kDBlocksPerWarp == 3, "D's 10 lower blocks over 4 warps");

template <typename T, bool kRangeScale>
__global__ void __launch_bounds__(kThreadsTc, 1)
    vec_dqk_kernel(const BwdParams p, const float* __restrict__ states, const float* __restrict__ dstates,
                   const float* __restrict__ state_max, const float* __restrict__ dstate_max) {
  static_assert(kTile == kWarps * kFrag, "warp w owns the key columns 16 w .. 16 w + 15 of dq and dk");
  static_assert(kThreadsTc == 2 * kTile, "dg's suffix sums give each key column two threads (row halves)");
  static_assert(kTile == tc::kTileK && kTile == tc::kTileV, "K tiles and V slabs match the tile maxima");
  static_assert(Tile<T>::kElems * sizeof(T) <= F32Tile::kElems * sizeof(float),
                "the low part of a dS slab fits in the fp32 dk tile");
  int64_t n = 0, c = 0;
  SeqSpan seq;
  if (!locate_chunk(p, blockIdx.x, n, c, seq)) return;  // uniform over the block
  using Fr = wt::Frag<T>;
  constexpr int kLd = Tile<T>::kLd, kLdf = F32Tile::kLd;
  extern __shared__ float smem_raw[];
  char* const base = wt::align_smem(smem_raw);
  const DqkSmem<T> lay;
  T* __restrict__ r1 = reinterpret_cast<T*>(base + lay.r1);
  T* __restrict__ r2 = reinterpret_cast<T*>(base + lay.r2);
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ reb = reinterpret_cast<T*>(base + lay.reb);
  T* __restrict__ sd = reinterpret_cast<T*>(base + lay.dm);
  float* __restrict__ sg = reinterpret_cast<float*>(base + lay.gate);
  float* __restrict__ fa = reinterpret_cast<float*>(base + lay.fa);
  float* __restrict__ fb = reinterpret_cast<float*>(base + lay.fb);
  float* __restrict__ scarry = reinterpret_cast<float*>(base + lay.carry);

  const int64_t slot = blockIdx.x, H = p.heads, h = blockIdx.z;
  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kt = blockIdx.y, d0 = kt * kTile;
  const int kcols = min(kTile, K - d0), nkb = static_cast<int>(ceil_div(kcols, kFrag));
  const int64_t t0 = seq.bos + c * kChunk;
  const int L = static_cast<int>(min(int64_t(kChunk), seq.len - c * kChunk));
  const int nrb = static_cast<int>(ceil_div(L, kFrag));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int cb = warp;  // this warp's key column block of dq and dk
  const float scale = static_cast<float>(p.scale);
  const bool want_dg = p.dg != nullptr;
  const int64_t KV = int64_t(K) * V, ntv = ceil_div(V, kTile), tiles = ceil_div(K, kTile) * ntv;

  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.q_head_stride + t0 * p.q_tok_stride + d0;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.k_head_stride + t0 * p.k_tok_stride + d0;
  const T* __restrict__ doh = static_cast<const T*>(p.do_) + h * p.v_head_stride + t0 * p.v_tok_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride + t0 * p.v_tok_stride;
  const float* __restrict__ S0 = states + (slot * H + h) * KV + int64_t(d0) * V;
  const float* __restrict__ dS = dstates + (slot * H + h) * KV + int64_t(d0) * V;
  const float* __restrict__ S1 = states + ((slot + 1) * H + h) * KV + int64_t(d0) * V;  // leaving the chunk
  // fp16 range factors 2^{-e} (before rounding) and 2^{e} (on the fp32 products): one exponent per K tile over
  // its V tiles, since dO S_c^T and V dS^T sum over all of V.
  const int64_t max_off = (slot * H + h) * tiles + int64_t(kt) * ntv;
  const auto range_factor = [&](const float* __restrict__ maxima, bool up) {
    if constexpr (!kRangeScale) return 1.f;
    const int e = tc::fp16_range_exponent_strided(maxima + max_off, ntv, 1);
    return ldexpf(1.f, up ? e : -e);
  };

  wt::load_rows_padded<kThreadsTc>(sq, kLd, qh, p.q_tok_stride, L, kcols, kChunk, kTile);
  wt::load_rows_padded<kThreadsTc>(sk, kLd, kh, p.k_tok_stride, L, kcols, kChunk, kTile);
  vector_gate_cumsum(sg, p, t0, h, d0, L, kcols);  // ends synchronised: sq, sk complete too
  // Kt: the keys re-based for query block ib (pivot 16 ib > j), packed as in the forward.
  rebase_keys(reb, sk, sg);

  // 1. D = scale dO V^T on and below the diagonal, accumulated over 64-column V slabs.
  {
    typename Fr::Acc acc[kDBlocksPerWarp];
#pragma unroll
    for (int b = 0; b < kDBlocksPerWarp; ++b) wmma::fill_fragment(acc[b], 0.f);
    for (int v0 = 0; v0 < V; v0 += kTile) {
      const int vcols = min(kTile, V - v0), nvs = static_cast<int>(ceil_div(vcols, kFrag));
      __syncthreads();  // the previous slab's products are done (and, the first time, Kt is complete)
      wt::load_rows_padded<kThreadsTc>(r1, kLd, doh + v0, p.v_tok_stride, L, vcols, kChunk, kTile,
                                       static_cast<float>(p.do_scale));
      wt::load_rows_padded<kThreadsTc>(r2, kLd, vh + v0, p.v_tok_stride, L, vcols, kChunk, kTile);
      __syncthreads();
#pragma unroll
      for (int b = 0; b < kDBlocksPerWarp; ++b) {
        const int blk = warp + b * kWarps;
        int ib = 0, jb = 0;
        tc::score_block(blk, ib, jb);
        if (blk < tc::kScoreBlocks && ib < nrb) {
          for (int vs = 0; vs < nvs; ++vs) {
            typename Fr::ARow a;
            typename Fr::BCol bv;  // V^T: a column-major view of the row-major value slab
            wmma::load_matrix_sync(a, r1 + ib * kFrag * kLd + vs * kFrag, kLd);
            wmma::load_matrix_sync(bv, r2 + jb * kFrag * kLd + vs * kFrag, kLd);
            wmma::mma_sync(acc[b], a, bv, acc[b]);
          }
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kDBlocksPerWarp; ++b) {
      const int blk = warp + b * kWarps;
      int ib = 0, jb = 0;
      tc::score_block(blk, ib, jb);
      if (blk < tc::kScoreBlocks && ib < nrb) {
        wmma::store_matrix_sync(fa + ib * kFrag * kLdf + jb * kFrag, acc[b], kLdf, wmma::mem_row_major);
      }
    }
  }
  __syncthreads();
  mask_scores(sd, fa, L, scale);  // D is masked as P is: unwritten blocks of fa are never read

  typename Fr::Acc acc[kRowBlocks];  // the warp's 16 key columns of dq (then dk), every row block
  // 2. dq: dO S_c^T over the V slabs, then (per warp, in its fp32 columns of fa) the factor scale e^{G_p},
  // + D Kt, the factor e^{G_i - G_p} and the diagonal blocks.
  {
    const float down = range_factor(state_max, false);
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) wmma::fill_fragment(acc[r], 0.f);
    for (int v0 = 0; v0 < V; v0 += kTile) {
      const int vcols = min(kTile, V - v0), nvs = static_cast<int>(ceil_div(vcols, kFrag));
      __syncthreads();  // the previous products are done with r1 / r2 (and, the first time, D is complete)
      wt::load_rows_padded<kThreadsTc>(r1, kLd, doh + v0, p.v_tok_stride, L, vcols, kChunk, kTile,
                                       static_cast<float>(p.do_scale));
      tc::state_slab_to_tile(r2, kLd, S0 + v0, V, kcols, vcols, kTile, kTile, down);
      __syncthreads();
      if (warp < nkb) {
        for (int vs = 0; vs < nvs; ++vs) {
          typename Fr::BCol b;  // S_c^T: a column-major view of the row-major [key rows x values] slab
          wmma::load_matrix_sync(b, r2 + cb * kFrag * kLd + vs * kFrag, kLd);
#pragma unroll
          for (int r = 0; r < kRowBlocks; ++r) {
            if (r < nrb) {
              typename Fr::ARow a;
              wmma::load_matrix_sync(a, r1 + r * kFrag * kLd + vs * kFrag, kLd);
              wmma::mma_sync(acc[r], a, b, acc[r]);
            }
          }
        }
      }
    }
    if (warp < nkb) {
      float* __restrict__ col = fa + cb * kFrag;
#pragma unroll
      for (int r = 0; r < kRowBlocks; ++r) {
        if (r < nrb) wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
      }
      __syncwarp();
      const float up = scale * range_factor(state_max, true);
      for (int e = lane; e < nrb * kFrag * kFrag; e += 32) {
        const int i = e / kFrag, cc = e % kFrag, pr = (i / kFrag) * kFrag;
        col[i * kLdf + cc] *= up * expf(sg[pr * kLdg + cb * kFrag + cc]);
      }
      __syncwarp();
#pragma unroll
      for (int r = 0; r < kRowBlocks; ++r) {
        if (r < nrb) {
          wmma::load_matrix_sync(acc[r], col + r * kFrag * kLdf, kLdf, wmma::mem_row_major);
          for (int jb = 0; jb < r; ++jb) {
            typename Fr::ARow a;
            typename Fr::BRow b;
            wmma::load_matrix_sync(a, sd + r * kFrag * kLd + jb * kFrag, kLd);
            wmma::load_matrix_sync(b, reb + (kg_offset(r) + jb * kFrag) * kLd + cb * kFrag, kLd);
            wmma::mma_sync(acc[r], a, b, acc[r]);
          }
          wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
        }
      }
      __syncwarp();
      for (int e = lane; e < nrb * kFrag * kFrag; e += 32) {
        const int i = e / kFrag, cc = e % kFrag, d = cb * kFrag + cc, pr = (i / kFrag) * kFrag;
        const float gi = sg[i * kLdg + d];
        float x = col[i * kLdf + cc] * expf(gi - sg[pr * kLdg + d]);
        for (int j = pr; j <= i; ++j) {
          x += to_float(sd[i * kLd + j]) * to_float(sk[j * kLd + d]) * expf(gi - sg[j * kLdg + d]);
        }
        col[i * kLdf + cc] = x;
      }
    }
  }
  __syncthreads();

  T* __restrict__ dqh = static_cast<T*>(p.dq) + h * p.q_head_stride + t0 * p.q_tok_stride + d0;
  for (int e = threadIdx.x; e < kChunk * kTile; e += kThreadsTc) {
    const int i = e / kTile, d = e % kTile;
    if (i < L && d < kcols) {
      const float x = fa[i * kLdf + d];
      dqh[i * p.q_tok_stride + d] = from_float<T>(x);
      fa[i * kLdf + d] = to_float(sq[i * kLd + d]) * x;  // dg's q dq, from the fp32 dq
    }
  }
  // Qt over Kt (dead since the barrier): the queries re-based for key block jb (pivot 16 (jb + 1) <= i).
  for (int e = threadIdx.x; e < kRebasedQueryRows * kTile; e += kThreadsTc) {
    const int r = e / kTile, d = e % kTile;
    const int jb = r < qt_offset(1) ? 0 : (r < qt_offset(2) ? 1 : 2);
    const int pr = kFrag * (jb + 1), i = pr + r - qt_offset(jb);
    reb[r * kLd + d] = from_float<T>(to_float(sq[i * kLd + d]) * expf(sg[i * kLdg + d] - sg[pr * kLdg + d]));
  }

  // 3. dk: V dS^T over the V slabs, then the factor e^{G_L - G_p'}, + D^T Qt, the factor e^{G_p' - G_j} and the
  // diagonal blocks. dS enters as hi + lo: the carry sum_v dS * S_{c+1} (fp32) and sum_j k_j dk_inter_j cancel in
  // dg up to e^{G_L} sum_v dS * S_c, so one rounding of dS here would reach every row of the chunk undamped (with
  // strong gates dg is that small remainder: 5x PyTorch's bf16 error on the emulator with a single rounding).
  {
    const float down = range_factor(dstate_max, false);
    T* __restrict__ r1_lo = reinterpret_cast<T*>(fb);  // fb is free until dk's products are stored
#pragma unroll
    for (int r = 0; r < kRowBlocks; ++r) wmma::fill_fragment(acc[r], 0.f);
    for (int v0 = 0; v0 < V; v0 += kTile) {
      const int vcols = min(kTile, V - v0), nvs = static_cast<int>(ceil_div(vcols, kFrag));
      __syncthreads();  // the previous products are done with r1 / r2 (and, the first time, Qt is complete)
      state_slab_to_split_tiles(r1, r1_lo, kLd, dS + v0, V, kcols, vcols, down);
      wt::load_rows_padded<kThreadsTc>(r2, kLd, vh + v0, p.v_tok_stride, L, vcols, kChunk, kTile);
      __syncthreads();
      if (warp < nkb) {
        for (int vs = 0; vs < nvs; ++vs) {
          typename Fr::BCol b, b_lo;  // dS^T
          wmma::load_matrix_sync(b, r1 + cb * kFrag * kLd + vs * kFrag, kLd);
          wmma::load_matrix_sync(b_lo, r1_lo + cb * kFrag * kLd + vs * kFrag, kLd);
#pragma unroll
          for (int r = 0; r < kRowBlocks; ++r) {
            if (r < nrb) {
              typename Fr::ARow a;
              wmma::load_matrix_sync(a, r2 + r * kFrag * kLd + vs * kFrag, kLd);
              wmma::mma_sync(acc[r], a, b, acc[r]);
              wmma::mma_sync(acc[r], a, b_lo, acc[r]);
            }
          }
        }
      }
    }
    __syncthreads();  // every warp is done with the low part before fb takes dk's products
    if (warp < nkb) {
      float* __restrict__ col = fb + cb * kFrag;
#pragma unroll
      for (int r = 0; r < kRowBlocks; ++r) {
        if (r < nrb) wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
      }
      __syncwarp();
      const float up = range_factor(dstate_max, true);
      for (int e = lane; e < nrb * kFrag * kFrag; e += 32) {
        const int j = e / kFrag, cc = e % kFrag, d = cb * kFrag + cc, pk = key_pivot(j / kFrag);
        col[j * kLdf + cc] *= up * expf(sg[(kChunk - 1) * kLdg + d] - sg[pk * kLdg + d]);
      }
      __syncwarp();
#pragma unroll
      for (int r = 0; r < kRowBlocks; ++r) {
        if (r < nrb) {
          wmma::load_matrix_sync(acc[r], col + r * kFrag * kLdf, kLdf, wmma::mem_row_major);
          for (int ib = r + 1; ib < nrb; ++ib) {
            typename Fr::ACol a;  // D^T block (r, ib): a column-major view of D's block (ib, r)
            typename Fr::BRow b;
            wmma::load_matrix_sync(a, sd + ib * kFrag * kLd + r * kFrag, kLd);
            wmma::load_matrix_sync(b, reb + (qt_offset(r) + (ib - r - 1) * kFrag) * kLd + cb * kFrag, kLd);
            wmma::mma_sync(acc[r], a, b, acc[r]);
          }
          wmma::store_matrix_sync(col + r * kFrag * kLdf, acc[r], kLdf, wmma::mem_row_major);
        }
      }
      __syncwarp();
      for (int e = lane; e < nrb * kFrag * kFrag; e += 32) {
        const int j = e / kFrag, cc = e % kFrag, d = cb * kFrag + cc, pk = key_pivot(j / kFrag);
        const int iend = (j / kFrag) * kFrag + kFrag;  // rows past L hold D = 0
        const float gj = sg[j * kLdg + d];
        float x = col[j * kLdf + cc] * expf(sg[pk * kLdg + d] - gj);
        for (int i = j; i < iend; ++i) {
          x += to_float(sd[i * kLd + j]) * to_float(sq[i * kLd + d]) * expf(sg[i * kLdg + d] - gj);
        }
        col[j * kLdf + cc] = x;
      }
    }
  }
  // dg's carry, per key row d of this tile: sum over all V of dS * S_{c+1} in fp32 (warp w: rows 16 w ..).
  if (want_dg) {
    for (int rr = 0; rr < kFrag; ++rr) {
      const int d = warp * kFrag + rr;
      float s = 0.f;
      if (d < kcols) {
        for (int v = lane; v < V; v += 32) s += dS[int64_t(d) * V + v] * S1[int64_t(d) * V + v];
      }
#pragma unroll
      for (int off = 16; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
      if (lane == 0) scarry[d] = s;
    }
  }
  __syncthreads();

  T* __restrict__ dkh = static_cast<T*>(p.dk) + h * p.k_head_stride + t0 * p.k_tok_stride + d0;
  for (int e = threadIdx.x; e < kChunk * kTile; e += kThreadsTc) {
    const int j = e / kTile, d = e % kTile;
    const bool in = j < L && d < kcols;
    const float x = in ? fb[j * kLdf + d] : 0.f;
    if (in) dkh[j * p.k_tok_stride + d] = from_float<T>(x);
    if (want_dg) fa[j * kLdf + d] = in ? fa[j * kLdf + d] - to_float(sk[j * kLd + d]) * x : 0.f;
  }
  if (!want_dg) return;  // uniform over the block
  __syncthreads();

  // In-chunk suffix sums down each key column: two threads per column (rows 32..63, then 0..31 adding the first
  // half's total), in a fixed order; then + the carry.
  constexpr int kHalf = kChunk / 2;
  const int d = threadIdx.x % kTile, half = threadIdx.x / kTile;
  {
    float run = 0.f;
    for (int r = kHalf - 1; r >= 0; --r) {
      const int i = half * kHalf + r;
      run += fa[i * kLdf + d];
      fa[i * kLdf + d] = run;
    }
  }
  __syncthreads();
  const float after = (half == 0 ? fa[kHalf * kLdf + d] : 0.f) + scarry[d];
  float* __restrict__ dgh = static_cast<float*>(p.dg) + (t0 * H + h) * K + d0;
  if (d < kcols) {
    for (int r = 0; r < kHalf; ++r) {
      const int i = half * kHalf + r;
      if (i < L) dgh[int64_t(i) * H * K + d] = fa[i * kLdf + d] + after;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Launchers, one per pass so that each pass compiles in its own instantiation unit.

template <typename T>
void launch_bwd_states(const BwdParams& p, const tc::BwdPtrs& w, cudaStream_t stream) {
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const int64_t nh = p.num_seqs * p.heads;
  const dim3 grid(static_cast<unsigned>(nh), static_cast<unsigned>(ceil_div(p.dim_k, kTile)),
                  static_cast<unsigned>(ceil_div(p.dim_v, kTile)));
  {
    FwdParams fp = p;
    fp.ht = nullptr;  // the final states go to their slots
    const size_t smem = StateSmem<T>(kSplitStateKeys).launch_bytes;
    auto kernel = vec_state_kernel<T, kTile, kFp16, true, kSplitStateKeys>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, kThreadsTc, smem, stream>>>(fp, w.states, w.state_max);
    LINATTN_CHECK_LAUNCH();
  }
  {
    const size_t smem = DStateSmem<T>().launch_bytes;
    auto kernel = vec_dstate_kernel<T, kFp16>;
    cuda_utils::prepare_dynamic_smem(kernel, smem);
    kernel<<<grid, kThreadsTc, smem, stream>>>(p, w.dstates, w.dstate_max);
    LINATTN_CHECK_LAUNCH();
  }
}

template <typename T>
void launch_bwd_dv(const BwdParams& p, const tc::BwdPtrs& w, cudaStream_t stream) {
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const size_t smem = DvSmem<T>().launch_bytes;
  auto kernel = vec_dv_kernel<T, kFp16>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(num_state_slots(p)), static_cast<unsigned>(ceil_div(p.dim_v, kTile)),
                  static_cast<unsigned>(p.heads));
  kernel<<<grid, kThreadsTc, smem, stream>>>(p, w.dstates, w.dstate_max);
  LINATTN_CHECK_LAUNCH();
}

template <typename T>
void launch_bwd_dqk(const BwdParams& p, const tc::BwdPtrs& w, cudaStream_t stream) {
  constexpr bool kFp16 = std::is_same_v<T, __half>;
  const size_t smem = DqkSmem<T>().launch_bytes;
  auto kernel = vec_dqk_kernel<T, kFp16>;
  cuda_utils::prepare_dynamic_smem(kernel, smem);
  const dim3 grid(static_cast<unsigned>(num_state_slots(p)), static_cast<unsigned>(ceil_div(p.dim_k, kTile)),
                  static_cast<unsigned>(p.heads));
  kernel<<<grid, kThreadsTc, smem, stream>>>(p, w.states, w.dstates, w.state_max, w.dstate_max);
  LINATTN_CHECK_LAUNCH();
}

// Each pass is compiled once per dtype in ops/gla/cuda/inst/gla_bwd_tc_vec_<pass>_<dtype>.cu.
#define LINATTN_GLA_TC_VEC_BWD_PASSES(PREFIX, T)                                                   \
  PREFIX template void launch_bwd_states<T>(const BwdParams&, const tc::BwdPtrs&, cudaStream_t); \
  PREFIX template void launch_bwd_dv<T>(const BwdParams&, const tc::BwdPtrs&, cudaStream_t);     \
  PREFIX template void launch_bwd_dqk<T>(const BwdParams&, const tc::BwdPtrs&, cudaStream_t);
LINATTN_GLA_TC_VEC_BWD_PASSES(extern, __half)
LINATTN_GLA_TC_VEC_BWD_PASSES(extern, __nv_bfloat16)
#undef LINATTN_GLA_TC_VEC_BWD_PASSES

}  // namespace tc_vec

template <DType D>
void chunk_backward_tc_vec(const BwdParams& p, float* workspace, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core backward takes fp16 or bf16 inputs");
  using T = typename StorageOf<D>::type;
  if (p.num_seqs * p.heads == 0) return;
  const TcBwdWorkspaceLayout lay = chunk_backward_tc_vec_workspace(p);
  tc::BwdPtrs w;
  w.states = workspace + lay.states;
  w.dstates = workspace + lay.dstates;
  w.state_max = workspace + lay.state_max;
  w.dstate_max = workspace + lay.dstate_max;
  w.dg_partial = nullptr;  // per-key dg: every (chunk, K tile) writes its own entries
  tc_vec::launch_bwd_states<T>(p, w, stream);
  if (p.batch * p.seqlen == 0) return;  // no tokens: nothing but dh0
  tc_vec::launch_bwd_dv<T>(p, w, stream);
  tc_vec::launch_bwd_dqk<T>(p, w, stream);
}

}  // namespace linattn::gla::gpu
