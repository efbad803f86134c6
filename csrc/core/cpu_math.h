#pragma once
// Small dense building blocks for the CPU kernels: row-major GEMMs on chunk-sized tiles written so the
// innermost loop runs over contiguous memory (the compiler vectorizes it), and an exp that vectorizes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

// Marks a CPU kernel's range runner to be cloned for x86-64-v3 CPUs (AVX2 + FMA; picked by CPU features through
// an ifunc at load time) with every callee flattened into it, so tile loops vectorize 8-wide there and stay
// baseline x86-64 elsewhere.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LINATTN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), flatten))
#else
#define LINATTN_CPU_CLONES
#endif

namespace linattn::cpu {

// C[M,N] (+)= alpha * A[M,P] @ B[P,N]; lower_a: A is lower triangular (A[i][p] = 0 for p > i).
template <typename T>
inline void gemm_nn(int64_t M, int64_t N, int64_t P, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
                    T* C, int64_t ldc, bool accumulate, bool lower_a = false) {
  for (int64_t i = 0; i < M; ++i) {
    T* __restrict__ c = C + i * ldc;
    if (!accumulate) std::fill(c, c + N, T(0));
    const int64_t pend = lower_a ? std::min(P, i + 1) : P;
    for (int64_t p = 0; p < pend; ++p) {
      const T a = alpha * A[i * lda + p];
      const T* __restrict__ b = B + p * ldb;
      for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}

// C[M,N] (+)= alpha * A[P,M]^T @ B[P,N]; lower_a: A[p][i] = 0 for i > p (A^T upper triangular).
template <typename T>
inline void gemm_tn(int64_t M, int64_t N, int64_t P, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
                    T* C, int64_t ldc, bool accumulate, bool lower_a = false) {
  if (!accumulate)
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
  for (int64_t p = 0; p < P; ++p) {
    const T* __restrict__ b = B + p * ldb;
    const int64_t iend = lower_a ? std::min(M, p + 1) : M;
    for (int64_t i = 0; i < iend; ++i) {
      const T a = alpha * A[p * lda + i];
      T* __restrict__ c = C + i * ldc;
      for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}

// Bt[N,M] = B[M,N]^T, so that A @ B^T can run as gemm_nn(A, Bt).
template <typename T>
inline void transpose(int64_t M, int64_t N, const T* B, int64_t ldb, T* Bt, int64_t ldbt) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) Bt[j * ldbt + i] = B[i * ldb + j];
}

// exp(x) within ~2 ulp for float, written so loops over it vectorize (std::exp does not; the clamps need
// -fno-trapping-math to become vector min/max);
// exp of anything below the float range is exactly 0, as the decays that produce it require.
inline float exp_fast(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // Cody-Waite split of ln 2
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : p * scale;
}

inline double exp_fast(double x) { return std::exp(x); }

}  // namespace linattn::cpu
