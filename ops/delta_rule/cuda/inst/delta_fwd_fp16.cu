// Explicit instantiation: chunked delta-rule forward, fp16 inputs.
#include "ops/delta_rule/cuda/delta_fwd.cuh"

namespace linattn::delta::gpu {
template void chunk_forward<DType::kFloat16>(const FwdParams&, cudaStream_t);
}  // namespace linattn::delta::gpu
