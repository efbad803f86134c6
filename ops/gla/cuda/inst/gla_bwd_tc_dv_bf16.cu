// Explicit instantiation: tensor-core chunked backward (scalar gates), bf16 inputs: dv.
#include "ops/gla/cuda/gla_bwd_tc.cuh"

namespace linattn::gla::gpu::tc {
template void launch_bwd_dv<__nv_bfloat16>(const BwdParams&, const BwdPtrs&, cudaStream_t);
}  // namespace linattn::gla::gpu::tc
