// lolcats_attention: the public op. Below autograd it is the forward op without its saved statistics
// (CompositeExplicitAutograd); on the Autograd key a C++ torch::autograd::Function saves the window max and
// the normaliser of every row and calls the backward op.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <linattn/lolcats.h>

namespace linattn::lolcats {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Six = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Triple forward_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq,
                  const at::Tensor& fk, const at::Tensor& wf, int64_t w, std::optional<double> scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::_lolcats_attention_forward", "")
                       .typed<Triple(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, int64_t, std::optional<double>)>();
  return op.call(q, k, v, fq, fk, wf, w, scale);
}

Six backward_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq,
                const at::Tensor& fk, const at::Tensor& wf, const at::Tensor& o, const at::Tensor& m,
                const at::Tensor& z, const at::Tensor& d_o, int64_t w, std::optional<double> scale) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("linattn::_lolcats_attention_backward", "")
          .typed<Six(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                     int64_t, std::optional<double>)>();
  return op.call(q, k, v, fq, fk, wf, o, m, z, d_o, w, scale);
}

class LolcatsFunction : public torch::autograd::Function<LolcatsFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& fq, const at::Tensor& fk, const at::Tensor& wf, int64_t w,
                               std::optional<double> scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [o, m, z] = forward_op(q, k, v, fq, fk, wf, w, scale);
    ctx->save_for_backward({q, k, v, fq, fk, wf, o, m, z});
    ctx->saved_data["window"] = w;
    ctx->saved_data["scale"] = scale;
    return {o};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [dq, dk, dv, dfq, dfk, dwf] = backward_op(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], grads[0],
                                                   ctx->saved_data["window"].toInt(),
                                                   ctx->saved_data["scale"].toOptional<double>());
    return {dq, dk, dv, dfq, dfk, dwf, at::Tensor(), at::Tensor()};
  }
};

at::Tensor lolcats_autograd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq,
                            const at::Tensor& fk, const at::Tensor& wf, int64_t w, std::optional<double> scale) {
  return LolcatsFunction::apply(q, k, v, fq, fk, wf, w, scale)[0];
}

at::Tensor lolcats_composite(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq,
                             const at::Tensor& fk, const at::Tensor& wf, int64_t w, std::optional<double> scale) {
  return std::get<0>(forward_op(q, k, v, fq, fk, wf, w, scale));
}

}  // namespace

TORCH_LIBRARY_IMPL(linattn, Autograd, m) { m.impl("lolcats_attention", &lolcats_autograd); }
TORCH_LIBRARY_IMPL(linattn, CompositeExplicitAutograd, m) { m.impl("lolcats_attention", &lolcats_composite); }

}  // namespace linattn::lolcats

namespace linattn {

at::Tensor lolcats_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& fq,
                             const at::Tensor& fk, const at::Tensor& window_factor, int64_t window_size,
                             std::optional<double> scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("linattn::lolcats_attention", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const at::Tensor&, const at::Tensor&, int64_t, std::optional<double>)>();
  return op.call(q, k, v, fq, fk, window_factor, window_size, scale);
}

}  // namespace linattn
