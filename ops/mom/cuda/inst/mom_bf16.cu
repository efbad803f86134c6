// Explicit instantiation: MoM dispatch, combine and combine backward, bf16 rows.
#include "ops/mom/cuda/mom_combine.cuh"
#include "ops/mom/cuda/mom_dispatch.cuh"

namespace linattn::mom::gpu {
template void dispatch<DType::kBFloat16>(Params, int64_t, cudaStream_t);
template void combine<DType::kBFloat16>(Params, int64_t, cudaStream_t);
template void combine_backward<DType::kBFloat16>(Params, int64_t, cudaStream_t);
}  // namespace linattn::mom::gpu
