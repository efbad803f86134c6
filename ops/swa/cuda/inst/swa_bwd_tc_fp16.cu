// Explicit instantiation: sliding-window attention tensor-core backward, fp16 inputs.
#include "ops/swa/cuda/swa_bwd_tc.cuh"

namespace linattn::swa::gpu {
template void backward_tc<DType::kFloat16>(const Params&, float*, cudaStream_t);
}  // namespace linattn::swa::gpu
