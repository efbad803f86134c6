// Explicit instantiation: tensor-core chunked backward (per-key vector gates), fp16 inputs: the launch sequence.
// The passes are compiled in gla_bwd_tc_vec_{states,dv,dqk}_fp16.cu (declared extern in the header).
#include "ops/gla/cuda/gla_bwd_tc_vec.cuh"

namespace linattn::gla::gpu {
template void chunk_backward_tc_vec<DType::kFloat16>(const BwdParams&, float*, cudaStream_t);
}  // namespace linattn::gla::gpu
