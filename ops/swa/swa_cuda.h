#pragma once
// The CUDA backend of sliding-window attention as functions, for the CUDA glue of ops that fuse into its kernels
// (Liger sets Params::do_scale): the same limits, path choice (tensor cores or SIMT, LINATTN_SWA_FORCE_SIMT),
// workspace and stream as the registered ops.
#include <ATen/core/Tensor.h>

#include "ops/swa/swa_params.h"

namespace linattn::swa {

// K, V <= 256 and H <= 65535; errors name op.
void check_cuda_limits(const char* op, const at::Tensor& q, const at::Tensor& v);

// Launches the forward for p (p.o, p.lse set; the window is clamped to T here) on q's device and current stream.
void launch_forward(Params p, const at::Tensor& q);

// Launches the backward for p (o, lse, do, dq, dk, dv set), with its delta workspace.
void launch_backward(Params p, const at::Tensor& q);

}  // namespace linattn::swa
