// hedgehog_feature_map: phi(x) = [softmax_F(x W_h), softmax_F(-x W_h)] per head (the LoLCATs variant of the
// Hedgehog map). A composite of ATen ops (CompositeImplicitAutograd): autograd, every backend and
// torch.compile come from the ops it is made of; a fused kernel can replace it without changing the schema.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <linattn/lolcats.h>

#include "core/checks.h"

namespace linattn {

at::Tensor hedgehog_feature_map(const at::Tensor& x, const at::Tensor& weight) {
  const char* op = "hedgehog_feature_map";
  check_rank(x, op, "x", 4, "[B, T, H, D]");
  check_floating(x, op, "x");
  check_rank(weight, op, "weight", 3, "[H, D, F]");
  check_floating(weight, op, "weight");
  check_same_device(weight, x, op, "weight");
  TORCH_CHECK(weight.sym_size(0) == x.sym_size(2) && weight.sym_size(1) == x.sym_size(3), op,
              ": weight must have shape [H, D, F] with H, D of x ", x.sym_sizes(), ", got ", weight.sym_sizes());
  const at::Tensor proj = at::einsum("bthd,hdf->bthf", {x, weight.to(x.scalar_type())});
  return at::cat({at::softmax(proj, -1), at::softmax(-proj, -1)}, -1);
}

at::Tensor attention_transfer_loss(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& window_factor,
                                   int64_t window_size, std::optional<double> scale) {
  // The teacher is causal softmax attention on the same q, k, v and scale, outside the graph (no_grad):
  // only the student's feature maps and window factors (and whatever produced q, k, v) get gradients.
  const at::Tensor teacher =
      at::scaled_dot_product_attention(q.detach().transpose(1, 2), k.detach().transpose(1, 2),
                                       v.detach().transpose(1, 2), {}, 0.0, /*is_causal=*/true, scale)
          .transpose(1, 2);
  const at::Tensor student = lolcats_attention(q, k, v, fq, fk, window_factor, window_size, scale);
  return at::mse_loss(student, teacher.to(student.scalar_type()));
}

namespace {
at::Tensor hedgehog_entry(const at::Tensor& x, const at::Tensor& weight) { return hedgehog_feature_map(x, weight); }
}  // namespace

TORCH_LIBRARY_IMPL(linattn, CompositeImplicitAutograd, m) {
  m.impl("hedgehog_feature_map", &hedgehog_entry);
  m.impl("attention_transfer_loss", &attention_transfer_loss);
}

}  // namespace linattn
