// Explicit instantiation: tensor-core chunked backward (per-key vector gates), bf16 inputs: dv.
#include "ops/gla/cuda/gla_bwd_tc_vec.cuh"

namespace linattn::gla::gpu::tc_vec {
template void launch_bwd_dv<__nv_bfloat16>(const BwdParams&, const tc::BwdPtrs&, cudaStream_t);
}  // namespace linattn::gla::gpu::tc_vec
