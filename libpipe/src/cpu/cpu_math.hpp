// Building blocks of the CPU backend's loops. Elementwise loops are left to
// GCC's vectoriser (they need only branch-free, libm-free bodies: fast_exp
// and gelu below); reductions over one row (LayerNorm statistics, softmax,
// cross-entropy) are written with GCC vector extensions, 16 floats at a time,
// because the vectoriser will not reorder a float sum and its own attempts on
// hand-split partial sums were slower than scalar code. The vector type is
// lowered to whatever the clone targets: one AVX-512 register, two AVX2 ones
// or four SSE ones.
#pragma once

#include <cstdint>
#include <cstring>

// Hot loops are compiled three times, for AVX-512 (x86-64-v4), AVX2 + FMA (x86-64-v3) and the baseline,
// and the loader picks one per machine (GCC function multiversioning): fast on today's servers without
// -march=native, which would tie the binary to the build machine's CPU. Measured on the project's machines
// (pipe-bench ops): GELU over 512k floats 600 us baseline, 245 us v3, 128 us v4.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && !defined(PIPE_NO_CLONES)
#define PIPE_CPU_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PIPE_CPU_KERNEL
#endif

// Helpers are forced inline: a helper left out of line is compiled once, for the baseline, and every clone
// would call that slow copy.
#define PIPE_INLINE inline __attribute__((always_inline))

// 64-byte vectors are passed in memory when a function taking one is not inlined into an AVX-512 clone
// (GCC's -Wpsabi note, raised where they are inlined); all of these are forced inline, so the note says
// nothing here. Left off for the rest of the including file (only the CPU backend's files include this).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace libpipe::cpu {

// ---- 16-float vectors

constexpr int kWidth = 16;
typedef float vf __attribute__((vector_size(kWidth * sizeof(float))));
typedef std::int32_t vi __attribute__((vector_size(kWidth * sizeof(std::int32_t))));

PIPE_INLINE vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);  // unaligned load
  return v;
}
PIPE_INLINE void store(float* p, const vf& v) { std::memcpy(p, &v, sizeof v); }
// Lane 0 shuffled to all lanes: GCC 12 makes this one broadcast, but `vf{a, a, ...}` or `vf{} + a` sixteen
// masked lane inserts (which made the attention tiles 3x slower than sgemm).
PIPE_INLINE vf splat(float a) {
  const vf v = {a};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}
PIPE_INLINE vi isplat(std::int32_t a) {
  const vi v = {a};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

// The last n < kWidth elements of a row, padded with `pad`, so that a row is all whole vectors. Fixed-size
// loops rather than memcpy: a library call per row would cost more than the row.
PIPE_INLINE vf load_tail(const float* p, std::int64_t n, float pad) {
  float buf[kWidth];
  for (int j = 0; j < kWidth; ++j) buf[j] = j < n ? p[j] : pad;
  return load(buf);
}
PIPE_INLINE void store_tail(float* p, const vf& v, std::int64_t n) {
  float buf[kWidth];
  store(buf, v);
  for (int j = 0; j < kWidth; ++j)
    if (j < n) p[j] = buf[j];
}

typedef float vf8 __attribute__((vector_size(8 * sizeof(float))));
typedef float vf4 __attribute__((vector_size(4 * sizeof(float))));

// Horizontal sum and max as a tree of halves (3 shuffles), not a chain of 15 dependent adds: rows here are
// short (C = 128, causal rows of a few dozen), so the chain would cost as much as the row.
PIPE_INLINE float hsum(const vf& v) {
  const vf8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const vf4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// Branch-free min/max: minps/maxps under the CPU files' -ffinite-math-only -fno-signed-zeros (without
// them GCC keeps IEEE NaN/-0 semantics with compare-and-blend chains, 2-6x slower in fast_exp).
PIPE_INLINE float minf(float a, float b) { return a < b ? a : b; }
PIPE_INLINE float maxf(float a, float b) { return a > b ? a : b; }
PIPE_INLINE vf minf(const vf& a, const vf& b) { return a < b ? a : b; }
PIPE_INLINE vf maxf(const vf& a, const vf& b) { return a > b ? a : b; }
PIPE_INLINE vf8 maxf(const vf8& a, const vf8& b) { return a > b ? a : b; }
PIPE_INLINE vf4 maxf(const vf4& a, const vf4& b) { return a > b ? a : b; }

PIPE_INLINE float hmax(const vf& v) {
  const vf8 a = maxf(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7),
                     __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
  const vf4 b = maxf(__builtin_shufflevector(a, a, 0, 1, 2, 3), __builtin_shufflevector(a, a, 4, 5, 6, 7));
  return maxf(maxf(b[0], b[2]), maxf(b[1], b[3]));
}

// ---- exp and GELU, for one float or a vector of them

template <class F>
struct IntOf;
template <>
struct IntOf<float> {
  using type = std::int32_t;
};
template <>
struct IntOf<vf> {
  using type = vi;
};

// exp(x) to about 2 ulp on [-87.3, 88.3], clamped outside (so exp of a very
// negative number is ~1e-38, not 0: harmless in sums, and never a denormal).
// Cody-Waite reduction x = n ln2 + f, |f| <= ln2/2, Cephes' polynomial for e^f.
// (The clamp before the integer tricks vectorises only with -fno-trapping-math,
// which the CPU backend's files are built with; see libpipe/CMakeLists.txt.)
template <class F>
PIPE_INLINE F fast_exp(const F& x_in) {
  using I = typename IntOf<F>::type;
  const F x = minf(maxf(x_in, F{} - 87.3f), F{} + 88.3f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
  const F r = x * 1.44269504088896341f + magic;
  const F n = r - magic;
  const I ni = __builtin_bit_cast(I, r) - __builtin_bit_cast(std::int32_t, magic);
  F f = x - n * 0.693359375f;  // ln2 in two parts, the first exact in few bits
  f = f + n * 2.12194440e-4f;
  F p = F{} + 1.9875691500e-4f;
  p = p * f + 1.3981999507e-3f;
  p = p * f + 8.3334519073e-3f;
  p = p * f + 4.1665795894e-2f;
  p = p * f + 1.6666665459e-1f;
  p = p * f + 5.0000001201e-1f;
  p = p * f * f + f + 1.0f;
  return p * __builtin_bit_cast(F, (ni + 127) << 23);
}

// GELU, tanh form, written as x * sigmoid(2u) = 0.5 x (1 + tanh u) with
// u = sqrt(2/pi) (x + 0.044715 x^3): one exp and one division, exact at both tails.
constexpr float kGeluS = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

PIPE_INLINE float gelu_sigmoid(float x) {
  const float u = kGeluS * (x + kGeluC * x * x * x);
  const float z = minf(-2.0f * u, 80.0f);  // keeps 1/(1+e^z) a normal float
  return 1.0f / (1.0f + fast_exp(z));
}

PIPE_INLINE float gelu(float x) { return x * gelu_sigmoid(x); }

// d gelu / dx = s + 2 x s (1 - s) u', s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
PIPE_INLINE float gelu_grad(float x) {
  const float s = gelu_sigmoid(x);
  const float du = kGeluS * (1.0f + 3.0f * kGeluC * x * x);
  return s + 2.0f * x * s * (1.0f - s) * du;
}

// ---- reductions over one row (n >= 1)

PIPE_INLINE float row_max(const float* x, std::int64_t n) {
  vf acc = splat(x[0]);
  std::int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) acc = maxf(acc, load(x + i));
  if (i < n) acc = maxf(acc, load_tail(x + i, n - i, x[0]));
  return hmax(acc);
}

PIPE_INLINE float dot(const float* x, const float* y, std::int64_t n) {
  vf acc = {};
  std::int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) acc += load(x + i) * load(y + i);
  if (i < n) acc += load_tail(x + i, n - i, 0.0f) * load_tail(y + i, n - i, 0.0f);
  return hsum(acc);
}

// sum (x - c)
PIPE_INLINE float sum_minus(const float* x, float c, std::int64_t n) {
  const vf cv = splat(c);
  vf acc = {};
  std::int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) acc += load(x + i) - cv;
  if (i < n) acc += load_tail(x + i, n - i, c) - c;
  return hsum(acc);
}

// sum ((x - a) - b)^2
PIPE_INLINE float sum_sq_dev(const float* x, float a, float b, std::int64_t n) {
  const vf av = splat(a), bv = splat(b);
  vf acc = {};
  std::int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) {
    const vf d = (load(x + i) - av) - bv;
    acc += d * d;
  }
  if (i < n) {
    float d[kWidth];  // exact zeros in the padding
    for (int j = 0; j < kWidth; ++j) d[j] = j < n - i ? (x[i + j] - a) - b : 0.0f;
    const vf v = load(d);
    acc += v * v;
  }
  return hsum(acc);
}

// x[i] - m for the last n < kWidth elements, padded with -1000 (whose exp is ~1e-38: nothing next to the
// row maximum's 1, whatever the magnitude of m).
PIPE_INLINE vf shifted_tail(const float* x, float m, std::int64_t n) {
  float buf[kWidth];
  for (int j = 0; j < kWidth; ++j) buf[j] = j < n ? x[j] - m : -1000.0f;
  return load(buf);
}

// y[i] = exp(x[i] - m) and returns their sum (the softmax numerator and denominator in one pass).
// y may be x.
PIPE_INLINE float exp_shift_sum(const float* x, float m, float* y, std::int64_t n) {
  const vf mv = splat(m);
  vf acc = {};
  std::int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) {
    const vf e = fast_exp(load(x + i) - mv);
    store(y + i, e);
    acc += e;
  }
  if (i < n) {
    const vf e = fast_exp(shifted_tail(x + i, m, n - i));
    store_tail(y + i, e, n - i);
    acc += e;
  }
  return hsum(acc);
}

// sum exp(x[i] - m) without storing.
PIPE_INLINE float sum_exp_shift(const float* x, float m, std::int64_t n) {
  const vf mv = splat(m);
  vf acc = {};
  std::int64_t i = 0;
  for (; i + kWidth <= n; i += kWidth) acc += fast_exp(load(x + i) - mv);
  if (i < n) acc += fast_exp(shifted_tail(x + i, m, n - i));
  return hsum(acc);
}

// y[i] *= s
PIPE_INLINE void scale_row(float* y, float s, std::int64_t n) {
  std::int64_t i = 0;
  const vf sv = splat(s);
  for (; i + kWidth <= n; i += kWidth) store(y + i, load(y + i) * sv);
  for (; i < n; ++i) y[i] *= s;
}

}  // namespace libpipe::cpu
