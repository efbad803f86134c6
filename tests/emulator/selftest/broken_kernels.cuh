#pragma once
// Kernels with the bugs the emulator exists to catch, written in plain CUDA (prepare.py rewrites them like
// the real kernels). tests/python/test_cuda_emulated.py checks that each one is caught: an error, or
// results that differ from what a correct kernel would give.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

namespace linattn_emu::broken {

// out[t] = t + 1 (mod n), exchanged through shared memory; kBarrier = false omits the barrier.
template <bool kBarrier>
__global__ void exchange_kernel(float* out) {
  extern __shared__ float buf[];
  const unsigned t = threadIdx.x, n = blockDim.x;
  buf[t] = static_cast<float>(t);
  if (kBarrier) __syncthreads();
  out[blockIdx.x * n + t] = buf[(t + 1) % n];
}

// The same through a static __shared__ array, without the barrier.
__global__ void static_race_kernel(float* out) {
  __shared__ float buf[64];
  const unsigned t = threadIdx.x;
  buf[t] = static_cast<float>(t);
  out[blockIdx.x * 64 + t] = buf[63 - t];
}

// A barrier inside a branch that only the first warp takes.
__global__ void divergent_barrier_kernel(float* out) {
  if (threadIdx.x < 32) __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.f;
}

// Both branches have a barrier, but they are different barriers.
__global__ void split_barrier_kernel(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.f;
}

// A full-warp shuffle after one lane has returned.
__global__ void shuffle_exited_lane_kernel(float* out) {
  if (threadIdx.x % 32 == 5) return;
  const float x = __shfl_xor_sync(0xffffffffu, static_cast<float>(threadIdx.x), 1);
  out[blockIdx.x * blockDim.x + threadIdx.x] = x;
}

// Writes one float past the dynamic shared memory it was given.
__global__ void smem_overflow_kernel(float* out) {
  extern __shared__ float buf[];
  buf[threadIdx.x + 1] = 1.f;
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.f;
}

// A wmma load from shared memory that is only 16-byte aligned (wmma needs 32).
__global__ void wmma_misaligned_kernel(float* out) {
  __shared__ __half tile[16 * 16 + 16];
  for (int e = threadIdx.x; e < 16 * 16 + 16; e += blockDim.x) tile[e] = __float2half_rn(1.f);
  __syncthreads();
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> a;
  const uintptr_t base = reinterpret_cast<uintptr_t>(tile);
  nvcuda::wmma::load_matrix_sync(a, reinterpret_cast<const __half*>(base % 32 == 0 ? base + 16 : base), 16);
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1.f;
}

// Blocks per self-test launch: the racy kernels differ between two runs only where a block's two warps run in
// the other order, so each block is a coin flip of the scheduler seeds; with 16 the pair of seeds a case uses
// misses the race with probability 2^-16 instead of 1/4 (2 blocks missed it under LINATTN_EMU_SEED=1, 3, 5).
constexpr int kSelftestBlocks = 16;

// Runs one of the kernels above on kSelftestBlocks blocks of 64 threads with 64 floats of dynamic shared memory.
inline void run(int which, float* out) {
  const dim3 grid(kSelftestBlocks), block(64);
  const size_t smem = 64 * sizeof(float);
  switch (which) {
    case 0: exchange_kernel<true><<<grid, block, smem>>>(out); break;
    case 1: exchange_kernel<false><<<grid, block, smem>>>(out); break;
    case 2: static_race_kernel<<<grid, block>>>(out); break;
    case 3: divergent_barrier_kernel<<<grid, block>>>(out); break;
    case 4: split_barrier_kernel<<<grid, block>>>(out); break;
    case 5: shuffle_exited_lane_kernel<<<grid, block>>>(out); break;
    case 6: smem_overflow_kernel<<<grid, block, smem>>>(out); break;
    case 7: wmma_misaligned_kernel<<<grid, block>>>(out); break;
  }
}

}  // namespace linattn_emu::broken
