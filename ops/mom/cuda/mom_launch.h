#pragma once
// Torch-free launchers of the MoM dispatch / combine kernels. Each is ONE kernel launch, asynchronous on
// `stream`, with no device->host synchronisation, and deterministic (no atomics: every output element is
// written by exactly one thread, sums run in a fixed order in fp32). Out-of-range indices trip a device-side
// assertion. They throw std::runtime_error on a launch failure.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "csrc/cuda/dtype.h"
#include "ops/mom/mom_params.h"

namespace linattn::mom::gpu {

using DType = cuda_utils::DType;

constexpr int64_t kMaxMemories = 512;   // per-warp histograms live in shared memory (< 48 KB in all)
constexpr int64_t kMaxTopk = 256;       // one chunk (a CTA's 256 threads) holds all copies of a token

constexpr int64_t kThreads = 256;      // threads per CTA; also the copies one chunk places at once

// Tokens placed together by one CTA step: all copies of a token are always in the same chunk (constexpr:
// device code calls it too, under --expt-relaxed-constexpr).
constexpr int64_t chunk_tokens(int64_t topk) { return topk >= kThreads ? 1 : kThreads / topk; }

// Tokens per CTA for a grid of at most max_blocks CTAs (whole chunks). Every CTA re-reads all N*k indices
// (its prefix histogram), so max_blocks bounds that redundant work: max_blocks * N*k index reads in all.
inline int64_t tokens_per_block(const Params& p, int64_t max_blocks) {
  const int64_t tokens = p.batch * p.seqlen, chunk = chunk_tokens(p.topk);
  const int64_t chunks = (tokens + chunk - 1) / chunk;
  const int64_t blocks = max_blocks < 1 ? 1 : max_blocks;
  return (chunks + blocks - 1) / blocks * chunk;
}

// x_sorted, cu_seqlens and sort_index from x and indices.
template <DType D>
void dispatch(Params p, int64_t max_blocks, cudaStream_t stream);

// y from y_sorted and weights (weights == nullptr: the backward of dispatch, a plain sum of the copies).
template <DType D>
void combine(Params p, int64_t max_blocks, cudaStream_t stream);

// dy_sorted = w * dy[token] and dweights = <dy[token], y_sorted[row]> from dy, y_sorted and weights.
template <DType D>
void combine_backward(Params p, int64_t max_blocks, cudaStream_t stream);

}  // namespace linattn::mom::gpu
