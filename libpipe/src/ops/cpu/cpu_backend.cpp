// The CPU backend's ops other than attention: GEMMs on oneDNN (cpu_gemm.cpp), and one or two
// passes over memory for everything else. Outputs are written, never read
// first (the op layer hands in Tensor::empty storage), except where the
// interface says "+=".
#include "cpu_backend.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "pipe/bfloat16.hpp"
#include "cpu_gemm.hpp"
#include "cpu_math.hpp"
#include "cpu_threads.hpp"
#include "ops/gemm_check.hpp"
#include "pipe/error.hpp"

namespace libpipe::cpu {

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
//
// Compiled per instruction set and split over the threads by elements: under --dtype bf16 every widened GEMM
// converts its operands, and as plain loops the conversions took a third of gpt-tiny's step on one core.

namespace {

template <int W>
PIPE_INLINE void to_bf16_kernel(const float* x, std::uint16_t* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]);
}
PIPE_ISA_DISPATCH(to_bf16_kernel, (const float* x, std::uint16_t* y, std::int64_t n), (x, y, n))

template <int W>
PIPE_INLINE void from_bf16_kernel(const std::uint16_t* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i]);
}
PIPE_ISA_DISPATCH(from_bf16_kernel, (const std::uint16_t* x, float* y, std::int64_t n), (x, y, n))

}  // namespace

void CpuBackend::to_bf16(const float* x, std::uint16_t* y, std::int64_t n) {
  parallel_for(n, kMinShare, [&](std::int64_t i, std::int64_t e) { to_bf16_kernel_any(x + i, y + i, e - i); },
               kShareAlign);
}

void CpuBackend::from_bf16(const std::uint16_t* x, float* y, std::int64_t n) {
  parallel_for(n, kMinShare, [&](std::int64_t i, std::int64_t e) { from_bf16_kernel_any(x + i, y + i, e - i); },
               kShareAlign);
}

// ---- GEMM

void CpuBackend::gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, In a,
                      std::int64_t lda, In b, std::int64_t ldb, float beta, Out c, std::int64_t ldc) {
  // bfloat16 A and B run as bf16 products where the CPU has bf16 instructions; any other mix with bfloat16 widens.
  const bool native_bf16 =
      a.dtype == DType::bfloat16 && b.dtype == DType::bfloat16 && cpu::bf16_gemm_is_native();
  if (!native_bf16 && (a.dtype != DType::float32 || b.dtype != DType::float32 || c.dtype != DType::float32))
    return gemm_widened(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  detail::check_gemm("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  GemmCall g;
  g.trans_a = trans_a, g.trans_b = trans_b, g.m = m, g.n = n, g.k = k, g.alpha = alpha, g.beta = beta;
  g.a = a.data, g.lda = lda, g.b = b.data, g.ldb = ldb, g.c = c.data, g.ldc = ldc;
  g.ab_type = a.dtype, g.c_type = c.dtype;
  cpu::gemm(g);
}

void CpuBackend::gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                                      float alpha, const float* a, std::int64_t lda, std::int64_t stride_a,
                                      const float* b, std::int64_t ldb, std::int64_t stride_b, float beta, float* c,
                                      std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  detail::check_gemm("gemm_strided_batched", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (batch < 0) throw Error("gemm_strided_batched: negative batch " + std::to_string(batch));
  GemmCall g;
  g.trans_a = trans_a, g.trans_b = trans_b, g.m = m, g.n = n, g.k = k, g.alpha = alpha, g.beta = beta;
  g.a = a, g.lda = lda, g.stride_a = stride_a, g.b = b, g.ldb = ldb, g.stride_b = stride_b;
  g.c = c, g.ldc = ldc, g.stride_c = stride_c, g.batch = batch;
  cpu::gemm(g);
}

}  // namespace libpipe::cpu
