#pragma once
// Torch-free description of Liger's feature-map softmax on CUDA: softmax over the last dim of q and of k
// (contiguous [rows, dim], rows = B*T*H) and its backward, each pair in one launch.
#include <cstdint>

namespace linattn::liger {

// y[t] = softmax(x[t]) row by row, t = 0 (q), 1 (k); input dtype in and out, fp32 math.
struct SoftmaxPairParams {
  const void* x[2] = {nullptr, nullptr};
  void* y[2] = {nullptr, nullptr};
  int64_t rows = 0;  // rows of each tensor
  int64_t dim = 0;   // D, 1 .. kMaxFeatureDim
};

// dx[t] = y[t] * (dy[t] - <dy[t], y[t]>) row by row: the softmax backward from its output y.
struct SoftmaxPairBwdParams {
  const void* y[2] = {nullptr, nullptr};
  const void* dy[2] = {nullptr, nullptr};
  void* dx[2] = {nullptr, nullptr};
  int64_t rows = 0;
  int64_t dim = 0;
};

}  // namespace linattn::liger
