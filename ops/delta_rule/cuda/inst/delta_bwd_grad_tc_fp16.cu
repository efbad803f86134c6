// Explicit instantiation: backward pass 3 on tensor cores (per-chunk dq, dk, dv, dbeta, dg), fp16 inputs.
#include "ops/delta_rule/cuda/delta_bwd_grad_tc.cuh"

namespace linattn::delta::gpu {
template void backward_grads_tc<DType::kFloat16>(const BwdParams&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::delta::gpu
