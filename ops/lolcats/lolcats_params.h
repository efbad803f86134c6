#pragma once
// Torch-free description of one LoLCATs hybrid attention call for the CUDA kernels. Row i mixes a softmax
// window (keys i-w+1 .. i, weights gamma_h e^{s_ij - m_i}) with linear attention over the keys that left
// the window (j <= i-w, weights fq_i . fk_j) under one normaliser z_i. Token-major layout as in
// ops/gla/gla_params.h: element (token, head, d) of a [B*T, H, D] tensor x lives at
// x[token * tok_stride + head * head_stride + d], token = b * T + t; per-row statistics ([B*T, H], fp32) at
// token * H + head.
#include <cstdint>

namespace linattn::lolcats {

struct Params {
  const void* q = nullptr;              // [B*T, H, D] queries (input dtype)
  const void* k = nullptr;              // [B*T, H, D] keys (input dtype)
  const void* v = nullptr;              // [B*T, H, V] values (input dtype)
  const void* fq = nullptr;             // [B*T, H, F] query features phi(q) (input dtype)
  const void* fk = nullptr;             // [B*T, H, F] key features phi(k) (input dtype)
  const void* window_factor = nullptr;  // [H] gamma_h = sigmoid(window_factor_h) (input dtype)
  void* o = nullptr;                    // [B*T, H, V] output (input dtype); read by the backward
  float* m = nullptr;                   // [B*T, H] window max of the scaled scores (saved for backward)
  float* z = nullptr;                   // [B*T, H] normaliser of each row (saved for backward)

  int64_t batch = 0;   // B
  int64_t seqlen = 0;  // T
  int64_t heads = 0;   // H
  int64_t dim_qk = 0;  // D, head dim of q and k
  int64_t dim_v = 0;   // V, head dim of v and o
  int64_t dim_f = 0;   // F, feature size of fq and fk
  int64_t window = 1;  // w >= 1
  double scale = 1.0;  // multiplies q . k

  int64_t qk_tok_stride = 0;   // elements between tokens of q, k, dq, dk (H * D)
  int64_t qk_head_stride = 0;  // elements between heads of q, k, dq, dk (D)
  int64_t v_tok_stride = 0;    // elements between tokens of v, o, do, dv (H * V)
  int64_t v_head_stride = 0;   // elements between heads of v, o, do, dv (V)
  int64_t f_tok_stride = 0;    // elements between tokens of fq, fk, dfq, dfk (H * F)
  int64_t f_head_stride = 0;   // elements between heads of fq, fk, dfq, dfk (F)

  // backward only
  const void* do_ = nullptr;  // [B*T, H, V] gradient of o (input dtype)
  void* dq = nullptr;         // [B*T, H, D] (input dtype)
  void* dk = nullptr;         // [B*T, H, D] (input dtype)
  void* dv = nullptr;         // [B*T, H, V] (input dtype)
  void* dfq = nullptr;        // [B*T, H, F] (input dtype)
  void* dfk = nullptr;        // [B*T, H, F] (input dtype)
  void* dwindow_factor = nullptr;  // [H] (input dtype)
};

}  // namespace linattn::lolcats
