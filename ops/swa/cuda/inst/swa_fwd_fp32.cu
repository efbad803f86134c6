// Explicit instantiation: sliding-window attention forward, fp32 inputs.
#include "ops/swa/cuda/swa_fwd.cuh"

namespace linattn::swa::gpu {
template void forward<DType::kFloat32>(const Params&, cudaStream_t);
}  // namespace linattn::swa::gpu
