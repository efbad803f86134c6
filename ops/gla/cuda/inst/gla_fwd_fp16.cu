// Explicit instantiation: chunked GLA forward, fp16 inputs.
#include "ops/gla/cuda/gla_fwd.cuh"

namespace linattn::gla::gpu {
template void chunk_forward<DType::kFloat16>(const FwdParams&, cudaStream_t);
}  // namespace linattn::gla::gpu
