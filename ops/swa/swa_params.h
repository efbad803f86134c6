#pragma once
// Torch-free description of one sliding-window attention call (CPU and CUDA kernels): causal softmax
// attention where query i sees keys i-w+1 .. i of its own sequence. Token-major layout as in
// ops/gla/gla_params.h: element (token, head, d) of a [B*T, H, D] tensor x lives at
// x[token * tok_stride + head * head_stride + d]; per-row statistics ([B*T, H]) at token * H + head.
#include <cstdint>

namespace linattn::swa {

struct Params {
  const void* q = nullptr;  // [B*T, H, K] queries (input dtype)
  const void* k = nullptr;  // [B*T, H, K] keys (input dtype)
  const void* v = nullptr;  // [B*T, H, V] values (input dtype)
  void* o = nullptr;        // [B*T, H, V] output (input dtype); read by the backward
  void* lse = nullptr;      // [B*T, H] log-sum-exp of the scaled scores, state precision (saved for backward)
  const int64_t* cu_seqlens = nullptr;  // [N+1] packed sequence offsets, or nullptr (sequence n is batch n)

  int64_t batch = 0;     // B
  int64_t seqlen = 0;    // T (tokens per batch row; the packed length with varlen)
  int64_t num_seqs = 0;  // N: B, or cu_seqlens.numel() - 1
  int64_t heads = 0;     // H
  int64_t dim_k = 0;     // K, head dim of q and k
  int64_t dim_v = 0;     // V, head dim of v and o
  int64_t window = 1;    // w >= 1: query i sees keys i-w+1 .. i
  double scale = 1.0;    // multiplies q . k

  int64_t qk_tok_stride = 0;   // elements between tokens of q, k, dq, dk (the CPU kernels assume H * K)
  int64_t qk_head_stride = 0;  // elements between heads of q, k, dq, dk (K)
  int64_t v_tok_stride = 0;    // elements between tokens of v, o, do, dv (H * V)
  int64_t v_head_stride = 0;   // elements between heads of v, o, do, dv (V)

  // backward only
  const void* do_ = nullptr;  // [B*T, H, V] gradient of o (input dtype)
  void* dq = nullptr;         // [B*T, H, K] (input dtype)
  void* dk = nullptr;         // [B*T, H, K] (input dtype)
  void* dv = nullptr;         // [B*T, H, V] (input dtype)
  // The CUDA kernels return the gradients of do_scale * o (Liger's window weight) without a scaled copy of do in
  // memory: the SIMT backward scales do where it stages it and in delta = do . o, the tensor-core one applies the
  // factor when it stores dq, dk, dv. The CPU kernels ignore it (their glue never sets it).
  double do_scale = 1.0;
};

}  // namespace linattn::swa
