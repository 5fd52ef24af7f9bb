// The CPU backend's GEMMs (oneDNN, libpipe/src/ops/cpu/cpu_gemm.cpp) through the Backend interface: results
// against a double-precision reference for every transpose, padded leading dimensions, beta = 0 over garbage
// (never read), beta = 1, k = 0 and strided batches; and the property the bit-identical training tests rest on:
// the same product gives the same bits wherever its operands lie in memory (any alignment), call after call, at
// 1 and at 2 threads; bfloat16 operands into float32 and bfloat16 C (oneDNN's bf16 matmul where the CPU has bf16
// instructions, else widened to float32), and that the native path is taken exactly where the CPU has them. Also
// pipe/cpu_info.hpp: the library's name and the slow-start warning's arithmetic.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE cpu_gemm
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fstream>

#include "pipe/backend.hpp"
#include "pipe/bfloat16.hpp"
#include "pipe/cpu_info.hpp"

namespace {

using Floats = std::vector<float>;

libpipe::Backend& cpu() { return libpipe::backend_for(libpipe::Device::cpu); }

Floats random_floats(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Floats v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

struct Shape {
  bool ta, tb;
  std::int64_t m, n, k;
};

// The shapes a training step runs (forward NT, input gradient NN, weight gradient TN) at small and gpt-tiny
// sizes, odd sizes that leave remainders in every blocking, and products wide enough (n >= 768) that an AVX-512
// CPU runs them on dnnl_sgemm instead of brgemm (cpu_gemm.cpp's kBrgemmNarrowerThan).
const Shape kShapes[] = {{false, true, 64, 96, 32},     {false, false, 64, 32, 96},    {true, false, 96, 32, 64},
                         {false, true, 1024, 384, 128}, {true, false, 384, 128, 1024}, {false, false, 37, 53, 29},
                         {true, true, 17, 5, 70},       {false, true, 1, 300, 7},      {false, false, 48, 800, 40},
                         {true, false, 40, 1024, 56}};

// C = alpha op(A) op(B) + beta C in double, row-major at the given leading dimensions.
std::vector<double> reference(const Shape& s, float alpha, const float* a, std::int64_t lda, const float* b,
                              std::int64_t ldb, float beta, const float* c, std::int64_t ldc) {
  std::vector<double> out(static_cast<std::size_t>(s.m * s.n));
  for (std::int64_t i = 0; i < s.m; ++i)
    for (std::int64_t j = 0; j < s.n; ++j) {
      double acc = 0;
      for (std::int64_t p = 0; p < s.k; ++p)
        acc += static_cast<double>(s.ta ? a[p * lda + i] : a[i * lda + p]) * (s.tb ? b[j * ldb + p] : b[p * ldb + j]);
      out[static_cast<std::size_t>(i * s.n + j)] = alpha * acc + (beta == 0.0f ? 0.0 : beta * c[i * ldc + j]);
    }
  return out;
}

// Operands of shape s at leading dimensions padded by `pad`, placed `offset` floats into their buffers.
struct Operands {
  std::int64_t lda, ldb, ldc;
  Floats a, b, c;
  std::size_t offset;
  const float* pa() const { return a.data() + offset; }
  const float* pb() const { return b.data() + offset; }
  float* pc() { return c.data() + offset; }
};

Operands operands(const Shape& s, std::int64_t pad, std::size_t offset, float c_fill) {
  Operands o;
  o.offset = offset;
  o.lda = (s.ta ? s.m : s.k) + pad;
  o.ldb = (s.tb ? s.k : s.n) + pad;
  o.ldc = s.n + pad;
  const std::int64_t a_rows = s.ta ? s.k : s.m, b_rows = s.tb ? s.n : s.k;
  o.a = Floats(offset, 0.0f);
  o.b = Floats(offset, 0.0f);
  const Floats a = random_floats(static_cast<std::size_t>(a_rows * o.lda), 11);
  const Floats b = random_floats(static_cast<std::size_t>(b_rows * o.ldb), 12);
  o.a.insert(o.a.end(), a.begin(), a.end());
  o.b.insert(o.b.end(), b.begin(), b.end());
  o.c = Floats(offset + static_cast<std::size_t>(s.m * o.ldc), c_fill);
  return o;
}

// The m x n block of C, row by row, as bits.
std::vector<std::uint32_t> bits(const Operands& o, const Shape& s) {
  std::vector<std::uint32_t> out;
  for (std::int64_t i = 0; i < s.m; ++i)
    for (std::int64_t j = 0; j < s.n; ++j) {
      std::uint32_t u;
      std::memcpy(&u, &o.c[o.offset + static_cast<std::size_t>(i * o.ldc + j)], sizeof u);
      out.push_back(u);
    }
  return out;
}

void run(Operands& o, const Shape& s, float alpha, float beta) {
  cpu().gemm(s.ta, s.tb, s.m, s.n, s.k, alpha, o.pa(), o.lda, o.pb(), o.ldb, beta, o.pc(), o.ldc);
}

}  // namespace

BOOST_AUTO_TEST_CASE(library_is_named) {
  const std::string lib = libpipe::cpu_gemm_library();
  const char* env = std::getenv("PIPE_CPU_GEMM");
  if (env == nullptr || *env == '\0' || std::string(env) == "onednn")
    BOOST_TEST(lib.rfind("oneDNN ", 0) == 0, lib);
  else
    BOOST_TEST(lib.rfind("OpenBLAS ", 0) == 0, lib);
  BOOST_TEST(lib.find('(') != std::string::npos, lib);  // the ISA or core it dispatched to
}

// On more than one thread every product runs on oneDNN: OpenBLAS's thread pool beside oneDNN's OpenMP threads
// would contend for the same cores (cpu_gemm.cpp).
BOOST_AUTO_TEST_CASE(several_threads_run_on_one_library) {
  libpipe::set_cpu_threads(2);
  const std::string lib = libpipe::cpu_gemm_library();
  libpipe::set_cpu_threads(1);
  const char* env = std::getenv("PIPE_CPU_GEMM");
  if (env == nullptr || *env == '\0' || std::string(env) == "auto")
    BOOST_TEST(lib.find("OpenBLAS") == std::string::npos, lib);
}

BOOST_AUTO_TEST_CASE(matches_double_reference) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const Shape& s : kShapes)
    for (std::int64_t pad : {0, 3})
      for (float beta : {0.0f, 1.0f, 0.5f}) {
        // beta = 0: C holds NaN garbage, which must never be read.
        Operands o = operands(s, pad, 0, beta == 0.0f ? nan : 0.25f);
        const Floats c_before = o.c;
        const float alpha = beta == 0.5f ? -2.0f : 1.0f;
        const std::vector<double> want = reference(s, alpha, o.pa(), o.lda, o.pb(), o.ldb, beta, o.pc(), o.ldc);
        run(o, s, alpha, beta);
        double worst = 0;
        for (std::int64_t i = 0; i < s.m; ++i)
          for (std::int64_t j = 0; j < s.n; ++j) {
            const double got = o.c[static_cast<std::size_t>(i * o.ldc + j)];
            const double err = std::fabs(got - want[static_cast<std::size_t>(i * s.n + j)]);
            worst = std::isfinite(got) ? std::max(worst, err) : std::numeric_limits<double>::infinity();
          }
        // float32 accumulation of k products of magnitude <= 1: a few ulps of k.
        BOOST_TEST(worst <= 1e-5 * static_cast<double>(s.k + 1),
                   "m=" << s.m << " n=" << s.n << " k=" << s.k << " pad=" << pad << " beta=" << beta << ": " << worst);
        // The padding between rows of C is left alone.
        for (std::int64_t i = 0; i < s.m; ++i)
          for (std::int64_t j = s.n; j < o.ldc; ++j) {
            const std::size_t at = static_cast<std::size_t>(i * o.ldc + j);
            BOOST_TEST(std::memcmp(&o.c[at], &c_before[at], sizeof(float)) == 0);
          }
      }
}

BOOST_AUTO_TEST_CASE(k_zero_scales_c) {
  Floats c(12, 3.0f);
  cpu().gemm(false, false, 3, 4, 0, 1.0f, nullptr, 1, nullptr, 4, 0.5f, c.data(), 4);
  for (float x : c) BOOST_TEST(x == 1.5f);
  cpu().gemm(false, false, 3, 4, 0, 1.0f, nullptr, 1, nullptr, 4, 0.0f, c.data(), 4);
  for (float x : c) BOOST_TEST(x == 0.0f);
}

// pipe-bench train's GEMM figures come from these totals: each product counts once with its 2 m n k operations
// (a strided batch once, with all of its products' operations), and the time spent in it.
BOOST_AUTO_TEST_CASE(totals_count_every_product) {
  const Floats a = random_floats(64 * 32, 31), b = random_floats(32 * 48, 32);
  Floats c(64 * 48 * 3);
  const libpipe::GemmTotals before = libpipe::cpu_gemm_totals();
  cpu().gemm(false, false, 64, 48, 32, 1.0f, a.data(), 32, b.data(), 48, 0.0f, c.data(), 48);
  const libpipe::GemmTotals one = libpipe::cpu_gemm_totals();
  BOOST_TEST(one.calls == before.calls + 1);
  BOOST_TEST(one.flops - before.flops == 2.0 * 64 * 48 * 32);
  BOOST_TEST(one.seconds > before.seconds);
  cpu().gemm_strided_batched(false, false, 16, 48, 32, 1.0f, a.data(), 32, 16 * 32, b.data(), 48, 0, 0.0f, c.data(),
                             48, 16 * 48, 3);
  const libpipe::GemmTotals batch = libpipe::cpu_gemm_totals();
  BOOST_TEST(batch.calls == one.calls + 1);
  BOOST_TEST(batch.flops - one.flops == 3 * 2.0 * 16 * 48 * 32);
}

BOOST_AUTO_TEST_CASE(strided_batches_match_one_by_one) {
  // Attention's products: heads of [T, D] read from a wider row (leading dimension 3 * H * D), and dense ones.
  const std::int64_t batch = 6, m = 64, n = 64, k = 32;
  for (std::int64_t ld_extra : {0, 96})
    for (bool tb : {false, true}) {
      const std::int64_t lda = k + ld_extra, ldb = (tb ? k : n) + ld_extra, ldc = n;
      const std::int64_t sa = m * lda, sb = (tb ? n : k) * ldb, sc = m * ldc;
      const Floats a = random_floats(static_cast<std::size_t>(batch * sa), 21);
      const Floats b = random_floats(static_cast<std::size_t>(batch * sb), 22);
      Floats c(static_cast<std::size_t>(batch * sc), std::numeric_limits<float>::quiet_NaN());
      cpu().gemm_strided_batched(false, tb, m, n, k, 0.125f, a.data(), lda, sa, b.data(), ldb, sb, 0.0f, c.data(), ldc,
                                 sc, batch);
      for (std::int64_t z = 0; z < batch; ++z) {
        const Shape s{false, tb, m, n, k};
        const std::vector<double> want =
            reference(s, 0.125f, a.data() + z * sa, lda, b.data() + z * sb, ldb, 0.0f, nullptr, ldc);
        double worst = 0;
        for (std::int64_t i = 0; i < m * n; ++i) {
          const double got = c[static_cast<std::size_t>(z * sc + i)];
          worst = std::isfinite(got) ? std::max(worst, std::fabs(got - want[static_cast<std::size_t>(i)]))
                                     : std::numeric_limits<double>::infinity();
        }
        BOOST_TEST(worst <= 1e-5 * k, "batch " << z << " ld_extra " << ld_extra << " tb " << tb << ": " << worst);
      }
    }
}

// Losses are bit-identical across stage counts and schedules only if a GEMM's bits depend on its shape and the
// thread count alone, not on where malloc put its operands.
BOOST_AUTO_TEST_CASE(same_bits_at_any_alignment_and_every_call) {
  for (int threads : {1, 2}) {
    libpipe::set_cpu_threads(threads);
    for (const Shape& s : kShapes)
      for (float beta : {0.0f, 1.0f}) {
        std::vector<std::uint32_t> first;
        for (std::size_t offset : {0, 1, 3, 16, 5, 0}) {
          Operands o = operands(s, 0, offset, 0.25f);
          run(o, s, 1.0f, beta);
          const std::vector<std::uint32_t> got = bits(o, s);
          if (first.empty())
            first = got;
          else
            BOOST_TEST((got == first), "threads " << threads << " m=" << s.m << " n=" << s.n << " k=" << s.k
                                                  << " beta=" << beta << ": other bits at offset " << offset);
        }
      }
  }
  libpipe::set_cpu_threads(1);
}

// Whether /proc/cpuinfo lists the AVX512_BF16 instructions (oneDNN's avx512_core_bf16 needs them).
bool cpu_has_avx512_bf16() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("flags", 0) == 0) return line.find(" avx512_bf16") != std::string::npos;
  return false;
}

BOOST_AUTO_TEST_CASE(bf16_products_are_native_exactly_where_the_cpu_has_bf16) {
  const char* gemm_env = std::getenv("PIPE_CPU_GEMM");
  const char* bf16_env = std::getenv("PIPE_CPU_BF16_GEMM");
  if ((gemm_env != nullptr && *gemm_env != '\0') || (bf16_env != nullptr && *bf16_env != '\0')) return;
  const std::string lib = libpipe::cpu_gemm_library();
  BOOST_TEST((lib.find(", bf16 native") != std::string::npos) == cpu_has_avx512_bf16(), lib);
}

BOOST_AUTO_TEST_CASE(bf16_products_match_reference) {
  using libpipe::DType;
  using Bf16 = std::vector<std::uint16_t>;
  const auto to_bf16 = [](const Floats& x) {
    Bf16 y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = libpipe::float_to_bf16(x[i]);
    return y;
  };
  const auto widen = [](const Bf16& x) {
    Floats y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = libpipe::bf16_to_float(x[i]);
    return y;
  };
  for (const Shape& s : kShapes)
    for (float beta : {0.0f, 1.0f}) {
      Operands o = operands(s, 2, 0, 0.25f);
      const Bf16 a = to_bf16(o.a), b = to_bf16(o.b);
      const Floats a_exact = widen(a), b_exact = widen(b);  // the values the product sees
      const std::vector<double> want =
          reference(s, 1.0f, a_exact.data(), o.lda, b_exact.data(), o.ldb, beta, o.c.data(), o.ldc);
      // float32 C: the products of bfloat16 values are exact in float32, only the summation rounds.
      Floats c32 = o.c;
      cpu().gemm(s.ta, s.tb, s.m, s.n, s.k, 1.0f, {a.data(), DType::bfloat16}, o.lda, {b.data(), DType::bfloat16},
                 o.ldb, beta, c32.data(), o.ldc);
      // bfloat16 C: one more rounding, to 8 bits of mantissa.
      Bf16 c16 = to_bf16(o.c);
      cpu().gemm(s.ta, s.tb, s.m, s.n, s.k, 1.0f, {a.data(), DType::bfloat16}, o.lda, {b.data(), DType::bfloat16},
                 o.ldb, beta, {c16.data(), DType::bfloat16}, o.ldc);
      double worst32 = 0, worst16 = 0;
      for (std::int64_t i = 0; i < s.m; ++i)
        for (std::int64_t j = 0; j < s.n; ++j) {
          const std::size_t at = static_cast<std::size_t>(i * o.ldc + j);
          const double w = want[static_cast<std::size_t>(i * s.n + j)];
          const double e32 = std::fabs(c32[at] - w);
          const double e16 = std::fabs(libpipe::bf16_to_float(c16[at]) - w) / (std::fabs(w) + 1.0);
          worst32 = std::isfinite(e32) ? std::max(worst32, e32) : std::numeric_limits<double>::infinity();
          worst16 = std::isfinite(e16) ? std::max(worst16, e16) : std::numeric_limits<double>::infinity();
        }
      const std::string where = "m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                                " k=" + std::to_string(s.k) + " beta=" + std::to_string(beta) + " on " +
                                libpipe::cpu_gemm_library();
      BOOST_TEST(worst32 <= 1e-5 * static_cast<double>(s.k + 1), where << ": float32 C off by " << worst32);
      BOOST_TEST(worst16 <= 8e-3, where << ": bfloat16 C off by " << worst16 << " (relative to |C| + 1)");
    }
}

BOOST_AUTO_TEST_CASE(slow_warning_counts_threads_against_cpus) {
  const std::string many = libpipe::cpu_slow_warning(100000, 1);
  BOOST_TEST(many.rfind("the CPU backend will run slowly: ", 0) == 0, many);
  BOOST_TEST(many.find("100000 ranks x 1 thread on this node, which has ") != std::string::npos, many);
  BOOST_TEST(many.find('\n') == std::string::npos);  // one line
  // One rank of one thread never oversubscribes (any further reason would be oneDNN's ISA).
  BOOST_TEST(libpipe::cpu_slow_warning(1, 1).find("rank") == std::string::npos);
  BOOST_TEST(libpipe::cpu_count_usable() >= 1);
  BOOST_TEST(libpipe::cpu_count_usable() <= libpipe::cpu_count_online());
}
