// Explicit instantiation: sliding-window attention tensor-core forward, fp16 inputs.
#include "ops/swa/cuda/swa_fwd_tc.cuh"

namespace linattn::swa::gpu {
template void forward_tc<DType::kFloat16>(const Params&, cudaStream_t);
}  // namespace linattn::swa::gpu
