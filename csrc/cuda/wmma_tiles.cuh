#pragma once
// Torch-free tensor-core building blocks on the portable nvcuda::wmma API: m16n16k16 fragments, __half or
// __nv_bfloat16 operands, fp32 accumulators (sm_80 and sm_90a both compile it). Kernels built on these never
// depend on a fragment layout: operands travel through shared memory, and the only per-element operation
// applied to a fragment is a uniform scale, which is the same under every layout.
//
// wmma's memory rules, kept by the helpers below: fragment pointers 256-bit (32-byte) aligned, leading
// dimensions a multiple of 16 bytes. Row-major tiles get 16 extra bytes per row, so the rows a fragment
// load reads together start in different banks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "csrc/cuda/batched_copy.cuh"
#include "csrc/cuda/type_utils.cuh"

namespace linattn::cuda_utils::wmma_tiles {

namespace wmma = nvcuda::wmma;

constexpr int kFrag = 16;            // m = n = k of every fragment
constexpr int kPadBytes = 16;        // extra bytes per tile row (bank shift, keeps the 16-byte ldm rule)
constexpr size_t kSmemAlign = 128;   // alignment of every shared-memory region (>= the 32 bytes wmma needs)

using AccFrag = wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float>;

// Fragment types of one operand dtype.
template <typename T>
struct Frag {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "wmma m16n16k16 with fp32 accumulation takes __half or __nv_bfloat16 operands");
  using ARow = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, T, wmma::row_major>;
  using ACol = wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, T, wmma::col_major>;
  using BRow = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, T, wmma::row_major>;
  using BCol = wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, T, wmma::col_major>;
  using Acc = AccFrag;
};

// Leading dimension (elements) of a row-major shared tile with `cols` columns.
template <typename T>
__host__ __device__ constexpr int padded_ld(int cols) {
  return cols + kPadBytes / static_cast<int>(sizeof(T));
}

// n rounded up to whole fragments.
__host__ __device__ constexpr int round_up_frag(int64_t n) { return static_cast<int>(ceil_div(n, kFrag) * kFrag); }

// A row-major [kRows x kCols] shared tile whose shape is fixed at compile time.
template <typename T, int kRows, int kCols>
struct SmemTile {
  static_assert(kRows % kFrag == 0 && kCols % kFrag == 0, "a wmma tile must be whole 16 x 16 fragments");
  static constexpr int kLd = padded_ld<T>(kCols);
  static_assert((kLd * sizeof(T)) % 16 == 0, "wmma needs a leading dimension that is a multiple of 16 bytes");
  static_assert((kFrag * kLd * sizeof(T)) % 32 == 0, "fragment rows of the tile must start 32-byte aligned");
  static constexpr int kRowBlocks = kRows / kFrag;
  static constexpr int kColBlocks = kCols / kFrag;
  static constexpr int64_t kElems = int64_t(kRows) * kLd;
};

// Bump allocator for the regions of one dynamic shared-memory buffer (host: sizing, device: carving).
struct SmemCarver {
  size_t bytes = 0;
  template <typename T>
  __host__ __device__ size_t take(int64_t elems) {
    const size_t off = (bytes + kSmemAlign - 1) / kSmemAlign * kSmemAlign;
    bytes = off + static_cast<size_t>(elems) * sizeof(T);
    return off;
  }
  // Bytes to request at launch: the dynamic buffer is only guaranteed 16-byte aligned, so the device side
  // realigns its base (align_smem) and may lose up to kSmemAlign bytes.
  __host__ __device__ size_t launch_bytes() const { return bytes + kSmemAlign; }
};

__device__ __forceinline__ char* align_smem(void* raw) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(raw);
  return reinterpret_cast<char*>((a + kSmemAlign - 1) / kSmemAlign * kSmemAlign);
}

// Multiplies every element of an accumulator: layout-independent.
__device__ __forceinline__ void scale_fragment(AccFrag& f, float s) {
#pragma unroll
  for (int i = 0; i < f.num_elements; ++i) f.x[i] *= s;
}

// 16 bytes copied as one vector access.
struct alignas(16) Pack16 {
  uint32_t w[4];
};

// round(mul * x) for the eight 16-bit values of a pack (fp32 product, one rounding).
template <typename T>
__device__ __forceinline__ Pack16 scale_pack(const Pack16& x, float mul) {
  T v[8];
  memcpy(v, &x, sizeof(v));
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = from_float<T>(to_float(v[i]) * mul);
  Pack16 y;
  memcpy(&y, v, sizeof(v));
  return y;
}

// dst[i * ld + d] = src[i * stride + d] for i < rows, d < cols; zeros for the rest of [total_rows x
// total_cols] (padding rows and columns must be 0, not stale: fragments multiply them). 16-byte vector
// accesses when the shape and the alignment allow. All threads of the block (kThreads of them); the caller
// synchronises afterwards. mul != 1 stores round(mul * src) instead (the backward's do_scale: a scaled copy of
// do made while staging it rather than in global memory); at the default 1 the copy is exact and the product
// is compiled out.
template <int kThreads, typename T>
__device__ __forceinline__ void load_rows_padded(T* __restrict__ dst, int ld, const T* __restrict__ src, int64_t stride,
                                                 int rows, int cols, int total_rows, int total_cols, float mul = 1.f) {
  static_assert(sizeof(T) == 2, "16-bit operands");
  constexpr int kVec = 16 / sizeof(T);
  const bool scaled = mul != 1.f;
  const bool vec = cols % kVec == 0 && total_cols % kVec == 0 && ld % kVec == 0 && stride % kVec == 0 &&
                   reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (vec) {
    const int packs = total_cols / kVec;
    batched_copy<kThreads, 4>(
        total_rows * packs,
        [&](int e) {
          const int i = e / packs, d = (e % packs) * kVec;
          Pack16 x = {{0u, 0u, 0u, 0u}};
          if (i < rows && d < cols) x = *reinterpret_cast<const Pack16*>(src + int64_t(i) * stride + d);
          return x;
        },
        [&](int e, const Pack16& x) {
          const int i = e / packs, d = (e % packs) * kVec;
          *reinterpret_cast<Pack16*>(dst + i * ld + d) = scaled ? scale_pack<T>(x, mul) : x;
        });
  } else {
    const T zero = from_float<T>(0.f);
    batched_copy<kThreads, 8>(
        total_rows * total_cols,
        [&](int e) {
          const int i = e / total_cols, d = e % total_cols;
          return (i < rows && d < cols) ? src[int64_t(i) * stride + d] : zero;
        },
        [&](int e, const T& x) {
          dst[(e / total_cols) * ld + e % total_cols] = scaled ? from_float<T>(to_float(x) * mul) : x;
        });
  }
}

}  // namespace linattn::cuda_utils::wmma_tiles
