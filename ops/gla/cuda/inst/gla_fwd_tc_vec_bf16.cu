// Explicit instantiation: tensor-core chunked forward (per-key vector gates), bf16 inputs.
#include "ops/gla/cuda/gla_fwd_tc_vec.cuh"

namespace linattn::gla::gpu {
template void chunk_forward_tc_vec<DType::kBFloat16>(const FwdParams&, float*, cudaStream_t);
}  // namespace linattn::gla::gpu
