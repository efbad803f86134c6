// Explicit instantiation: sliding-window attention tensor-core backward, bf16 inputs.
#include "ops/swa/cuda/swa_bwd_tc.cuh"

namespace linattn::swa::gpu {
template void backward_tc<DType::kBFloat16>(const Params&, float*, cudaStream_t);
}  // namespace linattn::swa::gpu
