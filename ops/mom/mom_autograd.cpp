// Autograd of mom_dispatch / mom_combine / mom_grouped_linear: C++ autograd Functions on the Autograd key that
// call the ops below autograd for the forward and the registered backward ops (_mom_dispatch_backward,
// _mom_combine_backward, _mom_grouped_linear_weight_grad) for the gradients, so every backend with the forward
// kernels differentiates the same way.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
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

Tensor grouped_linear_op(const Tensor& x, at::TensorList weights, const Tensor& offsets) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::mom_grouped_linear", "")
                       .typed<Tensor(const Tensor&, at::TensorList, const Tensor&)>();
  return op.call(x, weights, offsets);
}

std::vector<Tensor> grouped_linear_weight_grad_op(const Tensor& grad_y, const Tensor& x, const Tensor& offsets,
                                                  int64_t groups) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::_mom_grouped_linear_weight_grad", "")
                       .typed<std::vector<Tensor>(const Tensor&, const Tensor&, const Tensor&, int64_t)>();
  return op.call(grad_y, x, offsets, groups);
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

// Inputs flatten to (x, weights[0..G), offsets): backward returns one gradient per flattened input.
class GroupedLinearFunction : public torch::autograd::Function<GroupedLinearFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, at::TensorList weights,
                               const Tensor& offsets) {
    at::AutoDispatchBelowADInplaceOrView guard;
    Tensor y = grouped_linear_op(x, weights, offsets);
    variable_list saved{x, offsets};
    saved.insert(saved.end(), weights.begin(), weights.end());
    ctx->save_for_backward(saved);
    return {y};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor &x = s[0], &offsets = s[1];
    const int64_t groups = static_cast<int64_t>(s.size()) - 2;
    variable_list out(groups + 2);
    if (!grads[0].defined()) return out;
    if (ctx->needs_input_grad(0)) {
      std::vector<Tensor> transposed;
      for (int64_t g = 0; g < groups; ++g) transposed.push_back(s[2 + g].t());
      out[0] = grouped_linear_op(grads[0], transposed, offsets);
    }
    bool weight_grads = false;
    for (int64_t g = 0; g < groups; ++g) weight_grads = weight_grads || ctx->needs_input_grad(1 + g);
    if (weight_grads) {
      std::vector<Tensor> dw = grouped_linear_weight_grad_op(grads[0], x, offsets, groups);
      for (int64_t g = 0; g < groups; ++g) out[1 + g] = dw[g];
    }
    return out;
  }
};

// dW_g = gy_g^T x_g is bilinear, so its own gradients are grouped linears again (double backward of the layer's
// projections): d gy = x dWbar_g^T and d x = gy dWbar_g per group.
class GroupedLinearWeightGradFunction : public torch::autograd::Function<GroupedLinearWeightGradFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& grad_y, const Tensor& x, const Tensor& offsets,
                               int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({grad_y, x, offsets});
    return grouped_linear_weight_grad_op(grad_y, x, offsets, groups);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const Tensor &grad_y = s[0], &x = s[1], &offsets = s[2];
    std::vector<Tensor> dw, dw_t;
    for (const Tensor& g : grads) {
      dw.push_back(g.defined() ? g : at::zeros({grad_y.size(1), x.size(1)}, x.options()));
      dw_t.push_back(dw.back().t());
    }
    Tensor d_grad_y, d_x;
    if (ctx->needs_input_grad(0)) d_grad_y = grouped_linear_op(x, dw, offsets);
    if (ctx->needs_input_grad(1)) d_x = grouped_linear_op(grad_y, dw_t, offsets);
    return {d_grad_y, d_x, Tensor(), Tensor()};
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

Tensor grouped_linear_autograd(const Tensor& x, at::TensorList weights, const Tensor& offsets) {
  return GroupedLinearFunction::apply(x, weights, offsets)[0];
}

std::vector<Tensor> grouped_linear_weight_grad_autograd(const Tensor& grad_y, const Tensor& x, const Tensor& offsets,
                                                       int64_t groups) {
  return GroupedLinearWeightGradFunction::apply(grad_y, x, offsets, groups);
}

// Under autocast the per-memory projections behave as the nn.Linear layers they replace: x and the weights are
// cast to the autocast dtype of their device (the weights through autocast's cache).
template <c10::DeviceType kDevice>
Tensor grouped_linear_autocast(const Tensor& x, at::TensorList weights, const Tensor& offsets) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(kDevice));
  const at::ScalarType dtype = at::autocast::get_lower_precision_fp_from_device_type(kDevice);
  return grouped_linear_op(at::autocast::cached_cast(dtype, x, kDevice),
                           at::autocast::cached_cast(dtype, weights, kDevice), offsets);
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, AutocastCPU, m) {
  m.impl("mom_grouped_linear", &grouped_linear_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(linattn, AutocastCUDA, m) {
  m.impl("mom_grouped_linear", &grouped_linear_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(linattn, Autograd, m) {
  m.impl("mom_dispatch", &dispatch_autograd);
  m.impl("mom_combine", &combine_autograd);
  m.impl("mom_grouped_linear", &grouped_linear_autograd);
  m.impl("_mom_grouped_linear_weight_grad", &grouped_linear_weight_grad_autograd);
}

}  // namespace linattn::mom
