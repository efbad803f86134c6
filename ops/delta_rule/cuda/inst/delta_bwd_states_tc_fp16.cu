// Explicit instantiation: backward pass 1 on tensor cores (chunk states, U, Z), fp16 inputs.
#include "ops/delta_rule/cuda/delta_fwd_tc.cuh"

namespace linattn::delta::gpu {
template void backward_states_tc<DType::kFloat16>(const FwdParams&, const TcFwdWorkspace&, const BwdWorkspace&,
                                            cudaStream_t);
}  // namespace linattn::delta::gpu
