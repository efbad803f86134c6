// Explicit instantiation: backward pass 2 on tensor cores (reverse sweep: dS, dR, dh0), fp16 inputs.
#include "ops/delta_rule/cuda/delta_bwd_dstate_tc.cuh"

namespace linattn::delta::gpu {
template void backward_dstates_tc<DType::kFloat16>(const BwdParams&, const TcFwdWorkspace&, const BwdWorkspace&,
                                              cudaStream_t);
}  // namespace linattn::delta::gpu
