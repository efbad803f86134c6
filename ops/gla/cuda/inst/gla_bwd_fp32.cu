// Explicit instantiation: chunked GLA backward, fp32 inputs.
#include "ops/gla/cuda/gla_bwd.cuh"

namespace linattn::gla::gpu {
template void chunk_backward<DType::kFloat32>(const BwdParams&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::gla::gpu
