// Explicit instantiation: tensor-core chunked forward (scalar gates), bf16 inputs.
#include "ops/gla/cuda/gla_fwd_tc.cuh"

namespace linattn::gla::gpu {
template void chunk_forward_tc<DType::kBFloat16>(const FwdParams&, float*, cudaStream_t);
}  // namespace linattn::gla::gpu
