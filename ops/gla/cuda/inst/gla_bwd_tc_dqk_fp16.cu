// Explicit instantiation: tensor-core chunked backward (scalar gates), fp16 inputs: dq, dk and dg.
#include "ops/gla/cuda/gla_bwd_tc.cuh"

namespace linattn::gla::gpu::tc {
template void launch_bwd_dqk<__half>(const BwdParams&, const BwdPtrs&, cudaStream_t);
}  // namespace linattn::gla::gpu::tc
