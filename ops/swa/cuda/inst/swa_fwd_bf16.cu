// Explicit instantiation: sliding-window attention forward, bf16 inputs.
#include "ops/swa/cuda/swa_fwd.cuh"

namespace linattn::swa::gpu {
template void forward<DType::kBFloat16>(const Params&, cudaStream_t);
}  // namespace linattn::swa::gpu
