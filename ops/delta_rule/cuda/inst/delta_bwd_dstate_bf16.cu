// Explicit instantiation: backward pass 2 (reverse sweep: dS, dR, dh0), bf16 inputs.
#include "ops/delta_rule/cuda/delta_bwd_dstate.cuh"

namespace linattn::delta::gpu {
template void backward_dstates<DType::kBFloat16>(const BwdParams&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::delta::gpu
