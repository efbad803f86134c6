#pragma once
// bf16 hi + lo operand pairs for tensor-core products that need more than 8 mantissa bits, on the portable
// nvcuda::wmma API (csrc/cuda/wmma_tiles.cuh). A float x is passed as hi = bf16(x) and lo = bf16(x - hi): hi + lo
// carries x to ~17 bits, and a product a b is formed as a_hi b_hi + a_hi b_lo + a_lo b_hi (a_lo b_lo is
// ~2^-18 of it), each an fp32-accumulated bf16 product. bf16 has fp32's exponent range, so no range scaling
// is needed, and an fp16 value splits into two bf16 values exactly (11 significant bits = 8 in hi + at most 3
// in lo; fp16's smallest subnormal is far inside bf16's range): fp16 operands reach bf16 products unchanged.
#include "csrc/cuda/wmma_tiles.cuh"

namespace linattn::cuda_utils::wmma_tiles {

using Bf16 = __nv_bfloat16;

// hi[at] = bf16(x); kLo: lo[at] = bf16(x - hi) (exact for an fp16 x).
template <bool kLo>
__device__ __forceinline__ void store_split(Bf16* __restrict__ hi, Bf16* __restrict__ lo, int at, float x) {
  const Bf16 h = __float2bfloat16_rn(x);
  hi[at] = h;
  if constexpr (kLo) lo[at] = __float2bfloat16_rn(x - __bfloat162float(h));
}

// load_rows_padded (wmma_tiles.cuh) into bf16 tiles from a 16-bit source: a bf16 source is copied into hi (lo is
// not touched), an fp16 source is split exactly into hi and lo. Same shape and padding rules; all threads of
// the block; the caller synchronises afterwards.
template <int kThreads, typename T>
__device__ __forceinline__ void load_rows_as_bf16(Bf16* __restrict__ hi, Bf16* __restrict__ lo, int ld,
                                                  const T* __restrict__ src, int64_t stride, int rows, int cols,
                                                  int total_rows, int total_cols) {
  if constexpr (std::is_same_v<T, Bf16>) {
    load_rows_padded<kThreads>(hi, ld, src, stride, rows, cols, total_rows, total_cols);
  } else {
    static_assert(std::is_same_v<T, __half>, "16-bit sources: __half or __nv_bfloat16");
    constexpr int kVec = 8;  // halves per 16-byte pack
    const bool vec = cols % kVec == 0 && total_cols % kVec == 0 && ld % kVec == 0 && stride % kVec == 0 &&
                     reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(hi) % 16 == 0 &&
                     reinterpret_cast<uintptr_t>(lo) % 16 == 0;
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
            __half v[kVec];
            Bf16 h[kVec], l[kVec];
            memcpy(v, &x, sizeof(v));
#pragma unroll
            for (int m = 0; m < kVec; ++m) {
              const float f = __half2float(v[m]);
              h[m] = __float2bfloat16_rn(f);
              l[m] = __float2bfloat16_rn(f - __bfloat162float(h[m]));
            }
            Pack16 ph, pl;
            memcpy(&ph, h, sizeof(h));
            memcpy(&pl, l, sizeof(l));
            *reinterpret_cast<Pack16*>(hi + i * ld + d) = ph;
            *reinterpret_cast<Pack16*>(lo + i * ld + d) = pl;
          });
    } else {
      batched_copy<kThreads, 8>(
          total_rows * total_cols,
          [&](int e) {
            const int i = e / total_cols, d = e % total_cols;
            return (i < rows && d < cols) ? __half2float(src[int64_t(i) * stride + d]) : 0.f;
          },
          [&](int e, float x) { store_split<true>(hi, lo, (e / total_cols) * ld + e % total_cols, x); });
    }
  }
}

}  // namespace linattn::cuda_utils::wmma_tiles
