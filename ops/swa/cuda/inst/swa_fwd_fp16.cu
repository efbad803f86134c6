// Explicit instantiation: sliding-window attention forward, fp16 inputs.
#include "ops/swa/cuda/swa_fwd.cuh"

namespace linattn::swa::gpu {
template void forward<DType::kFloat16>(const Params&, cudaStream_t);
}  // namespace linattn::swa::gpu
