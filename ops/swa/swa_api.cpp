// C++ API of sliding-window attention (a dispatcher call, so autograd and backends apply), and the typed calls of
// its forward and backward ops.
#include <ATen/core/dispatch/Dispatcher.h>

#include <linattn/swa.h>

#include "ops/swa/swa_dispatch.h"

namespace linattn {

namespace swa::dispatch {

using OptTensor = std::optional<at::Tensor>;

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           int64_t window, std::optional<double> scale, const OptTensor& cu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::_sliding_window_attention_forward", "")
                       .typed<decltype(forward)>();
  return op.call(q, k, v, window, scale, cu);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                        const at::Tensor& o, const at::Tensor& lse,
                                                        const at::Tensor& d_o, int64_t window,
                                                        std::optional<double> scale, const OptTensor& cu) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::_sliding_window_attention_backward", "")
                       .typed<decltype(backward)>();
  return op.call(q, k, v, o, lse, d_o, window, scale, cu);
}

}  // namespace swa::dispatch

at::Tensor sliding_window_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    int64_t window_size, std::optional<double> scale,
                                    const std::optional<at::Tensor>& cu_seqlens) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::sliding_window_attention", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                         std::optional<double>, const std::optional<at::Tensor>&)>();
  return op.call(q, k, v, window_size, scale, cu_seqlens);
}

}  // namespace linattn
