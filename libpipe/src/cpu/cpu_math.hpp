// Scalar building blocks of the CPU backend's loops, written so that GCC
// vectorises the loops that call them: no libm calls (expf and tanhf stay
// scalar without -ffast-math), no branches, and float reductions spread over
// independent partial sums (GCC will not reorder a single float accumulator).
#pragma once

#include <cstdint>

// Hot loops are compiled twice, for AVX2 + FMA (x86-64-v3) and for the baseline, and the loader picks one
// per machine (GCC function multiversioning): fast on today's servers without -march, which would tie the
// binary to the build machine's CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && !defined(PIPE_NO_CLONES)
#define PIPE_CPU_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PIPE_CPU_KERNEL
#endif

namespace libpipe::cpu {

// Partial sums per reduction: two AVX registers or four SSE ones.
constexpr int kLanes = 16;

inline float bits_to_float(std::int32_t i) { return __builtin_bit_cast(float, i); }
inline std::int32_t float_to_bits(float f) { return __builtin_bit_cast(std::int32_t, f); }

// Branch-free min/max (compile to minps/maxps).
inline float minf(float a, float b) { return a < b ? a : b; }
inline float maxf(float a, float b) { return a > b ? a : b; }

// exp(x) to about 2 ulp on [-87.3, 88.3], clamped outside (so exp of a very
// negative number is ~1e-38, not 0: harmless in sums, and never a denormal).
// Cody-Waite reduction x = n ln2 + f, |f| <= ln2/2, Cephes' polynomial for e^f.
// (The clamp before the integer tricks vectorises only with -fno-trapping-math,
// which the CPU backend's files are built with.)
inline float fast_exp(float x) {
  x = minf(maxf(x, -87.3f), 88.3f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
  const float r = x * 1.44269504088896341f + magic;
  const float n = r - magic;
  const std::int32_t ni = float_to_bits(r) - float_to_bits(magic);
  float f = x - n * 0.693359375f;  // ln2 in two parts, the first exact in few bits
  f = f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  return p * bits_to_float((ni + 127) << 23);
}

// GELU, tanh form, written as x * sigmoid(2u) = 0.5 x (1 + tanh u) with
// u = sqrt(2/pi) (x + 0.044715 x^3): one exp and one division, exact at both tails.
constexpr float kGeluS = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

inline float gelu_sigmoid(float x) {
  const float u = kGeluS * (x + kGeluC * x * x * x);
  const float z = minf(-2.0f * u, 80.0f);  // keeps 1/(1+e^z) a normal float
  return 1.0f / (1.0f + fast_exp(z));
}

inline float gelu(float x) { return x * gelu_sigmoid(x); }

// d gelu / dx = s + 2 x s (1 - s) u', s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
inline float gelu_grad(float x) {
  const float s = gelu_sigmoid(x);
  const float du = kGeluS * (1.0f + 3.0f * kGeluC * x * x);
  return s + 2.0f * x * s * (1.0f - s) * du;
}

// ---- reductions over one row

inline float row_max(const float* x, std::int64_t n) {
  float acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = x[0];
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] = maxf(acc[j], x[i + j]);
  float m = x[0];
  for (; i < n; ++i) m = maxf(m, x[i]);
  for (int j = 0; j < kLanes; ++j) m = maxf(m, acc[j]);
  return m;
}

inline float dot(const float* x, const float* y, std::int64_t n) {
  float acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j] * y[i + j];
  float s = 0.0f;
  for (; i < n; ++i) s += x[i] * y[i];
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// sum (x - c)
inline float sum_minus(const float* x, float c, std::int64_t n) {
  float acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j] - c;
  float s = 0.0f;
  for (; i < n; ++i) s += x[i] - c;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// sum ((x - a) - b)^2
inline float sum_sq_dev(const float* x, float a, float b, std::int64_t n) {
  float acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float d = (x[i + j] - a) - b;
      acc[j] += d * d;
    }
  float s = 0.0f;
  for (; i < n; ++i) {
    const float d = (x[i] - a) - b;
    s += d * d;
  }
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// y[i] = exp(x[i] - m) and returns their sum (the softmax numerator and denominator in one pass).
// y may be x.
inline float exp_shift_sum(const float* x, float m, float* y, std::int64_t n) {
  float acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const float e = fast_exp(x[i + j] - m);
      y[i + j] = e;
      acc[j] += e;
    }
  float s = 0.0f;
  for (; i < n; ++i) {
    const float e = fast_exp(x[i] - m);
    y[i] = e;
    s += e;
  }
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// sum exp(x[i] - m) without storing.
inline float sum_exp_shift(const float* x, float m, std::int64_t n) {
  float acc[kLanes] = {};
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += fast_exp(x[i + j] - m);
  float s = 0.0f;
  for (; i < n; ++i) s += fast_exp(x[i] - m);
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

}  // namespace libpipe::cpu
