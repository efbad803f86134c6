// Explicit instantiation: step-by-step GLA recurrence, fp16 inputs.
#include "ops/gla/cuda/gla_recurrent.cuh"

namespace linattn::gla::gpu {
template void recurrent_forward<DType::kFloat16>(const FwdParams&, cudaStream_t);
}  // namespace linattn::gla::gpu
