// Explicit instantiation: sliding-window attention backward, bf16 inputs.
#include "ops/swa/cuda/swa_bwd.cuh"

namespace linattn::swa::gpu {
template void backward<DType::kBFloat16>(const Params&, float*, cudaStream_t);
}  // namespace linattn::swa::gpu
