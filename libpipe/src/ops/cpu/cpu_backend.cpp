// The CPU backend's ops other than attention: OpenBLAS sgemm, and one or two
// passes over memory for everything else. Outputs are written, never read
// first (the op layer hands in Tensor::empty storage), except where the
// interface says "+=".
#include "cpu_backend.hpp"

#include <cblas.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "pipe/bfloat16.hpp"
#include "cpu_math.hpp"
#include "ops/gemm_check.hpp"
#include "pipe/error.hpp"

namespace libpipe::cpu {
namespace {

// C = beta * C over an m x n block (k = 0: the product is empty, and BLAS's handling of it varies).
void scale_block(float* c, std::int64_t ldc, std::int64_t m, std::int64_t n, float beta) {
  for (std::int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    if (beta == 0.0f)
      std::fill(row, row + n, 0.0f);
    else
      for (std::int64_t j = 0; j < n; ++j) row[j] *= beta;
  }
}

void sgemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
           std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) return scale_block(c, ldc, m, n, beta);
  // OpenBLAS writes C without reading it when beta is 0, so uninitialised outputs are fine.
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b,
              static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

}  // namespace

// ---- instruction sets

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

Isa cpu_isa() {
  // A throw leaves the static unset, so every later use reports the same error.
  static const Isa isa = [] {
    Isa best = Isa::baseline;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
      best = Isa::avx512;
    else if (__builtin_cpu_supports("x86-64-v3"))
      best = Isa::avx2;
#endif
    const char* env = std::getenv("PIPE_CPU_ISA");
    if (env == nullptr || *env == '\0') return best;
    const std::string want(env);
    Isa asked = Isa::baseline;
    if (want == "avx512")
      asked = Isa::avx512;
    else if (want == "avx2")
      asked = Isa::avx2;
    else if (want != "baseline")
      throw Error("PIPE_CPU_ISA=" + want + " is not one of avx512, avx2, baseline");
    if (static_cast<int>(asked) > static_cast<int>(best))
      throw Error("PIPE_CPU_ISA=" + want + " but this CPU (or build) supports at most " + isa_name(best));
    return asked;
  }();
  return isa;
}

// ---- memory

void CpuBackend::fill(float* y, float value, std::int64_t n) { std::fill(y, y + n, value); }

void CpuBackend::copy(float* dst, const float* src, std::int64_t n) {
  if (n > 0 && dst != src) std::memmove(dst, src, static_cast<std::size_t>(n) * sizeof(float));
}

void CpuBackend::copy_to_host(void* host, const void* src, std::size_t bytes) {
  if (bytes > 0 && host != src) std::memmove(host, src, bytes);
}

void CpuBackend::copy_from_host(void* dst, const void* host, std::size_t bytes) {
  if (bytes > 0 && dst != host) std::memmove(dst, host, bytes);
}

// ---- bfloat16

void CpuBackend::to_bf16(const float* x, std::uint16_t* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]);
}

void CpuBackend::from_bf16(const std::uint16_t* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i]);
}

// ---- GEMM

void CpuBackend::gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                      const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc) {
  detail::check_gemm("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void CpuBackend::gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                                      float alpha, const float* a, std::int64_t lda, std::int64_t stride_a,
                                      const float* b, std::int64_t ldb, std::int64_t stride_b, float beta, float* c,
                                      std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  detail::check_gemm("gemm_strided_batched", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (batch < 0) throw Error("gemm_strided_batched: negative batch " + std::to_string(batch));
  for (std::int64_t i = 0; i < batch; ++i)
    sgemm(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb, beta, c + i * stride_c, ldc);
}

}  // namespace libpipe::cpu
