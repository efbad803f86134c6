#pragma once
// Torch-free description of one GLA call, shared by the CPU and CUDA kernels.
//
// Tensors are token-major: element (token, head, d) of a [B*T, H, D] tensor x lives at
// x[token * x_tok_stride + head * x_head_stride + d], token = b * T + t (or the packed index with varlen).
// Gates are read through three strides so one kernel serves vector gates [B*T, H, K], scalar gates
// [B*T, H] (g_k_stride = 0) and per-head constants [H] (g_tok_stride = g_k_stride = 0).
#include <cstdint>

namespace linattn::gla {

struct FwdParams {
  const void* q = nullptr;  // [B*T, H, K] queries (input dtype)
  const void* k = nullptr;  // [B*T, H, K] keys (input dtype)
  const void* v = nullptr;  // [B*T, H, V] values (input dtype)
  void* o = nullptr;        // [B*T, H, V] output (input dtype)

  const void* g = nullptr;   // log gates in state precision; nullptr means no decay (g = 0)
  int64_t g_tok_stride = 0;  // elements between consecutive tokens of g (0: constant over tokens)
  int64_t g_head_stride = 0; // elements between heads of g
  int64_t g_k_stride = 0;    // elements between key dims of g (0: one gate shared by all K dims)

  const void* h0 = nullptr;  // [N, H, K, V] initial states in state precision, nullptr for zeros
  void* ht = nullptr;        // [N, H, K, V] final states in state precision, nullptr when not wanted

  const int64_t* cu_seqlens = nullptr;  // [N+1] offsets of packed sequences; nullptr: sequence n is batch n

  int64_t batch = 0;     // B
  int64_t seqlen = 0;    // T (tokens per batch row; the packed length with varlen)
  int64_t num_seqs = 0;  // N: B, or cu_seqlens.numel() - 1
  int64_t heads = 0;     // H
  int64_t dim_k = 0;     // K, head dim of q and k
  int64_t dim_v = 0;     // V, head dim of v and o

  int64_t q_tok_stride = 0, q_head_stride = 0;  // strides of q (and of dq)
  int64_t k_tok_stride = 0, k_head_stride = 0;  // strides of k (and of dk)
  int64_t v_tok_stride = 0, v_head_stride = 0;  // strides of v, o, do and dv

  double scale = 1.0;  // multiplies q

  // Liger's mix, applied where the chunked CUDA forwards write o: o = lin_w * o_gla + mix_w * o_mix, rounded
  // once, so the sliding-window output joins without a separate elementwise pass. o_mix (input dtype) has o's
  // layout; nullptr (the default) writes o_gla as before. The CPU kernels and the recurrent forward ignore it
  // (their glue never sets it).
  const void* o_mix = nullptr;
  double lin_w = 1.0;
  double mix_w = 0.0;
};

struct BwdParams : FwdParams {
  const void* do_ = nullptr;  // [B*T, H, V] gradient of o (input dtype)
  const void* dht = nullptr;  // [N, H, K, V] gradient of the final state, nullptr for zeros
  void* dq = nullptr;         // [B*T, H, K] (input dtype)
  void* dk = nullptr;         // [B*T, H, K] (input dtype)
  void* dv = nullptr;         // [B*T, H, V] (input dtype)
  void* dg = nullptr;         // state precision: [B*T, H, K], or [B*T, H] summed over K when dg_sum_k; nullptr: skip
  bool dg_sum_k = false;      // scalar gate: reduce the per-dimension gate gradient over K
  void* dh0 = nullptr;        // [N, H, K, V] gradient of the initial state (state precision), nullptr: skip
  // The CUDA kernels multiply do by this as they load it (Liger's linear weight), so no scaled copy of do is
  // made; dht is not scaled. The CPU kernels ignore it (their glue never sets it).
  double do_scale = 1.0;
};

}  // namespace linattn::gla
