// Explicit instantiation: backward pass 1 (chunk states, U, Z), fp32 inputs.
#include "ops/delta_rule/cuda/delta_fwd.cuh"

namespace linattn::delta::gpu {
template void backward_states<DType::kFloat32>(const FwdParams&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::delta::gpu
