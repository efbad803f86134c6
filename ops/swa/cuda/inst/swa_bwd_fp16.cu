// Explicit instantiation: sliding-window attention backward, fp16 inputs.
#include "ops/swa/cuda/swa_bwd.cuh"

namespace linattn::swa::gpu {
template void backward<DType::kFloat16>(const Params&, float*, cudaStream_t);
}  // namespace linattn::swa::gpu
