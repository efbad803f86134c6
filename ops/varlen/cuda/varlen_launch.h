#pragma once
// Torch-free launcher of the device-side cu_seqlens check: the offsets are validated on the GPU so that a
// varlen call never copies them back to the host (a device->host copy would stall the CPU on every call).
#include <cuda_runtime.h>

#include <cstdint>

namespace linattn::gpu {

// Checks cu_seqlens[0] == 0, non-decreasing offsets and cu_seqlens[n-1] == total_len. A violation prints the
// first offending index and traps, which surfaces as a device-side assertion (cudaErrorAssert) at the next
// synchronisation; the kernels queued after it on the stream never run. Throws std::runtime_error when the
// launch itself fails.
void check_cu_seqlens(const int64_t* cu_seqlens, int64_t n, int64_t total_len, cudaStream_t stream);

}  // namespace linattn::gpu
