// Explicit instantiation: LoLCATs backward, window part, bf16 inputs.
#include "ops/lolcats/cuda/lolcats_bwd_window.cuh"

namespace linattn::lolcats::gpu {
template void backward_window<DType::kBFloat16>(const Params&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::lolcats::gpu
