// Explicit instantiation: LoLCATs backward, linear-attention part, fp32 inputs.
#include "ops/lolcats/cuda/lolcats_bwd_linear.cuh"

namespace linattn::lolcats::gpu {
template void backward_linear<DType::kFloat32>(const Params&, const BwdWorkspace&, cudaStream_t);
}  // namespace linattn::lolcats::gpu
