// Explicit instantiation: LoLCATs hybrid attention forward, bf16 inputs.
#include "ops/lolcats/cuda/lolcats_fwd.cuh"

namespace linattn::lolcats::gpu {
template void forward<DType::kBFloat16>(const Params&, float*, cudaStream_t);
}  // namespace linattn::lolcats::gpu
