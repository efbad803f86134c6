// mom_grouped_linear and its weight-gradient op in ATen, registered on CompositeExplicitAutograd so every
// backend runs them (the Meta kernels in mom_meta.cpp take precedence for torch.compile). A group is a
// contiguous block of rows, so each group is one matmul into its slice of the output; the group bounds are
// read on the host (free for CPU offsets, one device->host read for device offsets: the op stays opaque to
// torch.compile either way, so the read is no graph break).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "ops/mom/mom_common.h"

namespace linattn::mom {
namespace {

at::Tensor grouped_linear(const at::Tensor& x, at::TensorList weights, const at::Tensor& offsets) {
  const char* op = "mom_grouped_linear";
  check_grouped_linear(op, x, weights, offsets);
  const std::vector<int64_t> off = host_offsets(op, offsets, x.size(0));
  const int64_t groups = static_cast<int64_t>(weights.size());
  at::Tensor y = at::empty({x.size(0), weights[0].size(0)}, x.options());
  y.narrow(0, 0, off.front()).zero_();
  y.narrow(0, off.back(), x.size(0) - off.back()).zero_();
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t rows = off[g + 1] - off[g];
    if (rows == 0) continue;
    at::Tensor out = y.narrow(0, off[g], rows);  // contiguous rows of y: mm writes into it directly
    at::mm_out(out, x.narrow(0, off[g], rows), weights[g].t());
  }
  return y;
}

std::vector<at::Tensor> grouped_linear_weight_grad(const at::Tensor& grad_y, const at::Tensor& x,
                                                   const at::Tensor& offsets, int64_t num_groups) {
  const char* op = "_mom_grouped_linear_weight_grad";
  check_grouped_linear_weight_grad(op, grad_y, x, offsets, num_groups);
  const std::vector<int64_t> off = host_offsets(op, offsets, x.size(0));
  std::vector<at::Tensor> grads;
  grads.reserve(num_groups);
  for (int64_t g = 0; g < num_groups; ++g) {
    const int64_t rows = off[g + 1] - off[g];
    if (rows == 0) {
      grads.push_back(at::zeros({grad_y.size(1), x.size(1)}, x.options()));
    } else {
      grads.push_back(at::mm(grad_y.narrow(0, off[g], rows).t(), x.narrow(0, off[g], rows)));
    }
  }
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, CompositeExplicitAutograd, m) {
  m.impl("mom_grouped_linear", &grouped_linear);
  m.impl("_mom_grouped_linear_weight_grad", &grouped_linear_weight_grad);
}

}  // namespace linattn::mom
