// Explicit instantiation: Liger feature-map softmax of q and k, bf16 inputs.
#include "ops/liger/cuda/feature_softmax.cuh"

namespace linattn::liger::gpu {
template void feature_softmax_forward<DType::kBFloat16>(const SoftmaxPairParams&, cudaStream_t);
}  // namespace linattn::liger::gpu
