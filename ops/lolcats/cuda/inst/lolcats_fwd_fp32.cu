// Explicit instantiation: LoLCATs hybrid attention forward, fp32 inputs.
#include "ops/lolcats/cuda/lolcats_fwd.cuh"

namespace linattn::lolcats::gpu {
template void forward<DType::kFloat32>(const Params&, float*, cudaStream_t);
}  // namespace linattn::lolcats::gpu
