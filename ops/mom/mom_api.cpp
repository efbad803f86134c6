// C++ API of the MoM dispatch / combine / grouped linear ops (dispatcher calls, so autograd and the backends apply).
#include <ATen/core/dispatch/Dispatcher.h>

#include <linattn/mom.h>

namespace linattn {

std::tuple<at::Tensor, at::Tensor, at::Tensor> mom_dispatch(const at::Tensor& x, const at::Tensor& indices,
                                                            int64_t num_memories) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::mom_dispatch", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                             int64_t)>();
  return op.call(x, indices, num_memories);
}

at::Tensor mom_combine(const at::Tensor& y_sorted, const at::Tensor& weights, const at::Tensor& indices,
                       const at::Tensor& sort_index, int64_t num_memories) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::mom_combine", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         int64_t)>();
  return op.call(y_sorted, weights, indices, sort_index, num_memories);
}

at::Tensor mom_grouped_linear(const at::Tensor& x, at::TensorList weights, const at::Tensor& offsets) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::mom_grouped_linear", "")
                       .typed<at::Tensor(const at::Tensor&, at::TensorList, const at::Tensor&)>();
  return op.call(x, weights, offsets);
}

}  // namespace linattn
