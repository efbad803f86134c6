// Explicit instantiation: chunked GLA backward, bf16 inputs.
#include "ops/gla/cuda/gla_bwd.cuh"

namespace linattn::gla::gpu {
template void chunk_backward<DType::kBFloat16>(const BwdParams&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::gla::gpu
