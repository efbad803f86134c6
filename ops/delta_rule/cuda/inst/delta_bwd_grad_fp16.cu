// Explicit instantiation: backward pass 3 (per-chunk dq, dk, dv, dbeta, dg), fp16 inputs.
#include "ops/delta_rule/cuda/delta_bwd_grad.cuh"

namespace linattn::delta::gpu {
template void backward_grads<DType::kFloat16>(const BwdParams&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::delta::gpu
