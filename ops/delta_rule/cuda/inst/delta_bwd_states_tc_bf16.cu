// Explicit instantiation: backward pass 1 on tensor cores (chunk states, U, Z), bf16 inputs.
#include "ops/delta_rule/cuda/delta_fwd_tc.cuh"

namespace linattn::delta::gpu {
template void backward_states_tc<DType::kBFloat16>(const FwdParams&, const TcFwdWorkspace&, const BwdWorkspace&,
                                            cudaStream_t);
}  // namespace linattn::delta::gpu
