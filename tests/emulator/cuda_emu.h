#pragma once
// CPU emulator of the part of CUDA the linattn kernels use, for checking kernel logic (index arithmetic,
// barriers, shared memory) on machines without a GPU. Not a simulator of the hardware: see README.md.
//
// Execution model: the blocks of a launch run one after another in a random order; every CUDA thread of a
// block is a fiber with its own stack. A fiber runs until it reaches a synchronisation point (__syncthreads,
// __syncwarp, a shuffle, a wmma collective) or exits; then the scheduler runs another. Between two block barriers the warps run
// one after another in a random order, each up to the barrier; inside a warp the lanes run in a random order
// up to their next warp sync, which is released once all the lanes it names have arrived. A barrier some
// threads skip or exit before, lanes of a warp waiting at different syncs, or a sync naming an exited lane
// is reported as an error. So a missing barrier shows up as a read of a stale or NaN value: shared memory
// (dynamic and static) starts as NaN in every block and is followed by a guard region checked after the block.
//
// The kernel sources are copied by prepare.py, which turns `k<<<grid, block, smem, stream>>>(args)` into
// `::emu::launch(k, grid, block, smem, stream)(args)` and the __shared__ declarations into the calls below.
#include <math.h>
#include <stdint.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <source_location>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// ===================================================================== host runtime API (what the launchers use)

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
typedef struct CUstream_st* cudaStream_t;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

namespace emu {
// Limits of the smallest target (sm_80): default and opt-in dynamic shared memory per block.
constexpr size_t kDefaultSmem = 48 * 1024;
constexpr size_t kMaxSmem = 166912;
constexpr int kMaxThreads = 1024;

struct Runtime {
  cudaError_t last_error = cudaSuccess;
  std::map<const void*, size_t> smem_optin;  // kernel -> cudaFuncAttributeMaxDynamicSharedMemorySize
};
inline Runtime g_runtime;
}  // namespace emu

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
  }
  return "cudaErrorUnknown";
}
inline const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
inline cudaError_t cudaPeekAtLastError() { return emu::g_runtime.last_error; }
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::g_runtime.last_error;
  emu::g_runtime.last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || size_t(value) > emu::kMaxSmem) {
    return cudaErrorInvalidValue;
  }
  emu::g_runtime.smem_optin[kernel] = size_t(value);
  return cudaSuccess;
}

// ===================================================================== half / bfloat16
// 16-bit storage (the kernels read torch tensors in place) with the round-to-nearest-even conversions of
// cuda_fp16.h / cuda_bf16.h.

struct __half {
  uint16_t __x;
};
struct __nv_bfloat16 {
  uint16_t __x;
};

inline float __half2float(__half h) {
  const uint32_t sign = uint32_t(h.__x & 0x8000u) << 16, exp = (h.__x >> 10) & 0x1fu, man = h.__x & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);  // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else {
    const float v = ldexpf(float(man), -24);  // subnormal (exact)
    memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

// Drops `shift` low bits of x, rounding to nearest, ties to even.
inline uint32_t emu_round_shift(uint64_t x, int shift) {
  if (shift >= 64) return 0;
  const uint64_t q = x >> shift, rem = x & ((uint64_t(1) << shift) - 1), half = uint64_t(1) << (shift - 1);
  return uint32_t(q + ((rem > half || (rem == half && (q & 1))) ? 1 : 0));
}

inline __half __float2half_rn(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  uint16_t h;
  if (a > 0x7f800000u) {
    h = 0x7fff;  // NaN, as the CUDA conversion returns it
  } else if (a >= 0x477ff000u) {
    h = sign | 0x7c00;  // >= 65520 rounds to infinity
  } else if (a >= 0x38800000u) {
    // Normal half: rebias the exponent, round the 13 dropped mantissa bits (a carry may bump the exponent).
    h = sign | uint16_t(emu_round_shift(a - (uint32_t(112) << 23), 13));
  } else {
    // Subnormal half: units of 2^-24; the float is m * 2^(e - 150) with the implicit bit in m.
    const uint32_t e = a >> 23;
    if (e == 0) {
      h = sign;  // float subnormals are far below half precision
    } else {
      h = sign | uint16_t(emu_round_shift((a & 0x7fffffu) | 0x800000u, int(126 - e)));
    }
  }
  return __half{h};
}

inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t bits = uint32_t(b.__x) << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
  return __nv_bfloat16{uint16_t(emu_round_shift(u, 16))};
}

// ===================================================================== device-side language

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define LINATTN_CUDA_EMULATOR 1

namespace emu {
inline uint3 g_tid, g_bid;  // of the running fiber (set by the scheduler before every switch)
inline dim3 g_bdim, g_gdim;
}  // namespace emu
#define threadIdx (::emu::g_tid)
#define blockIdx (::emu::g_bid)
#define blockDim (::emu::g_bdim)
#define gridDim (::emu::g_gdim)
constexpr int warpSize = 32;

// CUDA's min / max overloads accept mixed integer types; the common type is what they compute in.
template <class A, class B>
inline std::common_type_t<A, B> min(A a, B b) {
  return a < b ? a : b;
}
template <class A, class B>
inline std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
// Built with -ffp-contract=off, a plain product is never fused, which is all __fmul_rn promises.
inline float __fmul_rn(float a, float b) { return a * b; }
// The device's rsqrtf is within 2 ulp of 1 / sqrt(x); the exact value is one of the results it may return.
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }

// ===================================================================== fibers

#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores its pointer in *save, switches to load.
// Weak: every translation unit that includes this header emits the same definition.
extern "C" void emu_switch_stack(void** save, void* load);
asm(R"(
  .text
  .weak emu_switch_stack
  .type emu_switch_stack, @function
emu_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_stack, .-emu_switch_stack
)");
#endif

namespace emu {

enum class Wait : uint8_t { kRunnable, kBlockBarrier, kWarpSync, kDone };

struct Fiber {
#if defined(__x86_64__)
  void* sp = nullptr;
#else
  ucontext_t ctx;
#endif
  Wait wait = Wait::kRunnable;
  std::source_location site;  // the sync it waits at
  unsigned mask = 0;          // lanes named by that warp sync
  uint32_t exchanges = 0;     // warp exchanges so far: picks the exchange buffer
  void* fake_stack = nullptr;  // ASan bookkeeping
};

// Fiber stacks (mmap'd with a PROT_NONE guard page below each, so an overflow faults), reused by every block.
struct Stack {
  char* base = nullptr;  // lowest usable byte
  size_t size = 0;
};

// A shared-memory region: [guard][data: size bytes][guard] inside storage, all NaN-filled.
struct Shared {
  std::vector<char> storage;
  char* data = nullptr;
  size_t size = 0;
};

struct Scheduler {
  std::mt19937_64 rng{0x5eed};
  std::vector<Fiber> fibers;
  std::vector<Stack> stacks;
  int cur = -1, nthreads = 0;
#if defined(__x86_64__)
  void* sched_sp = nullptr;
#else
  ucontext_t sched_ctx;
#endif
  const void* sched_stack_bottom = nullptr;  // ASan: the stack the scheduler runs on
  size_t sched_stack_size = 0;
  void* sched_fake_stack = nullptr;
  void (*body)(const void*) = nullptr;  // runs the kernel for the current fiber
  const void* body_arg = nullptr;
  uint64_t exchange[2][kMaxThreads];  // values published by warp collectives, double-buffered
  Shared dyn;                         // dynamic shared memory of the block
  std::map<const void*, Shared> statics;
  std::string error;  // set by a fiber that found misuse; the scheduler throws it
  std::source_location launch_site;
  int64_t launches = 0, blocks = 0, block_barriers = 0, warp_syncs = 0;
};
inline Scheduler g_sched;

constexpr size_t kGuardBytes = 256;
constexpr unsigned char kFill = 0xff;  // NaN as float, half and bfloat16; -1 as an integer

[[noreturn]] inline void fail(const std::string& what);

[[noreturn]] inline void fiber_main();

inline size_t stack_bytes() { return EMU_ASAN ? (1u << 20) : (256u << 10); }

inline void ensure_stacks(int n) {
  Scheduler& s = g_sched;
  const size_t page = 4096, size = stack_bytes();
  while (int(s.stacks.size()) < n) {
    void* m = mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("emulator: cannot map a fiber stack");
    mprotect(m, page, PROT_NONE);
    s.stacks.push_back({static_cast<char*>(m) + page, size});
  }
}

inline void prepare_fiber(int t) {
  Scheduler& s = g_sched;
  Fiber& f = s.fibers[t];
  const Stack& st = s.stacks[t];
#if EMU_ASAN
  __asan_unpoison_memory_region(st.base, st.size);  // frames of an earlier block may still be poisoned
#endif
#if defined(__x86_64__)
  // Top of stack: [fake return address 0][fiber_main][6 callee-saved registers], so that the first switch
  // pops zeros and "returns" into fiber_main with the stack aligned as after a call.
  uintptr_t top = (reinterpret_cast<uintptr_t>(st.base) + st.size) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top - 16);
  sp[1] = nullptr;
  sp[0] = reinterpret_cast<void*>(&fiber_main);
  sp -= 6;
  for (int r = 0; r < 6; ++r) sp[r] = nullptr;
  f.sp = sp;
#else
  getcontext(&f.ctx);
  f.ctx.uc_stack.ss_sp = st.base;
  f.ctx.uc_stack.ss_size = st.size;
  f.ctx.uc_link = nullptr;
  makecontext(&f.ctx, fiber_main, 0);
#endif
}

inline void set_thread_index(int t) {
  g_tid.x = unsigned(t) % g_bdim.x;
  g_tid.y = (unsigned(t) / g_bdim.x) % g_bdim.y;
  g_tid.z = unsigned(t) / (g_bdim.x * g_bdim.y);
}

// Scheduler -> fiber t; returns when the fiber waits, exits or fails.
inline void resume(int t) {
  Scheduler& s = g_sched;
  s.cur = t;
  set_thread_index(t);
#if EMU_ASAN
  const Stack& st = s.stacks[t];
  __sanitizer_start_switch_fiber(&s.sched_fake_stack, st.base, st.size);
#endif
#if defined(__x86_64__)
  emu_switch_stack(&s.sched_sp, s.fibers[t].sp);
#else
  swapcontext(&s.sched_ctx, &s.fibers[t].ctx);
#endif
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(s.sched_fake_stack, nullptr, nullptr);
#endif
}

// Fiber -> scheduler. A finished fiber never comes back.
inline void yield_to_scheduler() {
  Scheduler& s = g_sched;
  Fiber& f = s.fibers[s.cur];
#if EMU_ASAN
  __sanitizer_start_switch_fiber(f.wait == Wait::kDone ? nullptr : &f.fake_stack, s.sched_stack_bottom,
                                 s.sched_stack_size);
#endif
#if defined(__x86_64__)
  emu_switch_stack(&f.sp, s.sched_sp);
#else
  swapcontext(&f.ctx, &s.sched_ctx);
#endif
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

[[noreturn]] inline void fiber_main() {
  Scheduler& s = g_sched;
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &s.sched_stack_bottom, &s.sched_stack_size);
#endif
  s.body(s.body_arg);
  s.fibers[s.cur].wait = Wait::kDone;
  yield_to_scheduler();
  std::abort();  // unreachable: finished fibers are never resumed
}

inline std::string where(const std::source_location& l) {
  std::string f = l.file_name();
  const size_t cut = f.find("/src/");  // prepare.py copies the sources under <build>/src/
  if (cut != std::string::npos) f = f.substr(cut + 5);
  return f + ":" + std::to_string(l.line());
}

inline bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

inline std::string describe(int t) {
  const Fiber& f = g_sched.fibers[t];
  const std::string who = "thread " + std::to_string(t) + " (warp " + std::to_string(t / 32) + ")";
  switch (f.wait) {
    case Wait::kDone: return who + " has exited";
    case Wait::kBlockBarrier: return who + " waits at __syncthreads " + where(f.site);
    case Wait::kWarpSync: return who + " waits at a warp sync " + where(f.site);
    default: return who + " is runnable";
  }
}

[[noreturn]] inline void fail(const std::string& what) {
  const Scheduler& s = g_sched;
  throw std::runtime_error("CUDA emulator: " + what + " [block (" + std::to_string(g_bid.x) + "," +
                           std::to_string(g_bid.y) + "," + std::to_string(g_bid.z) + ") of the launch at " +
                           where(s.launch_site) + "]");
}

// Called when no lane of warp [w0, w1) can run: releases its lanes waiting at a warp sync if they agree (same
// sync, same mask) and cover the mask. Returns whether it released any; fails on lanes that can never meet.
inline bool release_warp(int w0, int w1) {
  Scheduler& s = g_sched;
  int first = -1;
  for (int t = w0; t < w1 && first < 0; ++t) {
    if (s.fibers[t].wait == Wait::kWarpSync) first = t;
  }
  if (first < 0) return false;
  const Fiber& a = s.fibers[first];
  for (int t = w0; t < w1; ++t) {
    const Fiber& f = s.fibers[t];
    const bool named = (a.mask >> (t - w0)) & 1u;
    if (f.wait == Wait::kWarpSync) {
      if (!same_site(f.site, a.site) || f.mask != a.mask || !named) {
        fail("lanes of one warp wait at different warp syncs: " + describe(first) + ", " + describe(t));
      }
    } else if (named) {
      fail("warp sync at " + where(a.site) + " names a lane that will never reach it: " + describe(t));
    }
  }
  for (int t = w0; t < w1; ++t) {
    if (s.fibers[t].wait == Wait::kWarpSync) s.fibers[t].wait = Wait::kRunnable;
  }
  ++s.warp_syncs;
  return true;
}

// Runs warp [w0, w1) until all its lanes wait at __syncthreads or have exited: each runnable lane up to its
// next sync, in a random order, then the warp's sync, and so on. One warp at a time lets the warps of a block
// drift arbitrarily far apart between block barriers, as they may on a GPU, so a value that one warp reads
// before another has written it (or after it has overwritten it) shows up.
inline void run_warp(int w0, int w1, std::vector<int>& order) {
  Scheduler& s = g_sched;
  for (;;) {
    order.clear();
    for (int t = w0; t < w1; ++t) {
      if (s.fibers[t].wait == Wait::kRunnable) order.push_back(t);
    }
    if (order.empty()) {
      if (release_warp(w0, w1)) continue;
      return;
    }
    std::shuffle(order.begin(), order.end(), s.rng);
    for (int t : order) {
      resume(t);
      if (!s.error.empty()) fail(s.error);
    }
  }
}

// Called when every thread waits at __syncthreads or has exited: releases the barrier. Returns false when all
// have exited.
inline bool release_barrier() {
  Scheduler& s = g_sched;
  int done = -1, waiting = -1;
  for (int t = 0; t < s.nthreads; ++t) {
    if (s.fibers[t].wait == Wait::kDone) done = t;
    if (s.fibers[t].wait == Wait::kBlockBarrier) waiting = t;
  }
  if (waiting < 0) return false;
  if (done >= 0) {
    fail("__syncthreads not reached by every thread of the block: " + describe(waiting) + ", " + describe(done));
  }
  for (int t = 0; t < s.nthreads; ++t) {
    if (!same_site(s.fibers[t].site, s.fibers[waiting].site)) {
      fail("threads wait at different __syncthreads: " + describe(waiting) + ", " + describe(t));
    }
    s.fibers[t].wait = Wait::kRunnable;
  }
  ++s.block_barriers;
  return true;
}

// data starts `misalign` bytes past a 128-byte boundary: 16 for dynamic shared memory, the only alignment
// CUDA promises for it, so a kernel that assumes more (wmma needs 32 bytes) must realign and shows it.
inline void fill_shared(Shared& m, size_t size, size_t misalign) {
#if EMU_ASAN
  __asan_unpoison_memory_region(m.storage.data(), m.storage.size());  // a failed block skips check_guard
#endif
  m.size = size;
  m.storage.assign(size + 2 * kGuardBytes + 256, char(kFill));
  const uintptr_t start = reinterpret_cast<uintptr_t>(m.storage.data()) + kGuardBytes;
  m.data = reinterpret_cast<char*>((start + 127) / 128 * 128 + misalign);
#if EMU_ASAN
  __asan_poison_memory_region(m.storage.data(), size_t(m.data - m.storage.data()));
  __asan_poison_memory_region(m.data + size, kGuardBytes);
#endif
}

inline void check_guard(const Shared& m, const char* what) {
  const char* end = m.data + m.size + kGuardBytes;
#if EMU_ASAN
  __asan_unpoison_memory_region(m.storage.data(), size_t(end - m.storage.data()));
#endif
  for (const char* c = m.storage.data(); c < end; ++c) {
    if (c == m.data) c += m.size;
    if (c < end && static_cast<unsigned char>(*c) != kFill) {
      fail(std::string("write outside ") + what + " (" + std::to_string(m.size) + " bytes) at offset " +
           std::to_string(c - m.data));
    }
  }
}

inline void run_block(int nthreads) {
  Scheduler& s = g_sched;
  s.nthreads = nthreads;
  ensure_stacks(nthreads);
  s.fibers.assign(nthreads, Fiber{});
  for (int t = 0; t < nthreads; ++t) prepare_fiber(t);
  fill_shared(s.dyn, s.dyn.size, 16);
  s.statics.clear();
  std::vector<int> warps, order;
  for (int w0 = 0; w0 < nthreads; w0 += 32) warps.push_back(w0);
  order.reserve(32);
  do {
    std::shuffle(warps.begin(), warps.end(), s.rng);
    for (int w0 : warps) run_warp(w0, std::min(nthreads, w0 + 32), order);
  } while (release_barrier());
  check_guard(s.dyn, "dynamic shared memory");
  size_t static_bytes = 0;
  for (const auto& [key, m] : s.statics) {
    check_guard(m, "a __shared__ array");
    static_bytes += m.size;
  }
  if (s.dyn.size + static_bytes > kMaxSmem) fail("static + dynamic shared memory above the sm_80 limit");
  ++s.blocks;
}

// Fiber side of a sync: record where it waits and hand over to the scheduler.
inline void wait_at(Wait kind, const std::source_location& site, unsigned mask) {
  Fiber& f = g_sched.fibers[g_sched.cur];
  f.wait = kind;
  f.site = site;
  f.mask = mask;
  yield_to_scheduler();
}

// ===================================================================== shared memory

template <class T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(g_sched.dyn.data);
}

// The block's instance of a `__shared__ T name;` declaration (key: a static unique to the declaration),
// created NaN-filled by the first thread that reaches it.
template <class T>
T& block_shared(const void* key) {
  Shared& m = g_sched.statics[key];
  if (m.data == nullptr) fill_shared(m, sizeof(T), 0);
  return *reinterpret_cast<T*>(m.data);
}

// ===================================================================== launch

inline bool valid_config(const dim3& g, const dim3& b, size_t smem, const void* kernel) {
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535 || threads == 0 ||
      threads > uint64_t(kMaxThreads) || b.z > 64) {
    g_runtime.last_error = cudaErrorInvalidConfiguration;
    return false;
  }
  const auto it = g_runtime.smem_optin.find(kernel);
  const size_t limit = it != g_runtime.smem_optin.end() ? std::max(it->second, kDefaultSmem) : kDefaultSmem;
  if (smem > limit) {
    g_runtime.last_error = cudaErrorInvalidValue;
    return false;
  }
  return true;
}

template <class... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  size_t smem;
  std::source_location site;

  template <class... A>
  void operator()(A&&... args) const {
    Scheduler& s = g_sched;
    ++s.launches;
    if (!valid_config(grid, block, smem, reinterpret_cast<const void*>(kernel))) return;
    struct Call {
      void (*kernel)(P...);
      std::tuple<P...> params;
    } call{kernel, std::tuple<P...>(std::forward<A>(args)...)};  // converted as a real launch does
    s.body = [](const void* c) {
      const Call& k = *static_cast<const Call*>(c);
      std::apply(k.kernel, k.params);  // every thread gets its own copy of the parameters
    };
    s.body_arg = &call;
    s.launch_site = site;
    s.error.clear();
    s.dyn.size = smem;
    g_gdim = grid;
    g_bdim = block;
    std::vector<uint3> ids;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) ids.push_back({x, y, z});
    std::shuffle(ids.begin(), ids.end(), s.rng);  // blocks may run in any order on a GPU
    for (const uint3& id : ids) {
      g_bid = id;
      run_block(int(block.x * block.y * block.z));
    }
  }
};

template <class... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr,
                    std::source_location site = std::source_location::current()) {
  return {kernel, grid, block, smem, site};
}

// Scheduler seed (the order of blocks and of fibers between syncs).
inline void seed(uint64_t value) { g_sched.rng.seed(value); }

}  // namespace emu

// ===================================================================== intrinsics

inline void __syncthreads(std::source_location site = std::source_location::current()) {
  emu::wait_at(emu::Wait::kBlockBarrier, site, 0);
}

inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location site = std::source_location::current()) {
  emu::wait_at(emu::Wait::kWarpSync, site, mask);
}

namespace emu {
// Every lane named in mask publishes a 64-bit value and meets the others; returns the warp's 32 published
// values. Two buffers alternate, so a lane may publish for its next exchange while a slower lane still reads
// this one (a lane cannot get two exchanges ahead: the next one waits for everybody).
inline const uint64_t* warp_exchange(unsigned mask, uint64_t value, const std::source_location& site) {
  Scheduler& s = g_sched;
  const int t = s.cur, lane = t % 32;
  if (!((mask >> lane) & 1u)) {
    s.error = "a warp collective at " + where(site) + " is called by lane " + std::to_string(lane) +
              " outside its mask";
    yield_to_scheduler();
  }
  const int buf = int(s.fibers[t].exchanges++ & 1u);
  s.exchange[buf][t] = value;
  wait_at(Wait::kWarpSync, site, mask);
  return &s.exchange[buf][t - lane];
}

// Lane src's v (the caller's own v when src is not a lane of the mask).
template <class T>
T shuffle(unsigned mask, T v, int src, const std::source_location& site) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffle of a 4- or 8-byte value");
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof(T));
  const uint64_t* all = warp_exchange(mask, bits, site);
  const int warp0 = g_sched.cur - g_sched.cur % 32;
  if (src < 0 || src > 31 || warp0 + src >= g_sched.nthreads || !((mask >> src) & 1u)) return v;
  T r;
  memcpy(&r, &all[src], sizeof(T));
  return r;
}
// Source lane within a `width`-lane segment; a lane outside the caller's segment gives its own value.
inline int segment_lane(int lane, int target, int width) {
  const int base = lane & ~(width - 1);
  return (target >= base && target < base + width) ? target : lane;
}
}  // namespace emu

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32,
                  std::source_location site = std::source_location::current()) {
  const int lane = emu::g_sched.cur % 32;
  return emu::shuffle(mask, v, emu::segment_lane(lane, lane ^ lane_mask, width), site);
}
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32,
              std::source_location site = std::source_location::current()) {
  const int lane = emu::g_sched.cur % 32;
  return emu::shuffle(mask, v, (lane & ~(width - 1)) + (src % width), site);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                   std::source_location site = std::source_location::current()) {
  const int lane = emu::g_sched.cur % 32;
  return emu::shuffle(mask, v, emu::segment_lane(lane, lane + int(delta), width), site);
}

// A warp vote: bit i set when lane i of the mask passes a non-zero predicate (lanes outside the mask read 0).
inline unsigned __ballot_sync(unsigned mask, int predicate,
                              std::source_location site = std::source_location::current()) {
  const uint64_t* all = emu::warp_exchange(mask, predicate != 0, site);
  const int warp0 = emu::g_sched.cur - emu::g_sched.cur % 32;
  unsigned bits = 0;
  for (int lane = 0; lane < 32 && warp0 + lane < emu::g_sched.nthreads; ++lane)
    if (((mask >> lane) & 1u) && all[lane] != 0) bits |= 1u << lane;
  return bits;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
