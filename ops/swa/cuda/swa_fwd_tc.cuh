#pragma once
// Sliding-window attention forward on tensor cores (fp16 / bf16 inputs, nvcuda::wmma m16n16k16, fp32
// accumulation), flash style. One CTA of 4 warps per (query tile of 64 rows, head); warp w owns query rows
// 16w .. 16w + 15 for the whole kernel, so the softmax of a row never leaves its warp and the only block
// barriers are the ones around the shared key / value tiles. The CTA walks the key tiles of kBc rows that meet
// the union of its rows' windows, [r0 - w + 1, r0 + 63], as the SIMT forward does; per key tile a warp
//   1. S = Q K^T for its 16 rows (key blocks that lie wholly outside every window of its rows are skipped),
//   2. masks (causal, window, sequence end) in fp32 *before* the exp, updates the running max m and sum l of
//      each row, and writes P = exp(scale s - m) rounded to the input dtype over its fp32 S rows,
//   3. rescales its fp32 output rows by exp(m_old - m_new) and adds P V on tensor cores.
// At the end o = acc / l and lse = m + log l: the same fp32 log-sum-exp of the scaled scores as the SIMT
// forward, so the SIMT backward (which recomputes p_ij = exp(scale q_i.k_j - lse_i)) consumes it unchanged.
//
// Why the output accumulator lives in shared memory (fp32) and not in wmma accumulators: the online softmax
// scales each row by its own factor, and a fragment's element-to-row mapping is unspecified, so a per-row scale
// can only be applied to a stored tile (csrc/cuda/wmma_tiles.cuh: kernels never rely on a fragment layout).
// Each warp reloads its 16 output rows into accumulators for the P V product and stores them back; that is the
// same shared-memory volume as reading the value tile once more.
//
// Precision: l sums the *rounded* probabilities, the values the tensor cores multiply, so o is an exact convex
// combination (up to fp32 sums) of value rows with the weights actually used, and lse describes those weights.
// Not guarded: fp16 scores |scale q.k| are formed in fp32, so no fp16 overflow; inputs must be finite.
#include <cmath>

#include "csrc/cuda/cuda_check.h"
#include "csrc/cuda/launch_utils.h"
#include "csrc/cuda/wmma_tiles.cuh"
#include "ops/swa/cuda/swa_common.cuh"

namespace linattn::swa::gpu {
namespace tc {

namespace wt = cuda_utils::wmma_tiles;
namespace wmma = nvcuda::wmma;
using cuda_utils::from_float;
using cuda_utils::to_float;
using wt::kFrag;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = kWarps * kFrag;  // query rows per CTA: one 16-row block per warp
static_assert(kRows == 64, "the tile slots of swa_common.cuh are laid out for 64-row query tiles here");

// Byte offsets of the shared regions for K padded to kp and V to vp columns (whole fragments), key tiles of
// kBc rows. The host sizes the launch with the same struct the device carves with.
template <typename T, int kBc>
struct FwdSmem {
  static_assert(kBc % kFrag == 0 && kBc >= kFrag && kBc <= 64,
                "key tiles are whole 16-row fragments, at most 64 rows (the per-warp score row fits 32 lanes)");
  int ldq, ldv, ldo, lds, ldp;
  size_t q, k, v, o, s, inv, launch_bytes;
  __host__ __device__ FwdSmem(int kp, int vp) {
    ldq = wt::padded_ld<T>(kp);
    ldv = wt::padded_ld<T>(vp);
    ldo = wt::padded_ld<float>(vp);
    lds = wt::padded_ld<float>(kBc);
    // P (input dtype) is written over the warp's own fp32 score rows: same byte pitch, half the width used.
    ldp = lds * static_cast<int>(sizeof(float) / sizeof(T));
    wt::SmemCarver c;
    q = c.take<T>(int64_t(kRows) * ldq);
    k = c.take<T>(int64_t(kBc) * ldq);
    v = c.take<T>(int64_t(kBc) * ldv);
    o = c.take<float>(int64_t(kRows) * ldo);
    s = c.take<float>(int64_t(kRows) * lds);
    inv = c.take<float>(kRows);
    launch_bytes = c.launch_bytes();
  }
};

// sm_80 gives a CTA at most 163 KB of shared memory; 64-row key tiles are used while they keep the CTA under
// this budget (two CTAs per SM at head dims <= 64), 32-row ones above it (K = V = 256 needs ~143 KB).
constexpr size_t kSmemBudget = 100 * 1024;

// Minimum one block per SM in the launch bounds: without it ptxas (nvcc 13.0, sm_90a, bf16, 32-row key tiles)
// aimed at 80 registers and spilled; shared memory limits residency to 2-3 CTAs per SM anyway.
template <typename T, int kBc>
__global__ void __launch_bounds__(kThreads, 1) swa_fwd_tc_kernel(const Params p) {
  using Fr = wt::Frag<T>;
  constexpr int kCb = kBc / kFrag;      // 16-column key blocks of a score row block
  constexpr int kHalf = kBc / 2;        // score columns per lane (two lanes per row)
  TileSpan t;
  if (!locate_tile(p, kRows, blockIdx.x, t)) return;  // uniform over the CTA

  const int K = static_cast<int>(p.dim_k), V = static_cast<int>(p.dim_v);
  const int kp = wt::round_up_frag(K), vp = wt::round_up_frag(V);
  const int nks = kp / kFrag, nvb = vp / kFrag;
  extern __shared__ float smem[];
  char* const base = wt::align_smem(smem);
  const FwdSmem<T, kBc> lay(kp, vp);
  T* __restrict__ sq = reinterpret_cast<T*>(base + lay.q);
  T* __restrict__ sk = reinterpret_cast<T*>(base + lay.k);
  T* __restrict__ sv = reinterpret_cast<T*>(base + lay.v);
  float* __restrict__ so = reinterpret_cast<float*>(base + lay.o);
  float* __restrict__ ss = reinterpret_cast<float*>(base + lay.s);
  float* __restrict__ sinv = reinterpret_cast<float*>(base + lay.inv);
  const int ldq = lay.ldq, ldv = lay.ldv, ldo = lay.ldo, lds = lay.lds, ldp = lay.ldp;

  const int64_t h = blockIdx.y;
  const int rows = static_cast<int>(min(int64_t(kRows), t.len - t.r0));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wr0 = warp * kFrag;            // first tile row of the warp
  const bool active = wr0 < rows;          // warp-uniform: the warp holds a real query row
  const int row = wr0 + lane / 2;          // the tile row this lane's softmax works on
  const int half = lane % 2;               // which half of the score columns
  const int64_t i = t.r0 + row;            // its query position in the sequence
  const bool row_ok = row < rows;
  const float scale = static_cast<float>(p.scale);
  const int64_t w = p.window;
  // Sequence positions of the warp's first and last real rows: bound the keys any of them can see.
  const int64_t wi_lo = t.r0 + wr0, wi_hi = t.r0 + min(wr0 + kFrag, rows) - 1;

  const T* __restrict__ qh = static_cast<const T*>(p.q) + h * p.qk_head_stride;
  const T* __restrict__ kh = static_cast<const T*>(p.k) + h * p.qk_head_stride;
  const T* __restrict__ vh = static_cast<const T*>(p.v) + h * p.v_head_stride;
  wt::load_rows_padded<kThreads>(sq, ldq, qh + (t.bos + t.r0) * p.qk_tok_stride, p.qk_tok_stride, rows, K, kRows,
                                 kp);
  for (int e = lane; e < kFrag * vp; e += 32) so[(wr0 + e / vp) * ldo + e % vp] = 0.f;  // the warp's rows

  float m = -INFINITY, l = 0.f;  // of row `row`, identical in both lanes of the pair
  const int64_t last = t.r0 + rows - 1;
  for (int64_t j0 = max(int64_t(0), t.r0 - w + 1); j0 <= last; j0 += kBc) {
    const int kr = static_cast<int>(min(int64_t(kBc), last - j0 + 1));
    __syncthreads();  // every warp is done with the previous key and value tiles
    // Rows past kr and columns past K / V are zeros: the products read them (0 * 0, never stale NaN * 0).
    wt::load_rows_padded<kThreads>(sk, ldq, kh + (t.bos + j0) * p.qk_tok_stride, p.qk_tok_stride, kr, K, kBc, kp);
    wt::load_rows_padded<kThreads>(sv, ldv, vh + (t.bos + j0) * p.v_tok_stride, p.v_tok_stride, kr, V, kBc, vp);
    __syncthreads();
    if (!active) continue;

    // A key block is needed by the warp when it holds a real key that some row of the warp sees; a skipped
    // block's stale scores are never used, because every element of it fails the mask below.
    bool need[kCb];
#pragma unroll
    for (int cb = 0; cb < kCb; ++cb) {
      const int64_t jlo = j0 + cb * kFrag, jhi = jlo + kFrag - 1;
      need[cb] = cb * kFrag < kr && jlo <= wi_hi && jhi > wi_lo - w;
    }

    // 1. raw scores of the warp's 16 rows
    {
      typename Fr::Acc acc[kCb];
#pragma unroll
      for (int cb = 0; cb < kCb; ++cb) wmma::fill_fragment(acc[cb], 0.f);
      for (int ks = 0; ks < nks; ++ks) {
        typename Fr::ARow a;
        wmma::load_matrix_sync(a, sq + wr0 * ldq + ks * kFrag, ldq);
#pragma unroll
        for (int cb = 0; cb < kCb; ++cb) {
          if (need[cb]) {
            typename Fr::BCol b;  // K^T: a column-major view of the row-major key tile
            wmma::load_matrix_sync(b, sk + cb * kFrag * ldq + ks * kFrag, ldq);
            wmma::mma_sync(acc[cb], a, b, acc[cb]);
          }
        }
      }
#pragma unroll
      for (int cb = 0; cb < kCb; ++cb) {
        if (need[cb]) wmma::store_matrix_sync(ss + wr0 * lds + cb * kFrag, acc[cb], lds, wmma::mem_row_major);
      }
    }
    __syncwarp();

    // 2. online softmax of row `row` over this tile, columns half * kHalf .. + kHalf - 1 in this lane
    float x[kHalf];
    float tmax = -INFINITY;
#pragma unroll
    for (int c = 0; c < kHalf; ++c) {
      const int jj = half * kHalf + c;
      const int64_t j = j0 + jj;
      const bool ok = row_ok && jj < kr && j <= i && i - j < w;
      x[c] = ok ? __fmul_rn(ss[row * lds + jj], scale) : -INFINITY;
      tmax = fmaxf(tmax, x[c]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float m_new = fmaxf(m, tmax);
    // A row with no key yet keeps m = -inf; its exponents are taken against 0 and give 0 (never inf - inf).
    const float ref = m_new == -INFINITY ? 0.f : m_new;
    const float alpha = expf(m - ref);
    m = m_new;
    float psum = 0.f;
#pragma unroll
    for (int c = 0; c < kHalf; ++c) {
      const T pr = from_float<T>(expf(x[c] - ref));
      psum += to_float(pr);
      x[c] = to_float(pr);
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    l = l * alpha + psum;
    __syncwarp();  // every lane has read its scores before P overwrites the rows
    T* __restrict__ sp = reinterpret_cast<T*>(ss);
#pragma unroll
    for (int c = 0; c < kHalf; ++c) sp[row * ldp + half * kHalf + c] = from_float<T>(x[c]);
    // 3. rescale the warp's output rows (this lane: every other column of its row), then O += P V
    if (alpha != 1.f) {
      for (int c = half; c < vp; c += 2) so[row * ldo + c] *= alpha;
    }
    __syncwarp();
    for (int vb = 0; vb < nvb; ++vb) {
      typename Fr::Acc acc;
      wmma::load_matrix_sync(acc, so + wr0 * ldo + vb * kFrag, ldo, wmma::mem_row_major);
#pragma unroll
      for (int cb = 0; cb < kCb; ++cb) {
        if (need[cb]) {
          typename Fr::ARow a;
          typename Fr::BRow b;
          wmma::load_matrix_sync(a, sp + wr0 * ldp + cb * kFrag, ldp);
          wmma::load_matrix_sync(b, sv + cb * kFrag * ldv + vb * kFrag, ldv);
          wmma::mma_sync(acc, a, b, acc);
        }
      }
      wmma::store_matrix_sync(so + wr0 * ldo + vb * kFrag, acc, ldo, wmma::mem_row_major);
    }
    // The next tile's score store (after a block barrier) is the next writer of these rows: no sync here.
  }
  if (!active) return;  // no block barrier follows

  // Every real row saw at least its own key (w >= 1), so l > 0 there.
  __syncwarp();
  if (half == 0) {
    sinv[row] = row_ok ? 1.f / l : 0.f;
    if (row_ok) static_cast<float*>(p.lse)[(t.bos + i) * p.heads + h] = m + logf(l);
  }
  __syncwarp();
  T* __restrict__ oh = static_cast<T*>(p.o) + h * p.v_head_stride + (t.bos + t.r0) * p.v_tok_stride;
  const int wrows = min(kFrag, rows - wr0);
  for (int e = lane; e < wrows * V; e += 32) {
    const int r = wr0 + e / V, c = e % V;
    oh[r * p.v_tok_stride + c] = from_float<T>(so[r * ldo + c] * sinv[r]);
  }
}

template <typename T, int kBc>
void launch_fwd(const Params& p, const FwdSmem<T, kBc>& lay, int64_t slots, cudaStream_t stream) {
  auto kernel = swa_fwd_tc_kernel<T, kBc>;
  cuda_utils::prepare_dynamic_smem(kernel, lay.launch_bytes);
  kernel<<<dim3(static_cast<unsigned>(slots), static_cast<unsigned>(p.heads)), kThreads, lay.launch_bytes,
           stream>>>(p);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace tc

template <DType D>
void forward_tc(const Params& p, cudaStream_t stream) {
  static_assert(D != DType::kFloat32, "the tensor-core forward takes fp16 / bf16 inputs; fp32 runs on SIMT");
  using T = typename StorageOf<D>::type;
  const int64_t slots = num_tile_slots(p, tc::kRows);
  if (slots == 0 || p.heads == 0) return;
  const int kp = tc::wt::round_up_frag(p.dim_k), vp = tc::wt::round_up_frag(p.dim_v);
  const tc::FwdSmem<T, 64> wide(kp, vp);
  if (wide.launch_bytes <= tc::kSmemBudget) {
    tc::launch_fwd<T, 64>(p, wide, slots, stream);
  } else {
    tc::launch_fwd<T, 32>(p, tc::FwdSmem<T, 32>(kp, vp), slots, stream);
  }
}

}  // namespace linattn::swa::gpu
