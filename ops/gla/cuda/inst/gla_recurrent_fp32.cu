// Explicit instantiation: step-by-step GLA recurrence, fp32 inputs.
#include "ops/gla/cuda/gla_recurrent.cuh"

namespace linattn::gla::gpu {
template void recurrent_forward<DType::kFloat32>(const FwdParams&, cudaStream_t);
}  // namespace linattn::gla::gpu
