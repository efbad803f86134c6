// The one place where linattn's operator schemas are declared. Backends register kernels for these
// names with TORCH_LIBRARY_IMPL in their own files (ops/<family>/<family>_{cpu,cuda,meta,autograd}.cpp).
#include <torch/library.h>

TORCH_LIBRARY(linattn, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};

  // ---- shared varlen support (ops/varlen) ----
  // Validates cu_seqlens on its own device (op names the calling op in the message); returns nothing.
  m.def("_check_cu_seqlens(Tensor cu_seqlens, int total_len, str op) -> ()", tags);

  // ---- GLA family (ops/gla) ----
  m.def(
      "chunk_gla(Tensor q, Tensor k, Tensor v, Tensor g, float? scale=None, Tensor? initial_state=None, "
      "bool output_final_state=False, Tensor? cu_seqlens=None) -> (Tensor, Tensor)",
      tags);
  m.def(
      "fused_recurrent_gla(Tensor q, Tensor k, Tensor v, Tensor? gk=None, float? scale=None, "
      "Tensor? initial_state=None, bool output_final_state=False, Tensor? cu_seqlens=None) -> (Tensor, Tensor)",
      tags);
  m.def(
      "chunk_simple_gla(Tensor q, Tensor k, Tensor v, Tensor? g=None, Tensor? g_gamma=None, float? scale=None, "
      "Tensor? initial_state=None, bool output_final_state=False, Tensor? cu_seqlens=None) -> (Tensor, Tensor)",
      tags);
  m.def(
      "fused_recurrent_simple_gla(Tensor q, Tensor k, Tensor v, Tensor? g=None, Tensor? g_gamma=None, "
      "float? scale=None, Tensor? initial_state=None, bool output_final_state=False, Tensor? cu_seqlens=None) "
      "-> (Tensor, Tensor)",
      tags);
  // Shared backward of the four ops above. g is [B,T,H,K] (vector gate) or [B,T,H] (scalar gate).
  // Returns (dq, dk, dv, dg, dg_gamma, dh0); a gradient whose input was absent is an empty tensor.
  m.def(
      "_gla_backward(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor? g_gamma, Tensor do, Tensor? dht, "
      "float? scale, Tensor? initial_state, Tensor? cu_seqlens) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      tags);

  // ---- delta rule family (ops/delta_rule) ----
  // v may have more heads (HV) than q and k (H); beta and g are [B, T, HV]; states [N, HV, K, V].
  m.def(
      "chunk_delta_rule(Tensor q, Tensor k, Tensor v, Tensor beta, float? scale=None, Tensor? initial_state=None, "
      "bool output_final_state=False, bool use_qk_l2norm_in_kernel=False, Tensor? cu_seqlens=None) "
      "-> (Tensor, Tensor)",
      tags);
  m.def(
      "fused_recurrent_delta_rule(Tensor q, Tensor k, Tensor v, Tensor beta, float? scale=None, "
      "Tensor? initial_state=None, bool output_final_state=False, bool use_qk_l2norm_in_kernel=False, "
      "Tensor? cu_seqlens=None) -> (Tensor, Tensor)",
      tags);
  m.def(
      "chunk_gated_delta_rule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, float? scale=None, "
      "Tensor? initial_state=None, bool output_final_state=False, bool use_qk_l2norm_in_kernel=False, "
      "Tensor? cu_seqlens=None) -> (Tensor, Tensor)",
      tags);
  m.def(
      "fused_recurrent_gated_delta_rule(Tensor q, Tensor k, Tensor v, Tensor g, Tensor beta, float? scale=None, "
      "Tensor? initial_state=None, bool output_final_state=False, bool use_qk_l2norm_in_kernel=False, "
      "Tensor? cu_seqlens=None) -> (Tensor, Tensor)",
      tags);
  // Decoding with one state buffer: state [N, HV, K, V] is read as the initial state and overwritten with the
  // final one by the kernel itself (no copy); g may be absent (DeltaNet). Not differentiable.
  m.def(
      "fused_recurrent_delta_rule_inplace(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor beta, Tensor(a!) state, "
      "float? scale=None, bool use_qk_l2norm_in_kernel=False, Tensor? cu_seqlens=None) -> Tensor",
      tags);
  // Shared backward of the four ops above, on already L2-normalised q and k (the autograd layer applies the
  // norm's backward). Returns (dq, dk, dv, dg, dbeta, dh0); absent inputs give empty tensors.
  m.def(
      "_delta_rule_backward(Tensor q, Tensor k, Tensor v, Tensor? g, Tensor beta, Tensor do, Tensor? dht, "
      "float? scale, Tensor? initial_state, Tensor? cu_seqlens) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      tags);

  // ---- sliding-window attention (ops/swa) ----
  // Causal softmax attention where query i sees keys i-w+1 .. i of its sequence.
  m.def(
      "sliding_window_attention(Tensor q, Tensor k, Tensor v, int window_size, float? scale=None, "
      "Tensor? cu_seqlens=None) -> Tensor",
      tags);
  // (o, lse): lse [B, T, H] is the log-sum-exp of the scaled scores of each row, saved for the backward.
  m.def(
      "_sliding_window_attention_forward(Tensor q, Tensor k, Tensor v, int window_size, float? scale=None, "
      "Tensor? cu_seqlens=None) -> (Tensor, Tensor)",
      tags);
  m.def(
      "_sliding_window_attention_backward(Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor do, "
      "int window_size, float? scale, Tensor? cu_seqlens) -> (Tensor, Tensor, Tensor)",
      tags);

  // ---- LoLCATs (ops/lolcats) ----
  // phi(x) = [softmax_F(x W_h), softmax_F(-x W_h)]; x [B, T, H, D], weight [H, D, F] -> [B, T, H, 2F].
  m.def("hedgehog_feature_map(Tensor x, Tensor weight) -> Tensor", tags);
  // MSE(lolcats_attention(...), causal softmax attention of q, k, v under no_grad).
  m.def(
      "attention_transfer_loss(Tensor q, Tensor k, Tensor v, Tensor fq, Tensor fk, Tensor window_factor, "
      "int window_size=64, float? scale=None) -> Tensor",
      tags);
  // Hybrid window softmax + linear attention with one normaliser (see csrc/include/linattn/lolcats.h).
  m.def(
      "lolcats_attention(Tensor q, Tensor k, Tensor v, Tensor fq, Tensor fk, Tensor window_factor, "
      "int window_size=64, float? scale=None) -> Tensor",
      tags);
  // (o, m, z): the window max of the scaled scores and the normaliser of every row, saved for the backward.
  m.def(
      "_lolcats_attention_forward(Tensor q, Tensor k, Tensor v, Tensor fq, Tensor fk, Tensor window_factor, "
      "int window_size, float? scale) -> (Tensor, Tensor, Tensor)",
      tags);
  m.def(
      "_lolcats_attention_backward(Tensor q, Tensor k, Tensor v, Tensor fq, Tensor fk, Tensor window_factor, "
      "Tensor o, Tensor m, Tensor z, Tensor do, int window_size, float? scale) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      tags);

  // ---- Liger (ops/liger) ----
  m.def("liger_gate(Tensor k, int? out_dim=None, float divisor=16.0) -> Tensor", tags);
  // Returns (o, final GLA state; an empty tensor unless output_final_state). g is [B,T,H,D] (per key) or [B,T,H].
  m.def(
      "liger_attention(Tensor q, Tensor k, Tensor v, Tensor g, Tensor q_rot, Tensor k_rot, int window_size=64, "
      "Tensor? initial_state=None, bool output_final_state=False, float softmax_weight=0.5, "
      "float linear_weight=0.5) -> (Tensor, Tensor)",
      tags);
  // (o, final state, o_win, lse, q_feat, k_feat): besides the op's outputs, what its backward reads: the window
  // part o_win with its log-sum-exp [B, T, H] and the feature maps softmax(q), softmax(k).
  m.def(
      "_liger_attention_forward(Tensor q, Tensor k, Tensor v, Tensor g, Tensor q_rot, Tensor k_rot, int window_size, "
      "Tensor? initial_state, bool output_final_state, float softmax_weight, float linear_weight) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      tags);
  // (dq, dk, dv, dg, dq_rot, dk_rot, dh0); dh0 is an empty tensor without initial_state.
  m.def(
      "_liger_attention_backward(Tensor q_feat, Tensor k_feat, Tensor v, Tensor g, Tensor q_rot, Tensor k_rot, "
      "Tensor o_win, Tensor lse, Tensor do, Tensor? dht, int window_size, Tensor? initial_state, "
      "float softmax_weight, float linear_weight) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
      tags);

  // ---- MoM routing (ops/mom) ----
  m.def("mom_route(Tensor router_logits, int topk) -> (Tensor, Tensor)", tags);
  m.def("mom_dispatch(Tensor x, Tensor indices, int num_memories) -> (Tensor, Tensor, Tensor)", tags);
  m.def(
      "mom_combine(Tensor y_sorted, Tensor weights, Tensor indices, Tensor sort_index, int num_memories) -> Tensor",
      tags);
  // dx[b, t] = sum_j grad_x_sorted[row of copy j] (summed in row order, fp32).
  m.def("_mom_dispatch_backward(Tensor grad_x_sorted, Tensor indices, Tensor sort_index, int num_memories) -> Tensor",
        tags);
  // (grad_y_sorted[row] = w * grad_y[token], grad_weights[b, t, j] = <grad_y[b, t], y_sorted[row of copy j]>).
  m.def(
      "_mom_combine_backward(Tensor grad_y, Tensor y_sorted, Tensor weights, Tensor indices, Tensor sort_index, "
      "int num_memories) -> (Tensor, Tensor)",
      tags);
  // y[r] = x[r] weights[g]^T for offsets[g] <= r < offsets[g+1]; rows outside offsets[0] .. offsets[G] are 0.
  m.def("mom_grouped_linear(Tensor x, Tensor[] weights, Tensor offsets) -> Tensor", tags);
  // grads[g] = grad_y[rows of g]^T x[rows of g] ([O, D], zeros for an empty group).
  m.def("_mom_grouped_linear_weight_grad(Tensor grad_y, Tensor x, Tensor offsets, int num_groups) -> Tensor[]", tags);
}
