// Explicit instantiation: LoLCATs backward, linear-attention part, bf16 inputs.
#include "ops/lolcats/cuda/lolcats_bwd_linear.cuh"

namespace linattn::lolcats::gpu {
template void backward_linear<DType::kBFloat16>(const Params&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::lolcats::gpu
