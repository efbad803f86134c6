// Explicit instantiation: chunked GLA forward, fp32 inputs.
#include "ops/gla/cuda/gla_fwd.cuh"

namespace linattn::gla::gpu {
template void chunk_forward<DType::kFloat32>(const FwdParams&, cudaStream_t);
}  // namespace linattn::gla::gpu
