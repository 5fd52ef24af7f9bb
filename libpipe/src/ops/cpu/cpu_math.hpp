// Building blocks of the CPU backend's loops, and how they are compiled for
// the machine at hand.
//
// Every kernel is a template on the vector width W (floats per vector) and is
// compiled three times: for AVX-512 (x86-64-v4, W = 16), AVX2 + FMA
// (x86-64-v3, W = 8) and the x86-64 baseline (SSE2, W = 4). The process picks
// one at first use from what the CPU supports (PIPE_CPU_ISA=avx512|avx2|
// baseline overrides it, to test every path on one machine). No -march: one
// binary suits every x86-64 machine, yet runs at full width on each. Measured
// on the project's machines: GELU over 512k floats 740 us baseline, 245 us
// AVX2, 128 us AVX-512.
//
// Elementwise loops are left to GCC's vectoriser (they only need branch-free,
// libm-free bodies: fast_exp and gelu below). Reductions over a row (LayerNorm
// statistics, softmax, cross-entropy) and the attention tiles are written with
// GCC vector extensions, because the vectoriser will not reorder a float sum.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu_backend.hpp"

// Helpers and kernel bodies are forced inline into the per-ISA entry points: a body left out of line would be
// compiled once, for the baseline, and every entry point would call that slow copy.
#define PIPE_INLINE inline __attribute__((always_inline))

// Vectors wider than the baseline's are passed in memory between functions compiled for the baseline
// (GCC's -Wpsabi note, raised where they are inlined). Everything here is inlined into code compiled for the
// vectors' ISA, so the note says nothing; it stays off in the including file (only the CPU backend's files).
#pragma GCC diagnostic ignored "-Wpsabi"

namespace libpipe::cpu {

// ---- instruction sets (Isa and cpu_isa() are in cpu_backend.hpp)

// Defines name##_avx512 / _avx2 / _baseline, each compiling name<W> for its ISA, and name##_any that calls the
// one of this CPU. `params` and `args` are the parenthesised parameter and argument lists.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PIPE_ISA_DISPATCH(name, params, args)                                            \
  __attribute__((target("arch=x86-64-v4"))) void name##_avx512 params { name<16> args; } \
  __attribute__((target("arch=x86-64-v3"))) void name##_avx2 params { name<8> args; }    \
  void name##_baseline params { name<4> args; }                                          \
  void name##_any params {                                                               \
    switch (cpu_isa()) {                                                                 \
      case Isa::avx512:                                                                  \
        return name##_avx512 args;                                                       \
      case Isa::avx2:                                                                    \
        return name##_avx2 args;                                                         \
      default:                                                                           \
        return name##_baseline args;                                                     \
    }                                                                                    \
  }
#else  // other compilers and CPUs: the generic 4-wide vectors (SSE, NEON)
#define PIPE_ISA_DISPATCH(name, params, args) \
  void name##_any params { name<4> args; }
#endif

// ---- vectors of W floats

template <int W>
struct Simd;

template <>
struct Simd<16> {
  typedef float f __attribute__((vector_size(64)));
  typedef std::int32_t i __attribute__((vector_size(64)));
  static PIPE_INLINE i iota() { return i{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}; }
};

template <>
struct Simd<8> {
  typedef float f __attribute__((vector_size(32)));
  typedef std::int32_t i __attribute__((vector_size(32)));
  static PIPE_INLINE i iota() { return i{0, 1, 2, 3, 4, 5, 6, 7}; }
};

template <>
struct Simd<4> {
  typedef float f __attribute__((vector_size(16)));
  typedef std::int32_t i __attribute__((vector_size(16)));
  static PIPE_INLINE i iota() { return i{0, 1, 2, 3}; }
};

template <int W>
using vf = typename Simd<W>::f;
template <int W>
using vi = typename Simd<W>::i;

// A scalar in every lane. Lane 0 shuffled to all lanes, in free functions: GCC 12 makes that one broadcast,
// but the same code in a static member, `f{a, a, ...}` or `f{} + a` inside the tiles a masked insert per lane
// (which made the attention tiles 3x slower than sgemm). Check with objdump after changing these.
template <int W>
PIPE_INLINE vf<W> splat(float a);
template <>
PIPE_INLINE vf<16> splat<16>(float a) {
  const vf<16> v = {a};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}
template <>
PIPE_INLINE vf<8> splat<8>(float a) {
  const vf<8> v = {a};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}
template <>
PIPE_INLINE vf<4> splat<4>(float a) {
  const vf<4> v = {a};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0);
}

template <int W>
PIPE_INLINE vi<W> isplat(std::int32_t a);
template <>
PIPE_INLINE vi<16> isplat<16>(std::int32_t a) {
  const vi<16> v = {a};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}
template <>
PIPE_INLINE vi<8> isplat<8>(std::int32_t a) {
  const vi<8> v = {a};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}
template <>
PIPE_INLINE vi<4> isplat<4>(std::int32_t a) {
  const vi<4> v = {a};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0);
}

template <int W>
PIPE_INLINE vf<W> load(const float* p) {
  vf<W> v;
  std::memcpy(&v, p, sizeof v);  // unaligned load
  return v;
}

template <int W>
PIPE_INLINE void store(float* p, const vf<W>& v) {
  std::memcpy(p, &v, sizeof v);
}

// The last n < W elements of a row, padded with `pad`, so that a row is all whole vectors. Fixed-size loops
// rather than memcpy: a library call per row would cost more than the row.
template <int W>
PIPE_INLINE vf<W> load_tail(const float* p, std::int64_t n, float pad) {
  float buf[W];
  for (int j = 0; j < W; ++j) buf[j] = j < n ? p[j] : pad;
  return load<W>(buf);
}

template <int W>
PIPE_INLINE void store_tail(float* p, const vf<W>& v, std::int64_t n) {
  float buf[W];
  store<W>(buf, v);
  for (int j = 0; j < W; ++j)
    if (j < n) p[j] = buf[j];
}

// Branch-free min/max: minps/maxps under the CPU files' -ffinite-math-only -fno-signed-zeros (without them
// GCC keeps IEEE NaN/-0 semantics with compare-and-blend chains, 2-6x slower in fast_exp).
template <class V>
PIPE_INLINE V minf(const V& a, const V& b) {
  return a < b ? a : b;
}
template <class V>
PIPE_INLINE V maxf(const V& a, const V& b) {
  return a > b ? a : b;
}

// Horizontal sum and max as a tree of halves (log2 W shuffles), not a chain of W - 1 dependent adds: rows here
// are short (C = 128, causal rows of a few dozen), so the chain would cost as much as the row.
PIPE_INLINE float hsum(const Simd<4>::f& v) { return (v[0] + v[2]) + (v[1] + v[3]); }
PIPE_INLINE float hsum(const Simd<8>::f& v) {
  return hsum(Simd<4>::f(__builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7)));
}
PIPE_INLINE float hsum(const Simd<16>::f& v) {
  return hsum(Simd<8>::f(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                         __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15)));
}
PIPE_INLINE float hmax(const Simd<4>::f& v) { return maxf(maxf(v[0], v[2]), maxf(v[1], v[3])); }
PIPE_INLINE float hmax(const Simd<8>::f& v) {
  return hmax(Simd<4>::f(
      maxf<Simd<4>::f>(__builtin_shufflevector(v, v, 0, 1, 2, 3), __builtin_shufflevector(v, v, 4, 5, 6, 7))));
}
PIPE_INLINE float hmax(const Simd<16>::f& v) {
  return hmax(Simd<8>::f(maxf<Simd<8>::f>(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7),
                                          __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15))));
}

// ---- exp and GELU, for one float or a vector of them

template <class F>
struct IntOf {
  typedef std::int32_t type;  // float
};
template <>
struct IntOf<Simd<16>::f> {
  typedef Simd<16>::i type;
};
template <>
struct IntOf<Simd<8>::f> {
  typedef Simd<8>::i type;
};
template <>
struct IntOf<Simd<4>::f> {
  typedef Simd<4>::i type;
};

// exp(x) to about 2 ulp on [-87.3, 88.3], clamped outside (so exp of a very negative number is ~1e-38, not 0:
// harmless in sums, and never a denormal). Cody-Waite reduction x = n ln2 + f, |f| <= ln2/2, Cephes'
// polynomial for e^f. (The clamp before the integer tricks vectorises only with -fno-trapping-math, which the
// CPU backend's files are built with; see libpipe/CMakeLists.txt.) Constants are scalars: GCC folds their
// broadcast, unlike that of run-time scalars (see splat).
// exp_in_range is the body, for x already in [-87.3, 88.3]: callers that bound x themselves skip the clamp.
template <class F>
PIPE_INLINE F exp_in_range(const F& x) {
  using I = typename IntOf<F>::type;
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

template <class F>
PIPE_INLINE F fast_exp(const F& x) {
  return exp_in_range(minf<F>(maxf<F>(x, F{} - 87.3f), F{} + 88.3f));
}

// GELU, tanh form, written as x * sigmoid(2u) = 0.5 x (1 + tanh u) with u = sqrt(2/pi) (x + 0.044715 x^3):
// one exp and one division, exact at both tails.
constexpr float kGeluS = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

PIPE_INLINE float gelu_sigmoid(float x) {
  const float u = kGeluS * (x + kGeluC * x * x * x);
  // At most 80 keeps 1/(1+e^z) a normal float; at least -87.3 is fast_exp's own bound. Two clamps where
  // fast_exp(min(z, 80)) made three: the same value, and gpt-tiny's bias + GELU epilogue 412 -> 350 us.
  const float z = maxf(minf(-2.0f * u, 80.0f), -87.3f);
  return 1.0f / (1.0f + exp_in_range(z));
}

PIPE_INLINE float gelu(float x) { return x * gelu_sigmoid(x); }

// 1 / (1 + e^-a) with fast_exp, clamped as gelu_sigmoid is (exact at both tails, never a denormal): SwiGLU's gate.
PIPE_INLINE float sigmoid(float a) { return 1.0f / (1.0f + exp_in_range(maxf(minf(-a, 80.0f), -87.3f))); }

// d gelu / dx = s + 2 x s (1 - s) u', s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
PIPE_INLINE float gelu_grad(float x) {
  const float s = gelu_sigmoid(x);
  const float du = kGeluS * (1.0f + 3.0f * kGeluC * x * x);
  return s + 2.0f * x * s * (1.0f - s) * du;
}

// ---- reductions over one row (n >= 1)

template <int W>
PIPE_INLINE float row_max(const float* x, std::int64_t n) {
  vf<W> acc = splat<W>(x[0]);
  std::int64_t i = 0;
  for (; i + W <= n; i += W) acc = maxf(acc, load<W>(x + i));
  if (i < n) acc = maxf(acc, load_tail<W>(x + i, n - i, x[0]));
  return hmax(acc);
}

// sum (x - c)
template <int W>
PIPE_INLINE float sum_minus(const float* x, float c, std::int64_t n) {
  const vf<W> cv = splat<W>(c);
  vf<W> acc = {};
  std::int64_t i = 0;
  for (; i + W <= n; i += W) acc += load<W>(x + i) - cv;
  if (i < n) acc += load_tail<W>(x + i, n - i, c) - cv;
  return hsum(acc);
}

// sum ((x - a) - b)^2
template <int W>
PIPE_INLINE float sum_sq_dev(const float* x, float a, float b, std::int64_t n) {
  const vf<W> av = splat<W>(a), bv = splat<W>(b);
  vf<W> acc = {};
  std::int64_t i = 0;
  for (; i + W <= n; i += W) {
    const vf<W> d = (load<W>(x + i) - av) - bv;
    acc += d * d;
  }
  if (i < n) {
    float d[W];  // exact zeros in the padding
    for (int j = 0; j < W; ++j) d[j] = j < n - i ? (x[i + j] - a) - b : 0.0f;
    const vf<W> v = load<W>(d);
    acc += v * v;
  }
  return hsum(acc);
}

// x[i] - m for the last n < W elements, padded with -1000 (whose exp is ~1e-38: nothing next to the row
// maximum's 1, whatever the magnitude of m).
template <int W>
PIPE_INLINE vf<W> shifted_tail(const float* x, float m, std::int64_t n) {
  float buf[W];
  for (int j = 0; j < W; ++j) buf[j] = j < n ? x[j] - m : -1000.0f;
  return load<W>(buf);
}

// y[i] = exp(x[i] - m) and returns their sum (the softmax numerator and denominator in one pass). y may be x.
template <int W>
PIPE_INLINE float exp_shift_sum(const float* x, float m, float* y, std::int64_t n) {
  const vf<W> mv = splat<W>(m);
  vf<W> acc = {};
  std::int64_t i = 0;
  for (; i + W <= n; i += W) {
    const vf<W> e = fast_exp(load<W>(x + i) - mv);
    store<W>(y + i, e);
    acc += e;
  }
  if (i < n) {
    const vf<W> e = fast_exp(shifted_tail<W>(x + i, m, n - i));
    store_tail<W>(y + i, e, n - i);
    acc += e;
  }
  return hsum(acc);
}

// sum exp(x[i] - m) without storing.
template <int W>
PIPE_INLINE float sum_exp_shift(const float* x, float m, std::int64_t n) {
  const vf<W> mv = splat<W>(m);
  vf<W> acc = {};
  std::int64_t i = 0;
  for (; i + W <= n; i += W) acc += fast_exp(load<W>(x + i) - mv);
  if (i < n) acc += fast_exp(shifted_tail<W>(x + i, m, n - i));
  return hsum(acc);
}

// y[i] *= s
template <int W>
PIPE_INLINE void scale_row(float* y, float s, std::int64_t n) {
  const vf<W> sv = splat<W>(s);
  std::int64_t i = 0;
  for (; i + W <= n; i += W) store<W>(y + i, load<W>(y + i) * sv);
  for (; i < n; ++i) y[i] *= s;
}

}  // namespace libpipe::cpu
