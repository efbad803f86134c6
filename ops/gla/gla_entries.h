#pragma once
// Dispatcher entry points of the GLA ops, templated on a backend's launchers so the CPU and CUDA files
// register identical argument handling and differ only in the kernels they launch.
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "ops/gla/gla_common.h"

namespace linattn::gla {

using OptTensor = std::optional<at::Tensor>;
using Pair = std::tuple<at::Tensor, at::Tensor>;
using BwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

enum class Algo { Chunk, Recurrent };

// A backend: static void forward(const FwdParams&, at::ScalarType, Algo, const at::Tensor& q) and
// static void backward(const BwdParams&, at::ScalarType, const at::Tensor& q); q gives the device.
template <class Backend>
Pair run_forward(const char* op, Algo algo, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const OptTensor& g, GateLayout layout, const OptTensor& g_gamma, std::optional<double> scale,
                 const OptTensor& initial_state, bool output_final_state, const OptTensor& cu_seqlens) {
  check_inputs(op, q, k, v, g, layout, g_gamma, initial_state, cu_seqlens);
  Backend::check_dtype(op, q);
  const Inputs in = prepare_inputs(op, q, k, v, g, g_gamma, initial_state, cu_seqlens);
  auto [o, ht] = alloc_outputs(q, v, cu_seqlens, output_final_state);
  if (q.numel() > 0 || ht.numel() > 0) {
    Backend::forward(make_fwd_params(in, o, ht, resolve_scale(scale, q)), q.scalar_type(), algo, q);
  }
  return {o, ht};
}

template <class Backend>
Pair chunk_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& g,
               std::optional<double> scale, const OptTensor& initial_state, bool output_final_state,
               const OptTensor& cu_seqlens) {
  return run_forward<Backend>("chunk_gla", Algo::Chunk, q, k, v, g, GateLayout::PerKey, std::nullopt, scale,
                              initial_state, output_final_state, cu_seqlens);
}

template <class Backend>
Pair fused_recurrent_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& gk,
                         std::optional<double> scale, const OptTensor& initial_state, bool output_final_state,
                         const OptTensor& cu_seqlens) {
  return run_forward<Backend>("fused_recurrent_gla", Algo::Recurrent, q, k, v, gk, GateLayout::PerKey,
                              std::nullopt, scale, initial_state, output_final_state, cu_seqlens);
}

template <class Backend>
Pair chunk_simple_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                      const OptTensor& g_gamma, std::optional<double> scale, const OptTensor& initial_state,
                      bool output_final_state, const OptTensor& cu_seqlens) {
  return run_forward<Backend>("chunk_simple_gla", Algo::Chunk, q, k, v, g, GateLayout::Scalar, g_gamma, scale,
                              initial_state, output_final_state, cu_seqlens);
}

template <class Backend>
Pair fused_recurrent_simple_gla(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                                const OptTensor& g_gamma, std::optional<double> scale,
                                const OptTensor& initial_state, bool output_final_state,
                                const OptTensor& cu_seqlens) {
  return run_forward<Backend>("fused_recurrent_simple_gla", Algo::Recurrent, q, k, v, g, GateLayout::Scalar,
                              g_gamma, scale, initial_state, output_final_state, cu_seqlens);
}

template <class Backend>
BwdResult gla_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                       const OptTensor& g_gamma, const at::Tensor& do_, const OptTensor& dht, std::optional<double> scale,
                       const OptTensor& initial_state, const OptTensor& cu_seqlens) {
  BwdCall call = prepare_backward(q, k, v, g, g_gamma, do_, dht, initial_state, cu_seqlens);
  Backend::check_dtype("_gla_backward", q);
  if (q.numel() > 0 || call.out.dh0.defined()) {
    Backend::backward(make_bwd_params(call.in, call.do_, call.dht, call.out, resolve_scale(scale, q)), q.scalar_type(), q);
  }
  return finish_backward(call, q, g, g_gamma, initial_state);
}

// Registers the five GLA entries of a backend on a TORCH_LIBRARY_IMPL handle.
template <class Backend, class Library>
void register_backend(Library& m) {
  m.impl("chunk_gla", &chunk_gla<Backend>);
  m.impl("fused_recurrent_gla", &fused_recurrent_gla<Backend>);
  m.impl("chunk_simple_gla", &chunk_simple_gla<Backend>);
  m.impl("fused_recurrent_simple_gla", &fused_recurrent_simple_gla<Backend>);
  m.impl("_gla_backward", &gla_backward<Backend>);
}

}  // namespace linattn::gla
