// Explicit instantiation: MoM dispatch, combine and combine backward, fp16 rows.
#include "ops/mom/cuda/mom_combine.cuh"
#include "ops/mom/cuda/mom_dispatch.cuh"

namespace linattn::mom::gpu {
template void dispatch<DType::kFloat16>(Params, int64_t, cudaStream_t);
template void combine<DType::kFloat16>(Params, int64_t, cudaStream_t);
template void combine_backward<DType::kFloat16>(Params, int64_t, cudaStream_t);
}  // namespace linattn::mom::gpu
