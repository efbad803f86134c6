// C++ API of sliding-window attention (a dispatcher call, so autograd and backends apply).
#include <ATen/core/dispatch/Dispatcher.h>

#include <linattn/swa.h>

namespace linattn {

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
