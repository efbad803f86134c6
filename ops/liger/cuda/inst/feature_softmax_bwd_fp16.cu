// Explicit instantiation: backward of Liger's feature-map softmax of q and k, fp16 inputs.
#include "ops/liger/cuda/feature_softmax.cuh"

namespace linattn::liger::gpu {
template void feature_softmax_backward<DType::kFloat16>(const SoftmaxPairBwdParams&, cudaStream_t);
}  // namespace linattn::liger::gpu
