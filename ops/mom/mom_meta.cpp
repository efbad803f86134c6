// Meta kernels of the MoM dispatch / combine ops (symbolic shapes, for torch.compile): every output shape
// follows from B, T, k, E and the rows' trailing dims (grouped linear: from x and the weights).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/mom/mom_common.h"

namespace linattn::mom {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> dispatch_meta(const at::Tensor& x, const at::Tensor& indices,
                                                             int64_t num_memories) {
  check_dispatch("mom_dispatch", x, indices, num_memories);
  return empty_dispatch_outputs(x, indices, num_memories);
}

at::Tensor combine_meta(const at::Tensor& y_sorted, const at::Tensor& weights, const at::Tensor& indices,
                        const at::Tensor& sort_index, int64_t num_memories) {
  check_rows("mom_combine", "y_sorted", y_sorted, indices, sort_index, num_memories);
  check_weights("mom_combine", weights, indices);
  return at::empty_symint(token_shape(indices, y_sorted), y_sorted.options());
}

at::Tensor dispatch_backward_meta(const at::Tensor& grad_x_sorted, const at::Tensor& indices,
                                  const at::Tensor& sort_index, int64_t num_memories) {
  check_rows("_mom_dispatch_backward", "grad_x_sorted", grad_x_sorted, indices, sort_index, num_memories);
  return at::empty_symint(token_shape(indices, grad_x_sorted), grad_x_sorted.options());
}

std::tuple<at::Tensor, at::Tensor> combine_backward_meta(const at::Tensor& grad_y, const at::Tensor& y_sorted,
                                                         const at::Tensor& weights, const at::Tensor& indices,
                                                         const at::Tensor& sort_index, int64_t num_memories) {
  const char* op = "_mom_combine_backward";
  check_rows(op, "y_sorted", y_sorted, indices, sort_index, num_memories);
  check_weights(op, weights, indices);
  check_grad_y(op, grad_y, y_sorted, indices);
  return {at::empty_symint(y_sorted.sym_sizes(), y_sorted.options()),
          at::empty_symint(weights.sym_sizes(), weights.options())};
}

at::Tensor grouped_linear_meta(const at::Tensor& x, at::TensorList weights, const at::Tensor& offsets) {
  check_grouped_linear("mom_grouped_linear", x, weights, offsets);
  return at::empty_symint({x.sym_size(0), weights[0].sym_size(0)}, x.options());
}

std::vector<at::Tensor> grouped_linear_weight_grad_meta(const at::Tensor& grad_y, const at::Tensor& x,
                                                        const at::Tensor& offsets, int64_t num_groups) {
  check_grouped_linear_weight_grad("_mom_grouped_linear_weight_grad", grad_y, x, offsets, num_groups);
  std::vector<at::Tensor> grads;
  for (int64_t g = 0; g < num_groups; ++g) {
    grads.push_back(at::empty_symint({grad_y.sym_size(1), x.sym_size(1)}, x.options()));
  }
  return grads;
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Meta, m) {
  m.impl("mom_dispatch", &dispatch_meta);
  m.impl("mom_combine", &combine_meta);
  m.impl("_mom_dispatch_backward", &dispatch_backward_meta);
  m.impl("_mom_combine_backward", &combine_backward_meta);
  m.impl("mom_grouped_linear", &grouped_linear_meta);
  m.impl("_mom_grouped_linear_weight_grad", &grouped_linear_weight_grad_meta);
}

}  // namespace linattn::mom
