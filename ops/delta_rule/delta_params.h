#pragma once
// Torch-free description of one (gated) delta-rule call, shared by the CPU and CUDA kernels.
// Token-major layout as in ops/gla/gla_params.h. q and k have H heads; v, o, beta, g and the states have HV
// value heads, HV a multiple of H: value head hv reads q/k head hv / (HV / H).
#include <cstdint>
#include <optional>

namespace linattn::delta {

struct FwdParams {
  const void* q = nullptr;     // [B*T, H, K] queries (input dtype; L2-normalised when asked, see l2norm_qk)
  const void* k = nullptr;     // [B*T, H, K] keys (input dtype)
  const void* v = nullptr;     // [B*T, HV, V] values (input dtype)
  void* o = nullptr;           // [B*T, HV, V] output (input dtype)
  const void* beta = nullptr;  // [B*T, HV] write strengths in state precision
  const void* g = nullptr;     // [B*T, HV] log decays in state precision; nullptr: DeltaNet (no decay)
  const void* h0 = nullptr;    // [N, HV, K, V] initial states in state precision, nullptr for zeros
  void* ht = nullptr;          // [N, HV, K, V] final states in state precision, nullptr when not wanted
  const int64_t* cu_seqlens = nullptr;  // [N+1] offsets of packed sequences; nullptr: sequence n is batch n

  int64_t batch = 0;        // B
  int64_t seqlen = 0;       // T
  int64_t num_seqs = 0;     // N
  int64_t heads = 0;        // H (q/k heads)
  int64_t value_heads = 0;  // HV (v heads), a multiple of H
  int64_t dim_k = 0;        // K
  int64_t dim_v = 0;        // V
  double scale = 1.0;       // multiplies q
  bool l2norm_qk = false;   // recurrent CUDA kernel only: q and k arrive raw and the kernel L2-normalises them
                            // per token in fp32, x / sqrt(|x|^2 + 1e-6) (one launch per decoding step)
  bool gates_in_input_dtype = false;  // recurrent CUDA kernel only: beta and g are in the input dtype, as the
                                      // caller passed them, and are widened per token (no conversion launch)
};

struct BwdParams : FwdParams {
  const void* do_ = nullptr;  // [B*T, HV, V] gradient of o (input dtype)
  const void* dht = nullptr;  // [N, HV, K, V] gradient of the final state, nullptr for zeros
  void* dq = nullptr;         // CPU: [B*T, HV, K] per value head, the caller sums each group; CUDA: [B*T, H, K],
                              // summed by the kernels (input dtype)
  void* dk = nullptr;         // as dq
  void* dv = nullptr;         // [B*T, HV, V] (input dtype)
  void* dbeta = nullptr;      // [B*T, HV] state precision
  void* dg = nullptr;         // [B*T, HV] state precision, nullptr when g is absent
  void* dh0 = nullptr;        // [N, HV, K, V] state precision, nullptr: skip
};

// Whether a recurrent kernel that can read beta and g in the input dtype (FwdParams::gates_in_input_dtype)
// should: both already in q's 16-bit dtype, where converting them to fp32 first would cost a launch per
// decoding step. fp32 / fp64 inputs need no conversion anyway; mixed dtypes are converted as before.
// Tensor is at::Tensor; a template so that this header stays torch-free and the emulator harness
// (tests/emulator/harness/delta_rule.cpp) applies the same rule as the glue (delta_common.h).
template <class Tensor>
bool recurrent_gates_in_input_dtype(const Tensor& q, const Tensor& beta, const std::optional<Tensor>& g) {
  auto dt = q.scalar_type();
  using ScalarType = decltype(dt);  // c10::ScalarType
  return (dt == ScalarType::Half || dt == ScalarType::BFloat16) && beta.scalar_type() == dt &&
         (!g.has_value() || g->scalar_type() == dt);
}

}  // namespace linattn::delta
