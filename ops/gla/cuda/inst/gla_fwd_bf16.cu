// Explicit instantiation: chunked GLA forward, bf16 inputs.
#include "ops/gla/cuda/gla_fwd.cuh"

namespace linattn::gla::gpu {
template void chunk_forward<DType::kBFloat16>(const FwdParams&, cudaStream_t);
}  // namespace linattn::gla::gpu
