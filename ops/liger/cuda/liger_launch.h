#pragma once
// Torch-free launchers of Liger's own CUDA kernels: the feature-map softmax of q and k and its backward, one
// launch per pair (cuda/feature_softmax.cuh). The rest of Liger's CUDA path runs the GLA and sliding-window
// kernels with their fusion hooks (gla::FwdParams::o_mix, do_scale); the glue is ops/liger/liger_cuda.cpp.
//
// Every launcher is asynchronous on `stream`, performs no device->host synchronisation and throws
// std::runtime_error (LINATTN_CHECK_LAUNCH) on a launch failure.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "csrc/cuda/dtype.h"
#include "ops/liger/liger_params.h"

namespace linattn::liger::gpu {

// Input dtype of q, k and their feature maps; the math is fp32.
using DType = cuda_utils::DType;

constexpr int64_t kMaxFeatureDim = 256;  // largest D: a warp per row, 8 values per lane in registers

template <DType D>
void feature_softmax_forward(const SoftmaxPairParams& p, cudaStream_t stream);

template <DType D>
void feature_softmax_backward(const SoftmaxPairBwdParams& p, cudaStream_t stream);

}  // namespace linattn::liger::gpu
