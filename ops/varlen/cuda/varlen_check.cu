// The device-side cu_seqlens check (see varlen_launch.h). One block is enough: N+1 offsets are few, and the
// check runs once per op call.
#include <cstdio>

#include "csrc/cuda/cuda_check.h"
#include "ops/varlen/cuda/varlen_launch.h"

namespace linattn::gpu {
namespace {

constexpr int kThreads = 256;

__global__ void check_cu_seqlens_kernel(const int64_t* __restrict__ cu, int64_t n, int64_t total_len) {
  if (threadIdx.x == 0 && (cu[0] != 0 || cu[n - 1] != total_len)) {
    printf("linattn: invalid cu_seqlens: must start at 0 and end at T=%lld, got %lld ... %lld\n",
           static_cast<long long>(total_len), static_cast<long long>(cu[0]), static_cast<long long>(cu[n - 1]));
    __trap();
  }
  for (int64_t i = 1 + threadIdx.x; i < n; i += kThreads) {
    if (cu[i] < cu[i - 1]) {
      printf("linattn: invalid cu_seqlens: must be non-decreasing, got %lld then %lld at index %lld\n",
             static_cast<long long>(cu[i - 1]), static_cast<long long>(cu[i]), static_cast<long long>(i));
      __trap();
    }
  }
}

}  // namespace

void check_cu_seqlens(const int64_t* cu_seqlens, int64_t n, int64_t total_len, cudaStream_t stream) {
  check_cu_seqlens_kernel<<<1, kThreads, 0, stream>>>(cu_seqlens, n, total_len);
  LINATTN_CHECK_LAUNCH();
}

}  // namespace linattn::gpu
