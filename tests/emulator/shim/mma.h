#pragma once
// Stand-in for <mma.h>: nvcuda::wmma on the emulator, m16n16k16 with __half / __nv_bfloat16 operands and
// float accumulators. Each lane holds 8 of a fragment's 256 elements, in a scrambled order of the emulator's
// own, so a kernel that assumed some layout (anything beyond a uniform operation on every element) gets wrong
// results. Loads, stores and mma_sync are warp collectives: every lane must call them, with the same pointer;
// pointers must be 256-bit aligned and leading dimensions a multiple of 16 bytes, as the CUDA guide demands.
// They do not order memory between lanes (only __syncwarp / __syncthreads do): a load reads the lane's part
// before meeting the warp and a store writes it after, so a missing __syncwarp around them shows up.
// Products are exact (16-bit operands) and summed in fp32 in k order; tensor cores add in an unspecified
// order, so results match a GPU to fp32 rounding, not bit for bit.
#include "../cuda_emu.h"

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator has m16n16k16 fragments only");
  using element_type = T;
  static constexpr int num_elements = 8;
  T x[num_elements];
};

namespace detail {
inline float value(float x) { return x; }
inline float value(__half x) { return __half2float(x); }
inline float value(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
T from(float x);
template <>
inline float from<float>(float x) { return x; }
template <>
inline __half from<__half>(float x) { return __float2half_rn(x); }
template <>
inline __nv_bfloat16 from<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Element i of a lane's fragment is element (row, col) = divmod(scramble(8 lane + i), 16) of the 16 x 16 tile.
constexpr int scramble(int e) { return (e * 37 + 11) & 255; }
constexpr int inverse(int r) { return (r - 11) * 173 & 255; }  // 37 * 173 = 6401 = 1 (mod 256)
static_assert(inverse(scramble(200)) == 200 && inverse(scramble(3)) == 3, "scramble is a permutation");

inline int lane() { return emu::g_sched.cur % 32; }

// The CUDA rules on a wmma pointer and leading dimension (checked before the lane touches memory).
inline void check_rules(const void* ptr, unsigned ldm, size_t elem, const std::source_location& site) {
  const std::string at = " at " + emu::where(site);
  if (reinterpret_cast<uintptr_t>(ptr) % 32 != 0) emu::g_sched.error = "wmma pointer not 256-bit aligned" + at;
  if ((ldm * elem) % 16 != 0) emu::g_sched.error = "wmma leading dimension not a multiple of 16 bytes" + at;
  if (!emu::g_sched.error.empty()) emu::yield_to_scheduler();
}

// Meets the warp at a collective; every lane must pass the same pointer.
inline void meet(const void* ptr, const std::source_location& site) {
  const uint64_t* all = emu::warp_exchange(0xffffffffu, reinterpret_cast<uintptr_t>(ptr), site);
  for (int l = 0; l < 32; ++l) {
    if (all[l] != all[0]) {
      emu::g_sched.error = "lanes of a warp pass different pointers to a wmma call at " + emu::where(site);
      emu::yield_to_scheduler();
    }
  }
}

// Offset of tile element (r, c) in memory of leading dimension ldm.
inline size_t offset(int r, int c, unsigned ldm, bool row) { return row ? size_t(r) * ldm + c : size_t(c) * ldm + r; }
}  // namespace detail

template <class Use, class T, class Layout, class V>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, const V& v) {
  for (auto& x : f.x) x = detail::from<T>(detail::value(v));
}

template <class Use, class T, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* ptr, unsigned ldm,
                      std::source_location site = std::source_location::current()) {
  static_assert(!std::is_void_v<Layout>, "operand fragments carry their layout");
  detail::check_rules(ptr, ldm, sizeof(T), site);
  for (int i = 0; i < 8; ++i) {
    const int e = detail::scramble(8 * detail::lane() + i);
    f.x[i] = ptr[detail::offset(e / 16, e % 16, ldm, std::is_same_v<Layout, row_major>)];
  }
  detail::meet(ptr, site);
}

inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* ptr, unsigned ldm,
                             layout_t layout, std::source_location site = std::source_location::current()) {
  detail::check_rules(ptr, ldm, sizeof(float), site);
  for (int i = 0; i < 8; ++i) {
    const int e = detail::scramble(8 * detail::lane() + i);
    f.x[i] = ptr[detail::offset(e / 16, e % 16, ldm, layout == mem_row_major)];
  }
  detail::meet(ptr, site);
}

inline void store_matrix_sync(float* ptr, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout, std::source_location site = std::source_location::current()) {
  detail::check_rules(ptr, ldm, sizeof(float), site);
  detail::meet(ptr, site);
  for (int i = 0; i < 8; ++i) {
    const int e = detail::scramble(8 * detail::lane() + i);
    ptr[detail::offset(e / 16, e % 16, ldm, layout == mem_row_major)] = f.x[i];
  }
}

// d = a b + c. Every lane publishes where its fragments are, computes its own elements of d from all lanes'
// pieces, and meets the warp again before writing d (which may be c).
template <class T, class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c,
              std::source_location site = std::source_location::current()) {
  struct Args {
    const fragment<matrix_a, 16, 16, 16, T, LA>* a;
    const fragment<matrix_b, 16, 16, 16, T, LB>* b;
    const fragment<accumulator, 16, 16, 16, float>* c;
  } mine{&a, &b, &c};
  const uint64_t* all = emu::warp_exchange(0xffffffffu, reinterpret_cast<uintptr_t>(&mine), site);
  // Element (r, k) of a lane-distributed tile: the lane and slot that hold it.
  auto at = [&](int which, int r, int col) -> float {
    const int e = detail::inverse(r * 16 + col);
    const Args& o = *reinterpret_cast<const Args*>(all[e / 8]);
    return which == 0 ? detail::value(o.a->x[e % 8]) : which == 1 ? detail::value(o.b->x[e % 8]) : o.c->x[e % 8];
  };
  float out[8];
  for (int i = 0; i < 8; ++i) {
    const int e = detail::scramble(8 * detail::lane() + i), r = e / 16, col = e % 16;
    float acc = at(2, r, col);
    for (int k = 0; k < 16; ++k) acc += at(0, r, k) * at(1, k, col);
    out[i] = acc;
  }
  emu::warp_exchange(0xffffffffu, 0, site);  // nobody reads the fragments any more
  for (int i = 0; i < 8; ++i) d.x[i] = out[i];
}

}  // namespace nvcuda::wmma
