// Explicit instantiation: tensor-core chunked delta-rule forward, fp16 inputs.
#include "ops/delta_rule/cuda/delta_fwd_tc.cuh"

namespace linattn::delta::gpu {
template void chunk_forward_tc<DType::kFloat16>(const FwdParams&, const TcFwdWorkspace&, cudaStream_t);
}  // namespace linattn::delta::gpu
