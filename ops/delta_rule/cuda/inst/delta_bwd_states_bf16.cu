// Explicit instantiation: backward pass 1 (chunk states, U, Z), bf16 inputs.
#include "ops/delta_rule/cuda/delta_fwd.cuh"

namespace linattn::delta::gpu {
template void backward_states<DType::kBFloat16>(const FwdParams&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::delta::gpu
