// Explicit instantiation: step-by-step delta-rule recurrence, fp16 inputs.
#include "ops/delta_rule/cuda/delta_recurrent.cuh"

namespace linattn::delta::gpu {
template void recurrent_forward<DType::kFloat16>(const FwdParams&, cudaStream_t);
}  // namespace linattn::delta::gpu
