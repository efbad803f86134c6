#pragma once
// The CUDA backend of the GLA ops as functions, for the CUDA glue of ops that fuse work into the GLA kernels
// (Liger sets FwdParams::o_mix and BwdParams::do_scale): the same dtype checks, path choice (tensor cores or
// SIMT, LINATTN_GLA_FORCE_SIMT), workspaces and stream as the registered GLA ops.
#include <ATen/core/Tensor.h>

#include "ops/gla/gla_entries.h"

namespace linattn::gla {

// q's dtype is float32, float16 or bfloat16 and K <= 256; errors name op.
void check_cuda_dtype(const char* op, const at::Tensor& q);

// Launches the forward for p on the current stream of q's device; o_mix only with Algo::Chunk.
void launch_forward(const FwdParams& p, at::ScalarType dtype, Algo algo, const at::Tensor& q);

// Launches the (chunked) backward for p, with its workspaces from the caching allocator.
void launch_backward(const BwdParams& p, at::ScalarType dtype, const at::Tensor& q);

}  // namespace linattn::gla
