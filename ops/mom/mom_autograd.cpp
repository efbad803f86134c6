// Autograd of mom_dispatch / mom_combine: C++ autograd Functions on the Autograd key that call the ops below
// autograd for the forward and the registered backward ops (_mom_dispatch_backward, _mom_combine_backward)
// for the gradients, so every backend with the forward kernels differentiates the same way.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace linattn::mom {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using at::Tensor;

std::tuple<Tensor, Tensor, Tensor> dispatch_op(const Tensor& x, const Tensor& indices, int64_t e) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::mom_dispatch", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, int64_t)>();
  return op.call(x, indices, e);
}

Tensor combine_op(const Tensor& ys, const Tensor& w, const Tensor& indices, const Tensor& si, int64_t e) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("linattn::mom_combine", "")
          .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t)>();
  return op.call(ys, w, indices, si, e);
}

Tensor dispatch_backward_op(const Tensor& g, const Tensor& indices, const Tensor& si, int64_t e) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::_mom_dispatch_backward", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const Tensor&, int64_t)>();
  return op.call(g, indices, si, e);
}

std::tuple<Tensor, Tensor> combine_backward_op(const Tensor& g, const Tensor& ys, const Tensor& w,
                                               const Tensor& indices, const Tensor& si, int64_t e) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::_mom_combine_backward", "")
                       .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                         const Tensor&, int64_t)>();
  return op.call(g, ys, w, indices, si, e);
}

class DispatchFunction : public torch::autograd::Function<DispatchFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& indices, int64_t e) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [x_sorted, cu_seqlens, sort_index] = dispatch_op(x, indices, e);
    ctx->save_for_backward({indices, sort_index});
    ctx->saved_data["num_memories"] = e;
    ctx->mark_non_differentiable({cu_seqlens, sort_index});
    return {x_sorted, cu_seqlens, sort_index};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    Tensor dx;
    if (grads[0].defined()) dx = dispatch_backward_op(grads[0], s[0], s[1], ctx->saved_data["num_memories"].toInt());
    return {dx, Tensor(), Tensor()};
  }
};

class CombineFunction : public torch::autograd::Function<CombineFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& y_sorted, const Tensor& weights,
                               const Tensor& indices, const Tensor& sort_index, int64_t e) {
    at::AutoDispatchBelowADInplaceOrView guard;
    Tensor y = combine_op(y_sorted, weights, indices, sort_index, e);
    ctx->save_for_backward({y_sorted, weights, indices, sort_index});
    ctx->saved_data["num_memories"] = e;
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    const auto s = ctx->get_saved_variables();
    auto [dy_sorted, dweights] =
        combine_backward_op(grads[0], s[0], s[1], s[2], s[3], ctx->saved_data["num_memories"].toInt());
    return {dy_sorted, dweights, Tensor(), Tensor(), Tensor()};
  }
};

std::tuple<Tensor, Tensor, Tensor> dispatch_autograd(const Tensor& x, const Tensor& indices, int64_t e) {
  auto out = DispatchFunction::apply(x, indices, e);
  return {out[0], out[1], out[2]};
}

Tensor combine_autograd(const Tensor& y_sorted, const Tensor& weights, const Tensor& indices,
                        const Tensor& sort_index, int64_t e) {
  return CombineFunction::apply(y_sorted, weights, indices, sort_index, e)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Autograd, m) {
  m.impl("mom_dispatch", &dispatch_autograd);
  m.impl("mom_combine", &combine_autograd);
}

}  // namespace linattn::mom
