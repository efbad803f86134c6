#pragma once
// Block-wide copies that keep several global loads in flight per thread. In a plain
// `for (e = threadIdx.x; e < n; e += kThreads) dst[e] = f(src[e]);` loop each shared-memory store waits for
// its global load, and the next load is issued only after that store, so staging a tile costs one memory
// latency per iteration. On the H100 (2026-11-23) the simple-GLA tensor-core forward built that way took
// 1.4 ms where its traffic needs ~0.3 ms: ~80 such round trips per block, at most 3 blocks per SM.
// Loading kBatch elements into registers before storing any puts kBatch requests in flight at once.
namespace linattn::cuda_utils {

// For e = threadIdx.x, threadIdx.x + kThreads, ... < count: store(e, load(e)), with the loads of kBatch
// consecutive iterations issued before their stores. load(e) returns the value (any trivially copyable type);
// store(e, value) writes it. Every thread of the block calls it; no barrier inside.
template <int kThreads, int kBatch, typename Load, typename Store>
__device__ __forceinline__ void batched_copy(int count, Load&& load, Store&& store) {
  static_assert(kBatch >= 1 && kBatch <= 32, "kBatch registers of the loaded type per thread");
  using Value = decltype(load(0));
  for (int base = threadIdx.x; base < count; base += kThreads * kBatch) {
    Value r[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int e = base + b * kThreads;
      if (e < count) r[b] = load(e);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int e = base + b * kThreads;
      if (e < count) store(e, r[b]);
    }
  }
}

}  // namespace linattn::cuda_utils
