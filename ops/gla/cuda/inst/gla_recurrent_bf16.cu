// Explicit instantiation: step-by-step GLA recurrence, bf16 inputs.
#include "ops/gla/cuda/gla_recurrent.cuh"

namespace linattn::gla::gpu {
template void recurrent_forward<DType::kBFloat16>(const FwdParams&, cudaStream_t);
}  // namespace linattn::gla::gpu
