#pragma once
// Torch-side helpers shared by the delta-rule backends: checks, input preparation and params.
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "ops/delta_rule/delta_params.h"

namespace linattn::delta {

using OptTensor = std::optional<at::Tensor>;
using Pair = std::tuple<at::Tensor, at::Tensor>;
using BwdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Shapes, dtypes, devices (symbolic-size safe): q, k [B,T,H,K]; v [B,T,HV,V] with HV % H == 0;
// beta and g [B,T,HV]; initial_state [N,HV,K,V]; cu_seqlens int64 [N+1] with B == 1.
void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const OptTensor& g, const at::Tensor& beta, const OptTensor& initial_state,
                  const OptTensor& cu_seqlens);

// x / sqrt(sum(x^2) + 1e-6) over the last dim, and its backward given y = l2norm(x).
// The state of fused_recurrent_delta_rule_inplace: contiguous and already in the state dtype (float32, or
// float64 for float64 inputs), so the kernels can write it directly.
void check_inplace_state(const char* op, const at::Tensor& q, const at::Tensor& state);

at::Tensor l2norm(const at::Tensor& x);
at::Tensor l2norm_backward(const at::Tensor& x, const at::Tensor& dy);

Pair alloc_outputs(const at::Tensor& q, const at::Tensor& v, const OptTensor& cu_seqlens, bool output_final_state);

struct Inputs {
  at::Tensor q, k, v, g, beta, h0, cu_seqlens;
};
// keep_gate_dtype: beta and g stay in the dtype they came in (see recurrent_gates_in_input_dtype in
// delta_params.h).
Inputs prepare_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const OptTensor& g, const at::Tensor& beta, const OptTensor& initial_state,
                      const OptTensor& cu_seqlens, bool keep_gate_dtype = false);

FwdParams make_fwd_params(const Inputs& in, const at::Tensor& o, const at::Tensor& ht, double scale);

double resolve_scale(std::optional<double> scale, const at::Tensor& q);

// A backend: static check_dtype(op, q), forward(FwdParams, dtype, recurrent), backward(BwdParams, dtype), and
// kRecurrentL2InKernel: its recurrent kernel normalises q and k itself (FwdParams::l2norm_qk), which saves a
// decoding step the ATen normalisation's launches; kRecurrentGatesInInputDtype: its recurrent kernel reads beta and
// g in the input dtype (FwdParams::gates_in_input_dtype).
template <class Backend>
Pair run_forward(const char* op, bool recurrent, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                 const OptTensor& g, const at::Tensor& beta, std::optional<double> scale,
                 const OptTensor& initial_state, bool output_final_state, bool use_qk_l2norm,
                 const OptTensor& cu_seqlens) {
  check_inputs(op, q, k, v, g, beta, initial_state, cu_seqlens);
  Backend::check_dtype(op, q);
  const bool in_kernel = use_qk_l2norm && recurrent && Backend::kRecurrentL2InKernel;
  const bool in_aten = use_qk_l2norm && !in_kernel;
  const bool raw_gates = recurrent && Backend::kRecurrentGatesInInputDtype && recurrent_gates_in_input_dtype(q, beta, g);
  const Inputs in = prepare_inputs(op, in_aten ? l2norm(q) : q, in_aten ? l2norm(k) : k, v, g, beta, initial_state,
                                   cu_seqlens, raw_gates);
  auto [o, ht] = alloc_outputs(q, v, cu_seqlens, output_final_state);
  if (q.numel() > 0 || ht.numel() > 0) {
    FwdParams p = make_fwd_params(in, o, ht, resolve_scale(scale, q));
    p.l2norm_qk = in_kernel;
    p.gates_in_input_dtype = raw_gates;
    Backend::forward(p, q.scalar_type(), recurrent);
  }
  return {o, ht};
}

// fused_recurrent_delta_rule_inplace: the kernels read the initial state from `state` and write the final
// state over it. Safe because each kernel instance reads its slice of the state once, before the recurrence,
// and writes the same slice once, after it.
template <typename Backend>
at::Tensor run_recurrent_inplace(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const OptTensor& g, const at::Tensor& beta, const at::Tensor& state,
                                 std::optional<double> scale, bool use_qk_l2norm, const OptTensor& cu_seqlens) {
  check_inputs(op, q, k, v, g, beta, state, cu_seqlens);
  check_inplace_state(op, q, state);
  Backend::check_dtype(op, q);
  const bool in_aten = use_qk_l2norm && !Backend::kRecurrentL2InKernel;
  const bool raw_gates = Backend::kRecurrentGatesInInputDtype && recurrent_gates_in_input_dtype(q, beta, g);
  const Inputs in = prepare_inputs(op, in_aten ? l2norm(q) : q, in_aten ? l2norm(k) : k, v, g, beta, state,
                                   cu_seqlens, raw_gates);
  TORCH_INTERNAL_ASSERT(in.h0.data_ptr() == state.data_ptr(), op, ": the state was copied");
  at::Tensor o = std::get<0>(alloc_outputs(q, v, cu_seqlens, false));
  at::Tensor ht = state;
  FwdParams p = make_fwd_params(in, o, ht, resolve_scale(scale, q));
  p.l2norm_qk = use_qk_l2norm && Backend::kRecurrentL2InKernel;
  p.gates_in_input_dtype = raw_gates;
  Backend::forward(p, q.scalar_type(), /*recurrent=*/true);
  return o;
}

BwdResult run_backward_cpu_like(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& g,
                                const at::Tensor& beta, const at::Tensor& do_, const OptTensor& dht,
                                std::optional<double> scale, const OptTensor& initial_state,
                                const OptTensor& cu_seqlens, void (*launch)(const BwdParams&, at::ScalarType),
                                void (*check_dtype)(const char*, const at::Tensor&));

}  // namespace linattn::delta
