// How the device tests compare a kernel's results with the CPU backend's
// (test_cuda_ops on a GPU, test_cuda_kernels_emulated on the CPU emulator):
// random inputs, a tolerance per kind of op with its reason, the comparison
// itself, and the table of largest differences printed at the end of a run.
#pragma once

#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "pipe/bfloat16.hpp"

namespace device_compare {

using Floats = std::vector<float>;
using Ints = std::vector<std::int32_t>;
using Halves = std::vector<std::uint16_t>;  // bfloat16 bits

inline Halves to_halves(const Floats& v) {
  Halves h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = libpipe::float_to_bf16(v[i]);
  return h;
}

inline Floats from_halves(const Halves& h) {
  Floats v(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) v[i] = libpipe::bf16_to_float(h[i]);
  return v;
}

inline std::mt19937& rng() {
  static std::mt19937 gen(20241129);
  return gen;
}

inline Floats randoms(std::int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  Floats v(static_cast<std::size_t>(n));
  for (float& x : v) x = dist(rng());
  return v;
}

inline Ints random_ints(std::int64_t n, int lo, int hi) {
  std::uniform_int_distribution<int> dist(lo, hi);
  Ints v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng());
  return v;
}

// Bit for bit (so -0 differs from 0, and NaN equals the same NaN); empty vectors are equal.
inline bool same_bits(const Floats& a, const Floats& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

inline std::string dims(std::initializer_list<std::int64_t> v) {
  std::string s;
  for (auto x : v) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}

// What flash attention saves for backward, computed in double from the attention's inputs and the reference
// output: per row of head (b, h), [B H, T, D + 1], the output row, then log sum_{j <= i} exp(q_i . k_j / sqrt(D)).
inline Floats flash_state_reference(const Floats& qkv, const Floats& out, std::int64_t B, std::int64_t T,
                                    std::int64_t H, std::int64_t D) {
  const std::int64_t C = H * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  auto at = [](const Floats& v, std::int64_t i) { return static_cast<double>(v[static_cast<std::size_t>(i)]); };
  Floats state(static_cast<std::size_t>(B * H * T * (D + 1)));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < T; ++i) {
        float* row = &state[static_cast<std::size_t>(((b * H + h) * T + i) * (D + 1))];
        for (std::int64_t c = 0; c < D; ++c) row[c] = out[static_cast<std::size_t>((b * T + i) * C + h * D + c)];
        std::vector<double> s;
        double mx = -1e300;
        for (std::int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (std::int64_t c = 0; c < D; ++c)
            dot += at(qkv, (b * T + i) * 3 * C + h * D + c) * at(qkv, (b * T + j) * 3 * C + C + h * D + c);
          s.push_back(dot * scale);
          mx = std::max(mx, s.back());
        }
        double sum = 0;
        for (double x : s) sum += std::exp(x - mx);
        row[D] = static_cast<float>(mx + std::log(sum));
      }
  return state;
}

// ---------------------------------------------------------------- tolerances
//
// A device result g passes against the CPU result c when, element by element,
//     |g - c| <= rtol * (|c| + floor * max|c|)
// rtol bounds the relative error of large elements; the floor (a fraction of the largest |c| of the output) gives
// elements near zero an absolute allowance at the output's own scale: results of sums that cancel, or of a
// function near a zero crossing, carry an error of the size of their terms, not of their own size. floor = 1 is a
// normwise comparison (the usual one for GEMMs and reductions).
struct Tol {
  double rtol, floor;
};

// Copies, fills, a + b, y += x, y *= s, y + bias, max(x, 0) and its mask: one IEEE operation per element, the same
// on both devices, so the results must be bit-identical (denormals do not occur in these inputs).
constexpr Tol kExact{0.0, 0.0};
// Elementwise ops through exp / tanh / division (GELU and its derivative): the CPU's fast_exp (about 2 ulp) and the
// CUDA build's --use_fast_math intrinsics (__expf: 2 + 1.16|x| ulp; approximate division and rsqrt) differ by a few
// ulp, about 1e-6 relative; 1e-5 leaves a margin of ten. The floor of 1% of the largest value covers GELU's
// derivative near its zero at x = -0.75, where an error of a few ulp of the terms is large against the result.
constexpr Tol kElementwise{1e-5, 0.01};
// Row ops (LayerNorm, softmax cross-entropy, MSE, the optimizers): the same intrinsics plus a row's mean, variance,
// max and sum reduced in another order; fp32 sums of n terms differ by about sqrt(n) * 6e-8 of their magnitude
// (2e-6 for n = 768), and FMA contraction on the GPU moves single roundings by an ulp. 1e-5 with a floor of 10% of
// the output's scale (LayerNorm outputs cancel when the bias is added, the optimizers' moments are small).
constexpr Tol kRow{1e-5, 0.1};
// Reductions over many terms of both signs (bias_grad, LayerNorm's weight gradient, the embedding's scatter-add,
// sum_squares): the result may cancel to near zero while its error stays at eps times the terms, so the comparison
// is normwise at 1e-5 (the reduction orders differ; the error is ~sqrt(n) eps ~ 1e-6 for these n).
constexpr Tol kReduce{1e-5, 1.0};
// Outputs stored in bfloat16 (mixed precision): one final rounding may fall the other way when the fp32 values
// before it differ in their last bits (another exp or summation order): 2^-8 = 3.9e-3 of the element, one bfloat16
// ulp; 8e-3, with a floor for values near 0.
constexpr Tol kBf16Out{8e-3, 0.01};

// ---------------------------------------------------------------- comparison and the summary

struct Worst {
  double max_diff = 0;      // largest |device - cpu|
  double max_rel = 0;       // largest |device - cpu| / max|cpu| (normwise)
  double of_tolerance = 0;  // largest |device - cpu| / bound
  Tol tol{0, 0};
  int checks = 0;
};

inline std::map<std::string, Worst>& summary() {
  static std::map<std::string, Worst> s;
  return s;
}

// What the device side is called in messages and the summary ("cuda", "emulated cuda"); set once by each program.
inline std::string& device_label() {
  static std::string label = "cuda";
  return label;
}

// Compares a device output with the CPU's; `op` groups the summary line, `what` says which case. `term_scale`:
// where an output is a difference of much larger terms, their magnitude, which the floor then follows (the
// output's own largest value is rounding noise there).
inline void compare(const std::string& op, const std::string& what, const Floats& c, const Floats& g, Tol tol,
                    double term_scale = 0) {
  BOOST_TEST_REQUIRE(c.size() == g.size(), op << " " << what << ": size " << c.size() << " vs " << g.size());
  double scale = 0;
  for (float x : c)
    if (std::isfinite(x)) scale = std::max(scale, static_cast<double>(std::fabs(x)));
  // An output that is all zero on the CPU (a loss over one class, a LayerNorm gradient over one column) has no
  // scale of its own: the inputs' (about 1) stands in, so the device may be off by rtol * floor there, not by 0.
  if (scale == 0) scale = 1;
  scale = std::max(scale, term_scale);
  double max_diff = 0, worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (std::isnan(c[i]) && std::isnan(g[i])) continue;  // e.g. padding that neither may touch
    const double diff = std::fabs(static_cast<double>(g[i]) - c[i]);
    const double bound = tol.rtol * (std::fabs(c[i]) + tol.floor * scale);
    const double ratio = !std::isfinite(diff) ? 1e300 : diff == 0 ? 0.0 : bound > 0 ? diff / bound : 1e300;
    if (std::isfinite(diff)) max_diff = std::max(max_diff, diff);
    if (ratio > worst) worst = ratio, at = i;
  }
  const double rel = max_diff / scale;
  BOOST_TEST_MESSAGE(op << " " << what << ": max |diff| " << max_diff << ", normwise " << rel << ", " << worst
                        << " of the tolerance");
  if (!c.empty())  // the message reads c[at] and g[at] whether or not the check fails
    BOOST_TEST(worst <= 1.0, op << " " << what << ": element " << at << " is " << g[at] << " on " << device_label()
                                << ", " << c[at] << " on cpu (max |diff| " << max_diff << ", normwise " << rel
                                << ", rtol " << tol.rtol << ", floor " << tol.floor << ")");
  Worst& w = summary()[op];
  w.max_diff = std::max(w.max_diff, max_diff);
  w.max_rel = std::max(w.max_rel, rel);
  w.of_tolerance = std::max(w.of_tolerance, std::min(worst, 1e9));
  if (w.checks == 0 || tol.rtol > w.tol.rtol) w.tol = tol;  // the loosest used (exact cases are part of most ops)
  ++w.checks;
}

// The table of largest differences, printed once at the end of the run (a Boost.Test global fixture).
struct PrintSummary {
  ~PrintSummary() {
    if (summary().empty()) return;
    const std::string title = "op (" + device_label() + " vs cpu)";
    std::printf("\n%-36s %7s %12s %12s %9s %10s %7s\n", title.c_str(), "checks", "max |diff|", "normwise", "rtol",
                "floor", "of tol");
    for (const auto& [op, w] : summary())
      std::printf("%-36s %7d %12.3g %12.3g %9.1g %10.2g %6.0f%%\n", op.c_str(), w.checks, w.max_diff, w.max_rel,
                  w.tol.rtol, w.tol.floor, 100 * w.of_tolerance);
    std::fflush(stdout);
  }
};

}  // namespace device_compare
