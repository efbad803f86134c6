#pragma once
// Sequence indexing shared by the kernels (torch-free): the token span of sequence n, from packed offsets
// (varlen, B == 1) or as row n of a [B, T] batch.
#include <cstdint>

namespace linattn {

struct Span {
  int64_t bos;  // first token (flat index over B*T)
  int64_t len;  // number of tokens
};

inline Span sequence_span(const int64_t* cu_seqlens, int64_t seqlen, int64_t n) {
  if (cu_seqlens != nullptr) return {cu_seqlens[n], cu_seqlens[n + 1] - cu_seqlens[n]};
  return {n * seqlen, seqlen};
}

}  // namespace linattn
