// Explicit instantiation: sliding-window attention backward, fp32 inputs.
#include "ops/swa/cuda/swa_bwd.cuh"

namespace linattn::swa::gpu {
template void backward<DType::kFloat32>(const Params&, float*, cudaStream_t);
}  // namespace linattn::swa::gpu
