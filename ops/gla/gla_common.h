#pragma once
// Torch-side helpers shared by the GLA backends: argument checks, gate preparation, output allocation and
// the translation of tensors into the torch-free params structs.
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

#include "ops/gla/gla_params.h"

namespace linattn::gla {

// Which gate layout an op takes: chunk_gla / fused_recurrent_gla take [B,T,H,K], the simple ops [B,T,H] + [H].
enum class GateLayout { PerKey, Scalar };

// Validates shapes, dtypes and devices (symbolic-size safe, so Meta kernels call it too).
void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const std::optional<at::Tensor>& g, GateLayout layout, const std::optional<at::Tensor>& g_gamma,
                  const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens);

double resolve_scale(std::optional<double> scale, const at::Tensor& q);

// (o, final_state) with final_state an empty tensor when not requested. Symbolic-size safe.
std::tuple<at::Tensor, at::Tensor> alloc_outputs(const at::Tensor& q, const at::Tensor& v,
                                                 const std::optional<at::Tensor>& cu_seqlens,
                                                 bool output_final_state);

// The gate in state precision plus its strides; both gates absent gives an undefined tensor (no decay).
struct Gate {
  at::Tensor values;
  int64_t tok_stride = 0, head_stride = 0, k_stride = 0;
};
Gate prepare_gate(const std::optional<at::Tensor>& g, const std::optional<at::Tensor>& g_gamma, const at::Tensor& q);

// Contiguous inputs for the kernels; they keep the tensors alive while the params point into them.
struct Inputs {
  at::Tensor q, k, v, h0, cu_seqlens;
  Gate gate;
};
Inputs prepare_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const std::optional<at::Tensor>& g, const std::optional<at::Tensor>& g_gamma,
                      const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens);

FwdParams make_fwd_params(const Inputs& in, const at::Tensor& o, const at::Tensor& ht, double scale);

// Backward outputs (dq, dk, dv, dg_state_precision, dh0) allocated for the given inputs.
struct BwdOutputs {
  at::Tensor dq, dk, dv, dg, dh0;
};
BwdOutputs alloc_bwd_outputs(const Inputs& in, bool want_dg);
BwdParams make_bwd_params(const Inputs& in, const at::Tensor& do_, const at::Tensor& dht, const BwdOutputs& out,
                          double scale);

// Turns the kernel's gate gradient into (dg, dg_gamma) shaped like the user's g and g_gamma.
std::tuple<at::Tensor, at::Tensor> finish_gate_grads(const at::Tensor& dg_state, const std::optional<at::Tensor>& g,
                                                     const std::optional<at::Tensor>& g_gamma, const at::Tensor& q);

// Shared front of the backend backward entries: checks, contiguous do/dht, outputs.
struct BwdCall {
  Inputs in;
  at::Tensor do_, dht;
  BwdOutputs out;
};
BwdCall prepare_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& g, const std::optional<at::Tensor>& g_gamma,
                         const at::Tensor& do_, const std::optional<at::Tensor>& dht,
                         const std::optional<at::Tensor>& initial_state, const std::optional<at::Tensor>& cu_seqlens);

// Shapes the kernels' raw gradients into the op's six outputs.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> finish_backward(
    const BwdCall& call, const at::Tensor& q, const std::optional<at::Tensor>& g,
    const std::optional<at::Tensor>& g_gamma, const std::optional<at::Tensor>& initial_state);

}  // namespace linattn::gla
