// The CUDA backend against the CPU backend: every Backend op runs the same
// random inputs through backend_for(Device::cpu) (itself checked against
// double-precision references and finite differences in test_ops) and
// backend_for(Device::cuda), and the results must agree within a tolerance
// chosen per op and, for the GEMMs, per GEMM math (fp32, tf32, bf16). Odd
// sizes (n not a multiple of 4, rows = 1, cols = 1, misaligned pointers),
// size 0, accumulation into non-zero outputs, the error messages of bad
// labels and tokens, and the caching allocator's bookkeeping are covered too.
// The largest difference of every op is printed at the end (and per check
// with --log_level=message), so that the first GPU run shows the margins.
//
// Without a GPU (or in a build without the CUDA backend) the program prints
// "SKIPPED: <reason>" and exits 77, which CTest reports as skipped
// (SKIP_RETURN_CODE 77), never as a pass. `test_cuda_ops --probe` only
// reports whether a GPU is usable (exit 0, or 77 as above): the GPU scripts
// ask it before they start. With PIPE_CUDA_OPS_HARNESS=1 the "GPU" side is
// the CPU backend again: every case then runs here, in every build, which
// checks the test itself (buffer sizes, offsets, degenerate sizes, the error
// comparisons) though not the GPU (CTest: unit.cuda_ops_harness).
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE cuda_ops
#define BOOST_TEST_NO_MAIN
#include <algorithm>
#include <array>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "pipe/backend.hpp"
#include "pipe/bfloat16.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"
#include "pipe/ops.hpp"
#include "pipe/tensor.hpp"
#include "device_compare.hpp"
#include "test_util.hpp"

using libpipe::Backend;
using libpipe::Device;
using libpipe::DType;
using libpipe::GemmMath;
using libpipe::Tensor;
using namespace device_compare;  // randoms, tolerances, compare, the summary

BOOST_TEST_GLOBAL_FIXTURE(PrintSummary);

namespace {

// The device under test: cuda; the CPU itself under PIPE_CUDA_OPS_HARNESS=1 (see main).
Device& tested() {
  static Device device = Device::cuda;
  return device;
}
Backend& cpu() { return libpipe::backend_for(Device::cpu); }
Backend& gpu() { return libpipe::backend_for(tested()); }

// A CUDA tensor holding a copy of host data. At least one element is allocated, so that ops of size 0 still get a
// valid pointer (what the layers pass for empty tensors is a valid pointer, too).
template <typename T>
Tensor upload(const std::vector<T>& host) {
  const DType dtype = std::is_same<T, float>::value ? DType::float32 : DType::int32;
  Tensor t = Tensor::empty({std::max<std::int64_t>(1, static_cast<std::int64_t>(host.size()))}, dtype, tested());
  gpu().copy_from_host(t.data(), host.data(), host.size() * sizeof(T));
  return t;
}

Floats download(const Tensor& t, std::size_t n) {
  Floats host(n);
  gpu().copy_to_host(host.data(), t.data(), n * sizeof(float));
  return host;
}

float* dev(Tensor& t) { return t.f32(); }
const std::int32_t* dev_i(Tensor& t) { return t.i32(); }

using pipe_test::error_of;

// ---------------------------------------------------------------- tolerances (the rest: device_compare.hpp)

// GEMMs, normwise (floor 1) against OpenBLAS's fp32 sgemm, with inputs uniform in [-1, 1]:
// - fp32: cuBLAS without tensor-core math accumulates in fp32 in another order (and may split k); the error is
//   about sqrt(k) * eps of the terms, 1e-7..1e-6 of max|C| for k <= 300: 1e-5.
// - tf32: each input is rounded (or truncated, depending on the kernel) to a 10-bit mantissa, a relative error of
//   up to 2^-11 (2^-10 truncated) per input, so about 8e-4 per product; summed over k products of random sign the
//   error is ~8e-4 of the typical |C| and its largest over the outputs ~4e-4..1e-3 of max|C|: 2e-3.
// - bf16: an 8-bit mantissa, 2^-9 per input rounding, ~3e-3 per product and of max|C| after the sum; 2e-2 keeps
//   the margin of the tf32 case, and a wrong result (a transposed operand, a wrong leading dimension, a dropped
//   beta) is off by O(1) in any case.
Tol gemm_tol(GemmMath math) {
  switch (math) {
    case GemmMath::fp32: return {1e-5, 1.0};
    case GemmMath::tf32: return {2e-3, 1.0};
    case GemmMath::bf16: return {2e-2, 1.0};
  }
  return {0, 0};
}
// Attention runs its scores and outputs through GEMMs (at the backend's GEMM math when they are cuBLAS's) plus a
// softmax: the GEMM tolerance. Its backward chains two products per gradient (dP = dO V^T, then dS K and dS^T Q,
// with dS = P (dP - rowsum(P dP)) cancelling): twice that.
Tol attention_tol(GemmMath math, bool backward) {
  Tol t = gemm_tol(math);
  if (math == GemmMath::fp32) t.rtol = 2e-5;  // softmax intrinsics on top of the GEMMs' reordering
  if (backward) t.rtol *= 2;
  return t;
}

const GemmMath kMaths[] = {GemmMath::fp32, GemmMath::tf32, GemmMath::bf16};

// A GPU tensor against the CPU's values (beside device_compare's host-vector comparison).
using device_compare::compare;
void compare(const std::string& op, const std::string& what, const Floats& c, const Tensor& g, Tol tol) {
  compare(op, what, c, download(g, c.size()), tol);
}

// Keeps the GEMM math at fp32 outside the cases that change it.
struct MathGuard {
  explicit MathGuard(GemmMath math) { libpipe::set_cuda_gemm_math(math); }
  ~MathGuard() { libpipe::set_cuda_gemm_math(GemmMath::fp32); }
};

std::string math_name(GemmMath m) { return libpipe::gemm_math_name(m); }

// Element counts: size 0, tiny, not a multiple of 4 (vector kernels' tails), and larger than one block of threads.
const std::int64_t kSizes[] = {0, 1, 3, 5, 1000, 4097, 65537};
// (rows, cols) for row-wise ops: rows = 0, rows = 1, cols = 1, odd, GPT-2's width, wider than a block.
const std::array<std::int64_t, 2> kRowShapes[] = {{0, 8}, {1, 1}, {1, 7}, {7, 1}, {33, 37}, {64, 768}, {3, 4097}};

}  // namespace

// ---------------------------------------------------------------- memory

BOOST_AUTO_TEST_CASE(host_copies_round_trip_exactly) {
  for (std::int64_t n : kSizes) {
    const Floats h = randoms(n);
    Tensor t = upload(h);
    BOOST_TEST((download(t, h.size()) == h), "float round trip of " << n);
    const Ints hi = random_ints(n, -1000000, 1000000);
    Tensor ti = upload(hi);
    Ints back(hi.size());
    gpu().copy_to_host(back.data(), ti.data(), back.size() * sizeof(std::int32_t));
    BOOST_TEST((back == hi), "int32 round trip of " << n);
  }
  // A copy at an odd byte offset and length.
  std::vector<unsigned char> bytes(1001);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 7 + 3);
  Tensor t = Tensor::empty({300}, DType::float32, tested());
  gpu().copy_from_host(static_cast<unsigned char*>(t.data()) + 3, bytes.data(), bytes.size());
  std::vector<unsigned char> back(bytes.size());
  gpu().copy_to_host(back.data(), static_cast<unsigned char*>(t.data()) + 3, back.size());
  BOOST_TEST((back == bytes));
}

BOOST_AUTO_TEST_CASE(zeros_are_zero_even_from_the_cache) {
  // A block handed back to the caching allocator dirty must come out of Tensor::zeros zeroed.
  for (std::int64_t n : {1, 1000, 1 << 20}) {
    {
      Tensor dirty = Tensor::empty({n}, DType::float32, tested());
      gpu().fill(dirty.f32(), 7.0f, n);
      gpu().synchronize();
    }
    Tensor z = Tensor::zeros({n}, DType::float32, tested());
    const Floats h = download(z, static_cast<std::size_t>(n));
    BOOST_TEST(std::all_of(h.begin(), h.end(), [](float x) { return x == 0.0f; }), "zeros of " << n);
  }
}

BOOST_AUTO_TEST_CASE(fill_and_copy_with_misaligned_pointers) {
  for (std::int64_t n : kSizes)
    for (std::int64_t off : {0, 1, 3}) {
      // A guard element on each side: neither op may write outside [off, off + n).
      const std::int64_t total = n + off + 1;
      Floats c = randoms(total), src = randoms(total);
      Tensor g = upload(c), gsrc = upload(src);
      cpu().fill(c.data() + off, -2.5f, n);
      gpu().fill(dev(g) + off, -2.5f, n);
      compare("fill", dims({n}) + "+" + std::to_string(off), c, g, kExact);
      cpu().copy(c.data() + off, src.data() + (off ? 0 : 1), n);
      gpu().copy(dev(g) + off, dev(gsrc) + (off ? 0 : 1), n);
      compare("copy", dims({n}) + "+" + std::to_string(off), c, g, kExact);
    }
}

BOOST_AUTO_TEST_CASE(caching_allocator_returns_to_its_start) {
  gpu().synchronize();
  const std::size_t start = libpipe::allocated_bytes(tested());
  std::size_t requested = 0;
  {
    std::vector<Tensor> live;
    std::uniform_int_distribution<std::int64_t> size(1, 1 << 18);
    for (int round = 0; round < 20; ++round) {
      for (int i = 0; i < 50; ++i) {
        const std::int64_t n = i % 10 == 0 ? (std::int64_t(1) << 22) + i : size(rng());  // some 16 MiB blocks
        live.push_back(i % 2 ? Tensor::zeros({n}, DType::float32, tested())
                             : Tensor::empty({n}, DType::float32, tested()));
        if (round == 19) requested += static_cast<std::size_t>(n) * sizeof(float);
      }
      if (round < 19) live.erase(live.begin(), live.begin() + static_cast<std::ptrdiff_t>(live.size() * 3 / 4));
    }
    BOOST_TEST(libpipe::allocated_bytes(tested()) >= start + requested,
               "allocated_bytes counts at least what is live");
    for (std::size_t i = 0; i < live.size(); i += 7) gpu().fill(live[i].f32(), 1.0f, live[i].numel());
  }
  gpu().synchronize();
  BOOST_TEST(libpipe::allocated_bytes(tested()) == start);
  // Views share the storage: freeing the base first does not free the block under the view.
  {
    Tensor base = Tensor::zeros({64, 64}, DType::float32, tested());
    Tensor view = base.view({4096});
    base = Tensor();
    gpu().fill(view.f32(), 3.0f, 4096);
    const Floats h = download(view, 4096);
    BOOST_TEST(h[4095] == 3.0f);
    BOOST_TEST(libpipe::allocated_bytes(tested()) > start);
  }
  gpu().synchronize();
  BOOST_TEST(libpipe::allocated_bytes(tested()) == start);
}

// ---------------------------------------------------------------- elementwise

BOOST_AUTO_TEST_CASE(elementwise_ops) {
  for (std::int64_t n : kSizes)
    for (std::int64_t off : {0, 1}) {
      const std::string what = dims({n}) + "+" + std::to_string(off);
      const std::int64_t total = n + off + 1;
      const Floats a = randoms(total), b = randoms(total, -3.0f, 3.0f);
      Tensor ga = upload(a), gb = upload(b);
      Floats out = randoms(total);
      Tensor gout = upload(out);
      cpu().add(a.data() + off, b.data() + off, out.data() + off, n);
      gpu().add(dev(ga) + off, dev(gb) + off, dev(gout) + off, n);
      compare("add", what, out, gout, kExact);

      Floats y = a;
      Tensor gy = upload(y);
      cpu().accumulate(y.data() + off, b.data() + off, n);
      gpu().accumulate(dev(gy) + off, dev(gb) + off, n);
      compare("accumulate", what, y, gy, kExact);
      cpu().scale(y.data() + off, -0.375f, n);
      gpu().scale(dev(gy) + off, -0.375f, n);
      compare("scale", what, y, gy, kExact);

      cpu().relu_forward(b.data() + off, out.data() + off, n);
      gpu().relu_forward(dev(gb) + off, dev(gout) + off, n);
      compare("relu_forward", what, out, gout, kExact);
      cpu().relu_backward(b.data() + off, a.data() + off, out.data() + off, n);
      gpu().relu_backward(dev(gb) + off, dev(ga) + off, dev(gout) + off, n);
      compare("relu_backward", what, out, gout, kExact);

      cpu().gelu_forward(b.data() + off, out.data() + off, n);
      gpu().gelu_forward(dev(gb) + off, dev(gout) + off, n);
      compare("gelu_forward", what, out, gout, kElementwise);
      cpu().gelu_backward(b.data() + off, a.data() + off, out.data() + off, n);
      gpu().gelu_backward(dev(gb) + off, dev(ga) + off, dev(gout) + off, n);
      compare("gelu_backward", what, out, gout, kElementwise);
    }
  // GELU's tails: large |x| (exp overflow in a naive form) must give x and 0, and their derivatives 1 and 0.
  const Floats x = {-60.0f, -12.0f, -5.0f, 0.0f, 5.0f, 12.0f, 60.0f}, dy(x.size(), 1.0f);
  Floats y(x.size());
  Tensor gx = upload(x), gdy = upload(dy), gyy = upload(y);
  cpu().gelu_forward(x.data(), y.data(), 7);
  gpu().gelu_forward(dev(gx), dev(gyy), 7);
  compare("gelu_forward", "tails", y, gyy, kElementwise);
  cpu().gelu_backward(x.data(), dy.data(), y.data(), 7);
  gpu().gelu_backward(dev(gx), dev(gdy), dev(gyy), 7);
  compare("gelu_backward", "tails", y, gyy, kElementwise);
}

BOOST_AUTO_TEST_CASE(bias_ops) {
  for (auto [rows, cols] : kRowShapes) {
    const std::string what = dims({rows, cols});
    Floats y = randoms(rows * cols), bias = randoms(cols, -2.0f, 2.0f);
    Tensor gy = upload(y), gbias = upload(bias);
    cpu().bias_epilogue(y.data(), bias.data(), y.data(), rows, cols);
    gpu().bias_epilogue(dev(gy), dev(gbias), dev(gy), rows, cols);
    compare("add_bias", what, y, gy, kExact);

    // bias_grad accumulates: db starts non-zero.
    Floats db = randoms(cols);
    Tensor gdb = upload(db);
    cpu().bias_grad(y.data(), db.data(), rows, cols);
    gpu().bias_grad(dev(gy), dev(gdb), rows, cols);
    compare("bias_grad", what, db, gdb, kReduce);

    Floats x = randoms(rows * cols, -3.0f, 3.0f), out = randoms(rows * cols);
    Tensor gx = upload(x), gout = upload(out);
    cpu().bias_gelu(x.data(), bias.data(), x.data(), out.data(), rows, cols);
    gpu().bias_gelu(dev(gx), dev(gbias), dev(gx), dev(gout), rows, cols);
    compare("bias_gelu_forward (x + bias)", what, x, gx, kExact);
    compare("bias_gelu_forward (gelu)", what, out, gout, kElementwise);
  }
}

// ---------------------------------------------------------------- GEMMs

namespace {

struct GemmCase {
  std::int64_t m, n, k;
};

// One gemm call on both devices with padded leading dimensions; C starts random (beta != 0) or NaN (beta == 0:
// C must not be read). The whole C buffer is compared, padding included: neither side may write there.
void gemm_both(GemmMath math, bool ta, bool tb, GemmCase s, float alpha, float beta, std::int64_t pad) {
  const std::int64_t rows_a = ta ? s.k : s.m, cols_a = ta ? s.m : s.k;
  const std::int64_t rows_b = tb ? s.n : s.k, cols_b = tb ? s.k : s.n;
  const std::int64_t lda = std::max<std::int64_t>(1, cols_a + pad), ldb = std::max<std::int64_t>(1, cols_b + 2 * pad),
                     ldc = std::max<std::int64_t>(1, s.n + pad + 1);
  const Floats a = randoms(rows_a * lda), b = randoms(rows_b * ldb);
  Floats c = beta == 0.0f ? Floats(static_cast<std::size_t>(s.m * ldc), std::numeric_limits<float>::quiet_NaN())
                          : randoms(s.m * ldc);
  Tensor ga = upload(a), gb = upload(b), gc = upload(c);
  cpu().gemm(ta, tb, s.m, s.n, s.k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
  gpu().gemm(ta, tb, s.m, s.n, s.k, alpha, dev(ga), lda, dev(gb), ldb, beta, dev(gc), ldc);
  const bool exact = s.k == 0 || s.m == 0 || s.n == 0;  // C = beta * C or untouched: one rounding at most
  compare("gemm [" + math_name(math) + "]",
          std::string(ta ? "T" : "N") + (tb ? "T" : "N") + " " + dims({s.m, s.n, s.k}) + " alpha " +
              std::to_string(alpha) + " beta " + std::to_string(beta),
          c, gc, exact ? kExact : gemm_tol(math));
  if (beta == 0.0f) {  // every element of the product is finite: C was not read
    const Floats h = download(gc, c.size());
    bool finite = true;
    for (std::int64_t i = 0; i < s.m; ++i)
      for (std::int64_t j = 0; j < s.n; ++j) finite = finite && std::isfinite(h[i * ldc + j]);
    BOOST_TEST(finite, "gemm with beta = 0 read C (NaN in the result)");
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(gemm_all_transposes_maths_and_leading_dimensions) {
  const GemmCase shapes[] = {{1, 1, 1},    {3, 5, 7},    {1, 200, 33}, {37, 29, 53},
                             {128, 1, 257}, {64, 96, 128}, {130, 70, 300}, {256, 192, 64}};
  for (GemmMath math : kMaths) {
    MathGuard guard(math);
    BOOST_TEST((libpipe::cuda_gemm_math() == math));
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        for (const GemmCase& s : shapes) gemm_both(math, ta, tb, s, 0.75f, 0.5f, 3);
        gemm_both(math, ta, tb, {33, 17, 65}, 1.0f, 0.0f, 1);   // beta = 0: C not read
        gemm_both(math, ta, tb, {16, 32, 48}, -1.5f, 1.0f, 0);  // tight leading dimensions, accumulate
        // Degenerate sizes: k = 0 leaves beta * C, m = 0 and n = 0 touch nothing.
        gemm_both(math, ta, tb, {5, 6, 0}, 1.0f, 0.5f, 2);
        gemm_both(math, ta, tb, {0, 6, 4}, 1.0f, 0.5f, 2);
        gemm_both(math, ta, tb, {5, 0, 4}, 1.0f, 0.5f, 2);
      }
  }
}

// ---------------------------------------------------------------- bfloat16 (mixed precision)

namespace {

Tensor upload_halves(const Halves& host) {
  Tensor t = Tensor::empty({std::max<std::int64_t>(1, static_cast<std::int64_t>(host.size()))}, DType::bfloat16,
                           tested());
  gpu().copy_from_host(t.data(), host.data(), host.size() * sizeof(std::uint16_t));
  return t;
}

Halves download_halves(const Tensor& t, std::size_t n) {
  Halves host(n);
  gpu().copy_to_host(host.data(), t.data(), n * sizeof(std::uint16_t));
  return host;
}

}  // namespace

// Rounding to nearest even is one IEEE operation: the GPU's conversions must equal pipe/bfloat16.hpp's bit for bit,
// NaN, infinities, overflow, ties and subnormals included, at every size and alignment.
BOOST_AUTO_TEST_CASE(bf16_conversions_are_bit_identical) {
  auto bits = [](std::uint32_t b) {
    float x;
    std::memcpy(&x, &b, sizeof x);
    return x;
  };
  for (std::int64_t n : kSizes)
    for (std::int64_t offset : {0, 1}) {
      Floats x = randoms(n + offset, -1e4f, 1e4f);
      const Floats specials = {std::numeric_limits<float>::quiet_NaN(), bits(0xFF800001u),
                               std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::max(), bits(0x3F808000u) /* tie to even */,
                               bits(0x3F818000u) /* tie, up */, bits(0x00010000u), -0.0f};
      for (std::size_t i = 0; i < specials.size() && i + offset < x.size(); ++i) x[i + offset] = specials[i];
      Tensor gx = upload(x), gh = Tensor::empty({n + offset + 1}, DType::bfloat16, tested());
      gpu().to_bf16(dev(gx) + offset, gh.bf16() + offset, n);  // offset 1: neither pointer 16-byte aligned
      const Halves want = to_halves(Floats(x.begin() + offset, x.end()));
      const Halves got = download_halves(gh, static_cast<std::size_t>(n + offset));
      BOOST_TEST((Halves(got.begin() + offset, got.end()) == want), "to_bf16 n=" << n << " offset " << offset);
      Tensor back = Tensor::empty({n + offset + 1}, DType::float32, tested());
      gpu().from_bf16(gh.bf16() + offset, dev(back) + offset, n);
      const Floats wide = download(back, static_cast<std::size_t>(n + offset));
      const Floats want_wide = from_halves(want);
      BOOST_TEST(same_bits(Floats(wide.begin() + offset, wide.end()), want_wide),
                 "from_bf16 n=" << n << " offset " << offset);
    }
}

// bfloat16 operands: their products are exact in fp32 (8 x 8 significant bits), so with a float32 C the GPU and the
// CPU differ only in summation order (the fp32 tolerance); a bfloat16 C adds one rounding of 2^-9 that may fall
// either way: 8e-3 normwise.
BOOST_AUTO_TEST_CASE(gemm_bf16_operands) {
  const GemmCase shapes[] = {{1, 1, 1}, {3, 5, 7}, {37, 29, 53}, {64, 96, 128}, {130, 70, 300}};
  for (DType c_type : {DType::float32, DType::bfloat16})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (const GemmCase& s : shapes) {
          const std::int64_t pad = 3;
          const std::int64_t lda = (ta ? s.m : s.k) + pad, ldb = (tb ? s.k : s.n) + pad, ldc = s.n + pad;
          const Halves a = to_halves(randoms((ta ? s.k : s.m) * lda)), b = to_halves(randoms((tb ? s.n : s.k) * ldb));
          const Floats c0 = from_halves(to_halves(randoms(s.m * ldc)));  // representable in either C type
          Tensor ga = upload_halves(a), gb = upload_halves(b);
          const bool c_bf16 = c_type == DType::bfloat16;
          Tensor gc = c_bf16 ? upload_halves(to_halves(c0)) : upload(c0);
          Halves ch = to_halves(c0);
          Floats cf = c0;
          void* c_host = c_bf16 ? static_cast<void*>(ch.data()) : static_cast<void*>(cf.data());
          cpu().gemm(ta, tb, s.m, s.n, s.k, 0.75f, {a.data(), DType::bfloat16}, lda, {b.data(), DType::bfloat16}, ldb,
                     0.5f, {c_host, c_type}, ldc);
          gpu().gemm(ta, tb, s.m, s.n, s.k, 0.75f, {ga.data(), DType::bfloat16}, lda, {gb.data(), DType::bfloat16}, ldb,
                     0.5f, {gc.data(), c_type}, ldc);
          const std::string what = std::string(ta ? "T" : "N") + (tb ? "T" : "N") + " " + dims({s.m, s.n, s.k}) +
                                   " C " + libpipe::dtype_name(c_type);
          if (c_bf16)
            compare("gemm [bf16 x bf16 -> bf16]", what, from_halves(ch),
                    from_halves(download_halves(gc, ch.size())), Tol{8e-3, 1.0});
          else
            compare("gemm [bf16 x bf16 -> fp32]", what, cf, gc, gemm_tol(GemmMath::fp32));
        }
}

// A transformer's ops on bfloat16 tensors through libpipe::ops: the GPU's native bfloat16 kernels and GEMMs against
// the CPU's emulation (widen, compute in fp32, round once). Outputs are bfloat16, so one final rounding may fall the
// other way: 8e-3 (2^-8 = 3.9e-3 is one bfloat16 ulp at the element's scale). Adds and copies round the same fp32
// value on both: exact. Attention's backward runs two GEMM chains on bfloat16-rounded probabilities and
// gradients: twice that. Sums into fp32 gradients: the fp32 tolerances.
BOOST_AUTO_TEST_CASE(ops_on_bf16_tensors_match_the_cpu_emulation) {
  namespace ops = libpipe::ops;
  const std::int64_t B = 2, T = 16, C = 64, H = 4;
  auto pair_of = [](const Floats& v, const libpipe::Shape& shape) {
    Tensor host = Tensor::empty(shape, DType::float32);
    std::memcpy(host.data(), v.data(), v.size() * sizeof(float));
    Tensor h16 = ops::to_dtype(host, DType::bfloat16);
    return std::make_pair(h16, ops::to_device(h16, tested()));
  };
  auto host_floats = [](const Tensor& t) {
    const Tensor wide = ops::to_device(ops::to_dtype(t, DType::float32), Device::cpu);
    Floats v(static_cast<std::size_t>(wide.numel()));
    std::memcpy(v.data(), wide.data(), v.size() * sizeof(float));
    return v;
  };
  const auto x = pair_of(randoms(B * T * C), {B, T, C});
  const auto w = pair_of(randoms(3 * C * C, -0.1f, 0.1f), {3 * C, C});
  const auto b = pair_of(randoms(3 * C), {3 * C});
  const auto lw = pair_of(randoms(C, 0.5f, 1.5f), {C});
  const auto lb = pair_of(randoms(C), {C});
  const Tol kBf16{8e-3, 0.1};

  Tensor mc, rc, mg, rg;
  const Tensor ln_c = ops::layernorm(x.first, lw.first, lb.first, 1e-5f, mc, rc);
  const Tensor ln_g = ops::layernorm(x.second, lw.second, lb.second, 1e-5f, mg, rg);
  BOOST_TEST((ln_g.dtype() == DType::bfloat16 && ln_g.device() == tested()));
  compare("ops bf16: layernorm", dims({B, T, C}), host_floats(ln_c), host_floats(ln_g), kBf16);
  // Later ops take the CPU's inputs on both sides, so that each comparison is of one op.
  const Tensor ln_on_gpu = ops::to_device(ln_c, tested());
  const Tensor qkv_c = ops::linear(ln_c, w.first, b.first);
  const Tensor qkv_g = ops::linear(ln_on_gpu, w.second, b.second);
  compare("ops bf16: linear", dims({B * T, C, 3 * C}), host_floats(qkv_c), host_floats(qkv_g), kBf16);
  Tensor pc, pg;
  const Tensor att_c = ops::attention(qkv_c, H, pc);
  const Tensor att_g = ops::attention(ops::to_device(qkv_c, tested()), H, pg);
  compare("ops bf16: attention", dims({B, T, H}), host_floats(att_c), host_floats(att_g), kBf16);
  Tensor pre_c, pre_g;
  const Tensor up_c = ops::linear_gelu(att_c, w.first, b.first, pre_c);
  const Tensor up_g = ops::linear_gelu(ops::to_device(att_c, tested()), w.second, b.second, pre_g);
  compare("ops bf16: linear_gelu", dims({B * T, C, 3 * C}), host_floats(up_c), host_floats(up_g), kBf16);
  const Tensor dx_c = ops::linear_backward_input(up_c, w.first);
  const Tensor dx_g = ops::linear_backward_input(ops::to_device(up_c, tested()), w.second);
  compare("ops bf16: linear_backward_input", dims({B * T, 3 * C, C}), host_floats(dx_c), host_floats(dx_g), kBf16);
  Tensor dw_c = Tensor::zeros({3 * C, C}, DType::float32), db_c = Tensor::zeros({3 * C}, DType::float32);
  Tensor dw_g = Tensor::zeros({3 * C, C}, DType::float32, tested()), db_g = Tensor::zeros({3 * C}, DType::float32,
                                                                                          tested());
  ops::linear_backward_weight(up_c, ln_c, dw_c, db_c);
  ops::linear_backward_weight(ops::to_device(up_c, tested()), ln_on_gpu, dw_g, db_g);
  BOOST_TEST((dw_g.dtype() == DType::float32));  // parameter gradients stay float32
  compare("ops bf16: linear_backward_weight", dims({B * T, 3 * C, C}), host_floats(dw_c), host_floats(dw_g),
          gemm_tol(GemmMath::fp32));
  compare("ops bf16: linear_backward_weight (bias)", dims({B * T, 3 * C}), host_floats(db_c), host_floats(db_g),
          kReduce);

  // The rest of a block's backward and the residual adds, each from the CPU's inputs.
  auto on_gpu = [](const Tensor& t) { return ops::to_device(t, tested()); };
  const Tensor att_dout = ops::to_dtype(ops::to_device(att_c, Device::cpu), DType::bfloat16);  // any [B, T, C]
  compare("ops bf16: attention_backward", dims({B, T, H}),
          host_floats(ops::attention_backward(att_dout, qkv_c, pc, H)),
          host_floats(ops::attention_backward(on_gpu(att_dout), on_gpu(qkv_c), on_gpu(pc), H)), Tol{1.6e-2, 0.1});
  compare("ops bf16: add", dims({B, T, C}), host_floats(ops::add(x.first, ln_c)),
          host_floats(ops::add(x.second, ln_on_gpu)), kExact);
  Tensor acc_c = ops::clone(x.first), acc_g = ops::clone(x.second);
  ops::accumulate(acc_c, ln_c);
  ops::accumulate(acc_g, ln_on_gpu);
  compare("ops bf16: accumulate", dims({B, T, C}), host_floats(acc_c), host_floats(acc_g), kExact);
  compare("ops bf16: gelu_backward", dims({B, T, 3 * C}), host_floats(ops::gelu_backward(pre_c, up_c)),
          host_floats(ops::gelu_backward(on_gpu(pre_c), on_gpu(up_c))), kBf16);
  compare("ops bf16: layernorm_backward_input", dims({B, T, C}),
          host_floats(ops::layernorm_backward_input(att_dout, x.first, lw.first, mc, rc)),
          host_floats(ops::layernorm_backward_input(on_gpu(att_dout), x.second, lw.second, on_gpu(mc), on_gpu(rc))),
          kBf16);
  Tensor lgw_c = Tensor::zeros({C}, DType::float32), lgb_c = Tensor::zeros({C}, DType::float32);
  Tensor lgw_g = Tensor::zeros({C}, DType::float32, tested()), lgb_g = Tensor::zeros({C}, DType::float32, tested());
  ops::layernorm_backward_weight(att_dout, x.first, mc, rc, lgw_c, lgb_c);
  ops::layernorm_backward_weight(on_gpu(att_dout), x.second, on_gpu(mc), on_gpu(rc), lgw_g, lgb_g);
  compare("ops bf16: layernorm_backward_weight", dims({B, T, C}), host_floats(lgw_c), host_floats(lgw_g), kReduce);
  compare("ops bf16: layernorm_backward_weight (bias)", dims({B, T, C}), host_floats(lgb_c), host_floats(lgb_g),
          kReduce);

  // The loss and the embedding, over a vocabulary wider than one warp's rows (the block-per-row path).
  const std::int64_t V = 1500;
  Ints ids = random_ints(B * T, 0, static_cast<int>(V) - 1);
  Tensor labels_c = Tensor::empty({B, T}, DType::int32);
  std::memcpy(labels_c.data(), ids.data(), ids.size() * sizeof(std::int32_t));
  const Tensor labels_g = on_gpu(labels_c);
  const auto logits = pair_of(randoms(B * T * V, -4.0f, 4.0f), {B, T, V});
  compare("ops bf16: cross_entropy", dims({B, T, V}), host_floats(ops::cross_entropy(logits.first, labels_c)),
          host_floats(ops::cross_entropy(logits.second, labels_g)), kRow);
  const Tensor dloss_c = Tensor::zeros({B}, DType::float32);
  ops::fill(const_cast<Tensor&>(dloss_c), 0.5f);
  compare("ops bf16: cross_entropy_backward", dims({B, T, V}),
          host_floats(ops::cross_entropy_backward(logits.first, labels_c, dloss_c)),
          host_floats(ops::cross_entropy_backward(logits.second, labels_g, on_gpu(dloss_c))), kBf16);
  const auto wte = pair_of(randoms(V * C), {V, C});
  const auto wpe = pair_of(randoms(T * C), {T, C});
  compare("ops bf16: embedding", dims({B, T, C}), host_floats(ops::embedding(labels_c, wte.first, wpe.first)),
          host_floats(ops::embedding(labels_g, wte.second, wpe.second)), kExact);
  Tensor dwte_c = Tensor::zeros({V, C}, DType::float32), dwpe_c = Tensor::zeros({T, C}, DType::float32);
  Tensor dwte_g = Tensor::zeros({V, C}, DType::float32, tested());
  Tensor dwpe_g = Tensor::zeros({T, C}, DType::float32, tested());
  ops::embedding_backward(labels_c, x.first, dwte_c, dwpe_c);
  ops::embedding_backward(labels_g, x.second, dwte_g, dwpe_g);
  compare("ops bf16: embedding_backward (wte)", dims({B, T, C}), host_floats(dwte_c), host_floats(dwte_g), kReduce);
  compare("ops bf16: embedding_backward (wpe)", dims({B, T, C}), host_floats(dwpe_c), host_floats(dwpe_g), kReduce);
}

BOOST_AUTO_TEST_CASE(gemm_strided_batched_all_transposes_and_maths) {
  struct Case {
    GemmCase s;
    std::int64_t batch;
  };
  const Case cases[] = {{{17, 19, 23}, 3}, {{64, 64, 16}, 8}, {{37, 16, 37}, 5}, {{1, 1, 1}, 2}, {{8, 8, 8}, 0}};
  for (GemmMath math : kMaths) {
    MathGuard guard(math);
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (const Case& cs : cases) {
          const GemmCase& s = cs.s;
          const std::int64_t lda = (ta ? s.m : s.k) + 2, ldb = (tb ? s.k : s.n) + 1, ldc = s.n + 3;
          // Strides larger than one matrix: the gaps must stay untouched.
          const std::int64_t sa = (ta ? s.k : s.m) * lda + 5, sb = (tb ? s.n : s.k) * ldb + 3, sc = s.m * ldc + 7;
          const std::int64_t nb = std::max<std::int64_t>(1, cs.batch);
          const Floats a = randoms(sa * nb), b = randoms(sb * nb);
          Floats c = randoms(sc * nb);
          Tensor ga = upload(a), gb = upload(b), gc = upload(c);
          cpu().gemm_strided_batched(ta, tb, s.m, s.n, s.k, 0.5f, a.data(), lda, sa, b.data(), ldb, sb, -1.0f,
                                     c.data(), ldc, sc, cs.batch);
          gpu().gemm_strided_batched(ta, tb, s.m, s.n, s.k, 0.5f, dev(ga), lda, sa, dev(gb), ldb, sb, -1.0f,
                                     dev(gc), ldc, sc, cs.batch);
          compare("gemm_strided_batched [" + math_name(math) + "]",
                  std::string(ta ? "T" : "N") + (tb ? "T" : "N") + " " + dims({s.m, s.n, s.k}) + " x" +
                      std::to_string(cs.batch),
                  c, gc, cs.batch == 0 ? kExact : gemm_tol(math));
        }
  }
}

// ---------------------------------------------------------------- LayerNorm

BOOST_AUTO_TEST_CASE(layernorm_forward_and_backward) {
  const float eps = 1e-5f;
  for (auto [rows, cols] : kRowShapes) {
    const std::string what = dims({rows, cols});
    // An offset mean (+3) as activations have: a one-pass variance would cancel.
    const Floats x = randoms(rows * cols, 2.0f, 4.0f), w = randoms(cols, 0.5f, 1.5f), b = randoms(cols);
    Floats y(static_cast<std::size_t>(rows * cols)), mean(static_cast<std::size_t>(rows)),
        rstd(static_cast<std::size_t>(rows));
    Tensor gx = upload(x), gw = upload(w), gb = upload(b), gy = upload(y), gmean = upload(mean), grstd = upload(rstd);
    cpu().layernorm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, cols, eps);
    gpu().layernorm_forward(dev(gx), dev(gw), dev(gb), dev(gy), dev(gmean), dev(grstd), rows, cols, eps);
    compare("layernorm_forward (y)", what, y, gy, kRow);
    compare("layernorm_forward (mean)", what, mean, gmean, kRow);
    compare("layernorm_forward (rstd)", what, rstd, grstd, kRow);

    // The backward ops get the CPU's mean and rstd on both sides, so that each op is compared on its own.
    Tensor cmean = upload(mean), crstd = upload(rstd);
    const Floats dy = randoms(rows * cols);
    Floats dx = randoms(rows * cols);
    Tensor gdy = upload(dy), gdx = upload(dx);
    cpu().layernorm_backward_input(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), rows, cols);
    gpu().layernorm_backward_input(dev(gdy), dev(gx), dev(gw), dev(cmean), dev(crstd), dev(gdx), rows, cols);
    compare("layernorm_backward_input", what, dx, gdx, kRow);

    Floats dw = randoms(cols), dbias = randoms(cols);  // accumulates
    Tensor gdw = upload(dw), gdbias = upload(dbias);
    cpu().layernorm_backward_weight(dy.data(), x.data(), mean.data(), rstd.data(), dw.data(), dbias.data(), rows,
                                    cols);
    gpu().layernorm_backward_weight(dev(gdy), dev(gx), dev(cmean), dev(crstd), dev(gdw), dev(gdbias), rows, cols);
    compare("layernorm_backward_weight (dweight)", what, dw, gdw, kReduce);
    compare("layernorm_backward_weight (dbias)", what, dbias, gdbias, kReduce);
  }
}

// ---------------------------------------------------------------- attention

BOOST_AUTO_TEST_CASE(attention_forward_and_backward) {
  struct Case {
    std::int64_t batch, seq, heads, head_dim;
  };
  // GPT-tiny's head (D = 32 in 4 heads of 128 would do too), an odd T, T = 1, GPT-2's head size.
  const Case cases[] = {{2, 64, 4, 16}, {2, 37, 4, 16}, {1, 1, 2, 8}, {3, 5, 3, 7}, {1, 128, 2, 64}};
  for (GemmMath math : kMaths) {
    MathGuard guard(math);
    for (const Case& cs : cases) {
      const std::int64_t B = cs.batch, T = cs.seq, H = cs.heads, D = cs.head_dim, C = H * D;
      const std::string what = "B" + std::to_string(B) + " T" + std::to_string(T) + " H" + std::to_string(H) + " D" +
                               std::to_string(D) + " [" + math_name(math) + "]";
      const Floats qkv = randoms(B * T * 3 * C);
      Floats out(static_cast<std::size_t>(B * T * C)), probs(static_cast<std::size_t>(B * H * T * T), -1.0f);
      Tensor gqkv = upload(qkv), gout = upload(out), gprobs = upload(probs);
      cpu().attention_forward(qkv.data(), out.data(), probs.data(), B, T, H, D);
      gpu().attention_forward(dev(gqkv), dev(gout), dev(gprobs), B, T, H, D);
      compare("attention_forward (out) [" + math_name(math) + "]", what, out, gout, attention_tol(math, false));
      compare("attention_forward (probs) [" + math_name(math) + "]", what, probs, gprobs, attention_tol(math, false));
      // Above the diagonal the probabilities are exactly 0 on both.
      const Floats gp = download(gprobs, probs.size());
      bool masked = true;
      for (std::int64_t r = 0; r < B * H; ++r)
        for (std::int64_t i = 0; i < T; ++i)
          for (std::int64_t j = i + 1; j < T; ++j) masked = masked && gp[(r * T + i) * T + j] == 0.0f;
      BOOST_TEST(masked, what << ": probabilities above the diagonal are not 0");

      const Floats dout = randoms(B * T * C);
      Floats dqkv = randoms(B * T * 3 * C);  // overwritten
      Tensor gdout = upload(dout), gdqkv = upload(dqkv), cprobs = upload(probs);
      cpu().attention_backward(dout.data(), qkv.data(), probs.data(), dqkv.data(), B, T, H, D);
      gpu().attention_backward(dev(gdout), dev(gqkv), dev(cprobs), dev(gdqkv), B, T, H, D);
      compare("attention_backward [" + math_name(math) + "]", what, dqkv, gdqkv, attention_tol(math, true));
    }
  }
}

// ---------------------------------------------------------------- losses

// Flash attention (long sequences) against the CPU's materialised attention: the same output and gradients, in fp32
// (on a GPU on the CUDA cores: no GEMM math applies), summed in another order and with an online softmax: the fp32
// attention tolerance. Head sizes 16, 64 (GPT-2's) and 80 exercise the GPU's 32-, 64- and 128-wide register tiles;
// 8 and 80 the CPU's padding to a multiple of 16; T crosses the GPU's 32-key and 64-row tiles and the CPU's 64 x 64
// blocks at odd points. The saved state holds the output and each row's log-sum-exp. In harness mode this is the
// CPU's own flash attention (flash_attention.cpp) against its materialised path.
BOOST_AUTO_TEST_CASE(flash_attention_matches_the_materialised_cpu_attention) {
  struct Case {
    std::int64_t batch, seq, heads, head_dim;
  };
  const Case cases[] = {{2, 64, 4, 16},  {2, 37, 3, 16}, {1, 1, 2, 8},
                        {1, 130, 2, 64}, {2, 97, 2, 80}, {1, 200, 2, 32}};
  for (const Case& cs : cases) {
    const std::int64_t B = cs.batch, T = cs.seq, H = cs.heads, D = cs.head_dim, C = H * D;
    const std::string what = "B" + std::to_string(B) + " T" + std::to_string(T) + " H" + std::to_string(H) + " D" +
                             std::to_string(D);
    const Floats qkv = randoms(B * T * 3 * C, -2.0f, 2.0f);
    Floats out(static_cast<std::size_t>(B * T * C)), probs(static_cast<std::size_t>(B * H * T * T));
    cpu().attention_forward(qkv.data(), out.data(), probs.data(), B, T, H, D);
    Tensor gqkv = upload(qkv), gout = upload(Floats(out.size(), -1.0f));
    Tensor state = upload(Floats(static_cast<std::size_t>(B * H * T * (D + 1)), -1.0f));
    gpu().flash_attention_forward(dev(gqkv), dev(gout), dev(state), B, T, H, D);
    compare("flash_attention_forward (out)", what, out, gout, attention_tol(GemmMath::fp32, false));
    // The state's rows: the output (head-major) and the row's log-sum-exp.
    const Floats st = download(state, static_cast<std::size_t>(B * H * T * (D + 1)));
    compare("flash_attention_forward (state)", what, flash_state_reference(qkv, out, B, T, H, D), st,
            attention_tol(GemmMath::fp32, false));

    const Floats dout = randoms(B * T * C);
    Floats dqkv(qkv.size());
    cpu().attention_backward(dout.data(), qkv.data(), probs.data(), dqkv.data(), B, T, H, D);
    Tensor gdout = upload(dout), gdqkv = upload(Floats(qkv.size(), -1.0f));
    gpu().flash_attention_backward(dev(gdout), dev(gqkv), dev(state), dev(gdqkv), B, T, H, D);
    compare("flash_attention_backward", what, dqkv, gdqkv, attention_tol(GemmMath::fp32, true));
  }
  if (tested() == Device::cpu) return;  // the CPU's flash attention takes any head size
  BOOST_TEST(error_of([&] {
               Tensor t = upload(Floats(1));
               gpu().flash_attention_forward(dev(t), dev(t), dev(t), 1, 1, 1, 129);
             }) == "flash_attention_forward: head dimension 129 is larger than the flash kernels' 128");
}

BOOST_AUTO_TEST_CASE(cross_entropy_forward_and_backward) {
  struct Case {
    std::int64_t rows, vocab, per_sample;
  };
  const Case cases[] = {{0, 5, 1}, {1, 1, 1}, {6, 5, 2}, {12, 37, 4}, {64, 256, 64}, {16, 50257, 8}, {3, 4099, 1}};
  for (const Case& cs : cases) {
    const std::string what = dims({cs.rows, cs.vocab}) + "/" + std::to_string(cs.per_sample);
    const std::int64_t samples = cs.rows / cs.per_sample;
    const Floats logits = randoms(cs.rows * cs.vocab, -4.0f, 4.0f), dloss = randoms(samples, 0.1f, 2.0f);
    const Ints labels = random_ints(cs.rows, 0, static_cast<int>(cs.vocab) - 1);
    Floats loss = randoms(samples), dlogits = randoms(cs.rows * cs.vocab);
    Tensor glogits = upload(logits), gdloss = upload(dloss), glabels = upload(labels), gloss = upload(loss),
           gdlogits = upload(dlogits);
    cpu().cross_entropy_forward(logits.data(), labels.data(), loss.data(), cs.rows, cs.vocab, cs.per_sample);
    gpu().cross_entropy_forward(dev(glogits), dev_i(glabels), dev(gloss), cs.rows, cs.vocab, cs.per_sample);
    compare("cross_entropy_forward", what, loss, gloss, kRow);
    cpu().cross_entropy_backward(logits.data(), labels.data(), dloss.data(), dlogits.data(), cs.rows, cs.vocab,
                                 cs.per_sample);
    gpu().cross_entropy_backward(dev(glogits), dev_i(glabels), dev(gdloss), dev(gdlogits), cs.rows, cs.vocab,
                                 cs.per_sample);
    compare("cross_entropy_backward", what, dlogits, gdlogits, kRow);
  }
}

BOOST_AUTO_TEST_CASE(out_of_range_labels_and_tokens_give_the_cpu_message) {
  const std::int64_t rows = 12, vocab = 7, per_sample = 4;
  const Floats logits = randoms(rows * vocab), dloss = randoms(rows / per_sample);
  Floats loss(3), dlogits(static_cast<std::size_t>(rows * vocab));
  Tensor glogits = upload(logits), gdloss = upload(dloss), gloss = upload(loss), gdlogits = upload(dlogits);
  for (auto [bad_row, bad_value] : {std::pair<int, int>{5, 7}, {0, -1}, {11, 1000}}) {
    Ints labels = random_ints(rows, 0, vocab - 1);
    labels[bad_row] = bad_value;
    if (bad_row + 1 < rows) labels[rows - 1] = -5;  // a second bad label further on: the first one is named
    Tensor glabels = upload(labels);
    const std::string want_fwd = error_of(
        [&] { cpu().cross_entropy_forward(logits.data(), labels.data(), loss.data(), rows, vocab, per_sample); });
    BOOST_TEST(want_fwd != "(no error)");
    BOOST_TEST(error_of([&] {
                 gpu().cross_entropy_forward(dev(glogits), dev_i(glabels), dev(gloss), rows, vocab, per_sample);
                 gpu().synchronize();
               }) == want_fwd);
    const std::string want_bwd = error_of([&] {
      cpu().cross_entropy_backward(logits.data(), labels.data(), dloss.data(), dlogits.data(), rows, vocab,
                                   per_sample);
    });
    BOOST_TEST(want_bwd != "(no error)");
    BOOST_TEST(error_of([&] {
                 gpu().cross_entropy_backward(dev(glogits), dev_i(glabels), dev(gdloss), dev(gdlogits), rows, vocab,
                                              per_sample);
                 gpu().synchronize();
               }) == want_bwd);
  }
  // Tokens: the same for the embedding.
  const std::int64_t B = 2, T = 5, Cd = 4, V = 9;
  const Floats wte = randoms(V * Cd), wpe = randoms(T * Cd);
  Floats out(static_cast<std::size_t>(B * T * Cd));
  Tensor gwte = upload(wte), gwpe = upload(wpe), gout = upload(out);
  for (int bad : {9, -1, 1 << 30}) {
    Ints tokens = random_ints(B * T, 0, V - 1);
    tokens[7] = bad;
    Tensor gtokens = upload(tokens);
    const std::string want =
        error_of([&] { cpu().embedding_forward(tokens.data(), wte.data(), wpe.data(), out.data(), B, T, Cd, V); });
    BOOST_TEST(want != "(no error)");
    BOOST_TEST(error_of([&] {
                 gpu().embedding_forward(dev_i(gtokens), dev(gwte), dev(gwpe), dev(gout), B, T, Cd, V);
                 gpu().synchronize();
               }) == want);
  }
  // The backend still works after the errors.
  Floats a = randoms(100), y(100);
  Tensor ga = upload(a), gy = upload(y);
  cpu().scale(a.data(), 2.0f, 100);
  gpu().scale(dev(ga), 2.0f, 100);
  gpu().synchronize();
  compare("scale", "after errors", a, ga, kExact);
}

BOOST_AUTO_TEST_CASE(mse_forward_and_backward) {
  for (auto [batch, per] : {std::array<std::int64_t, 2>{0, 4}, {1, 1}, {3, 37}, {4, 4097}, {16, 10}}) {
    const std::string what = dims({batch, per});
    const Floats x = randoms(batch * per), t = randoms(batch * per), dloss = randoms(batch, 0.1f, 2.0f);
    Floats loss = randoms(batch), dx = randoms(batch * per);
    Tensor gx = upload(x), gt = upload(t), gdloss = upload(dloss), gloss = upload(loss), gdx = upload(dx);
    cpu().mse_forward(x.data(), t.data(), loss.data(), batch, per);
    gpu().mse_forward(dev(gx), dev(gt), dev(gloss), batch, per);
    compare("mse_forward", what, loss, gloss, kRow);
    cpu().mse_backward(x.data(), t.data(), dloss.data(), dx.data(), batch, per);
    gpu().mse_backward(dev(gx), dev(gt), dev(gdloss), dev(gdx), batch, per);
    compare("mse_backward", what, dx, gdx, kRow);
  }
}

// ---------------------------------------------------------------- embedding

BOOST_AUTO_TEST_CASE(embedding_forward_and_backward) {
  struct Case {
    std::int64_t batch, seq, dim, vocab;
  };
  // Small vocabularies against many tokens: the scatter-add sees many collisions (atomics on the GPU).
  const Case cases[] = {{0, 4, 8, 16}, {1, 1, 1, 1}, {3, 37, 5, 11}, {2, 64, 128, 256}, {4, 256, 768, 50}};
  for (const Case& cs : cases) {
    const std::int64_t B = cs.batch, T = cs.seq, Cd = cs.dim, V = cs.vocab;
    const std::string what = "B" + std::to_string(B) + " T" + std::to_string(T) + " C" + std::to_string(Cd) + " V" +
                             std::to_string(V);
    const Ints tokens = random_ints(B * T, 0, static_cast<int>(V) - 1);
    const Floats wte = randoms(V * Cd), wpe = randoms(T * Cd);
    Floats out = randoms(B * T * Cd);
    Tensor gtokens = upload(tokens), gwte = upload(wte), gwpe = upload(wpe), gout = upload(out);
    cpu().embedding_forward(tokens.data(), wte.data(), wpe.data(), out.data(), B, T, Cd, V);
    gpu().embedding_forward(dev_i(gtokens), dev(gwte), dev(gwpe), dev(gout), B, T, Cd, V);
    compare("embedding_forward", what, out, gout, kExact);

    const Floats dout = randoms(B * T * Cd);
    Floats dwte = randoms(V * Cd), dwpe = randoms(T * Cd);  // accumulates
    Tensor gdout = upload(dout), gdwte = upload(dwte), gdwpe = upload(dwpe);
    cpu().embedding_backward(tokens.data(), dout.data(), dwte.data(), dwpe.data(), B, T, Cd);
    gpu().embedding_backward(dev_i(gtokens), dev(gdout), dev(gdwte), dev(gdwpe), B, T, Cd);
    compare("embedding_backward (dwte)", what, dwte, gdwte, kReduce);
    compare("embedding_backward (dwpe)", what, dwpe, gdwpe, kReduce);
  }
}

// ---------------------------------------------------------------- optimizers and the gradient norm

BOOST_AUTO_TEST_CASE(optimizers_over_three_steps) {
  for (std::int64_t n : kSizes) {
    const std::string what = dims({n});
    {
      Floats p = randoms(n), buf(static_cast<std::size_t>(n), 0.0f);
      Tensor gp = upload(p), gbuf = upload(buf);
      for (int step = 0; step < 3; ++step) {
        const Floats g = randoms(n);
        Tensor gg = upload(g);
        cpu().sgd_momentum(p.data(), g.data(), buf.data(), n, 0.1f, 0.9f, 0.01f);
        gpu().sgd_momentum(dev(gp), dev(gg), dev(gbuf), n, 0.1f, 0.9f, 0.01f);
      }
      compare("sgd_momentum (param)", what, p, gp, kRow);
      compare("sgd_momentum (momentum)", what, buf, gbuf, kRow);
    }
    {
      Floats p = randoms(n), m(static_cast<std::size_t>(n), 0.0f), v(static_cast<std::size_t>(n), 0.0f);
      Tensor gp = upload(p), gm = upload(m), gv = upload(v);
      for (int step = 1; step <= 3; ++step) {
        const Floats g = randoms(n, -0.1f, 0.1f);
        Tensor gg = upload(g);
        cpu().adamw(p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
        gpu().adamw(dev(gp), dev(gg), dev(gm), dev(gv), n, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, step);
      }
      compare("adamw (param)", what, p, gp, kRow);
      compare("adamw (m)", what, m, gm, kRow);
      compare("adamw (v)", what, v, gv, kRow);
    }
  }
}

// The fused multi-tensor AdamW does per element what adamw does: on the GPU its results equal adamw's bit for bit,
// over more tensors than one launch takes (70: two launches) of every size, each with its own weight decay, and
// its bfloat16 copies equal to_bf16 of the updated params (adamw against the CPU: optimizers_over_three_steps).
BOOST_AUTO_TEST_CASE(adamw_multi_equals_adamw_per_tensor) {
  const int count = 70;
  std::vector<Floats> p;
  std::vector<Tensor> fused_p, fused_m, fused_v, fused_h, one_p, one_m, one_v, grads;
  std::vector<Backend::AdamwTensor> fused;
  for (int i = 0; i < count; ++i) {
    const std::int64_t n = kSizes[i % std::size(kSizes)] + i;
    p.push_back(randoms(n));
    const Floats g = randoms(n, -0.1f, 0.1f);
    const Floats zeros(static_cast<std::size_t>(n), 0.0f);
    fused_p.push_back(upload(p.back()));
    fused_m.push_back(upload(zeros));
    fused_v.push_back(upload(zeros));
    fused_h.push_back(Tensor::empty({n + 1}, DType::bfloat16, tested()));
    one_p.push_back(upload(p.back()));
    one_m.push_back(upload(zeros));
    one_v.push_back(upload(zeros));
    grads.push_back(upload(g));
  }
  for (int i = 0; i < count; ++i)
    fused.push_back({dev(fused_p[i]), dev(grads[i]), dev(fused_m[i]), dev(fused_v[i]),
                     i % 2 ? fused_h[i].bf16() : nullptr, static_cast<std::int64_t>(p[i].size()), 0.01f * (i % 3)});
  for (int step = 1; step <= 3; ++step) {
    gpu().adamw_multi(fused.data(), count, 1e-3f, 0.9f, 0.95f, 1e-8f, step);
    for (int i = 0; i < count; ++i) {
      const std::int64_t n = static_cast<std::int64_t>(p[i].size());
      gpu().adamw(dev(one_p[i]), dev(grads[i]), dev(one_m[i]), dev(one_v[i]), n, 1e-3f, 0.9f, 0.95f, 1e-8f,
                  0.01f * (i % 3), step);
    }
  }
  for (int i = 0; i < count; ++i) {
    const std::size_t n = p[i].size();
    const Floats a = download(fused_p[i], n), b = download(one_p[i], n);
    BOOST_TEST(same_bits(a, b), "adamw_multi param of tensor " << i);
    BOOST_TEST((download(fused_m[i], n) == download(one_m[i], n)), "adamw_multi m of tensor " << i);
    if (i % 2) BOOST_TEST((download_halves(fused_h[i], n) == to_halves(b)), "adamw_multi bf16 copy of tensor " << i);
  }
}

BOOST_AUTO_TEST_CASE(sum_squares_in_double) {
  for (std::int64_t n : kSizes) {
    const Floats x = randoms(n);
    Tensor gx = upload(x);
    const double c = cpu().sum_squares(x.data(), n), g = gpu().sum_squares(dev(gx), n);
    compare("sum_squares", dims({n}), Floats{static_cast<float>(c)}, Floats{static_cast<float>(g)}, kReduce);
    if (n == 0) BOOST_TEST(g == 0.0);
  }
  // 1 + n * 2^-24: a float accumulator would drop every small term; the GPU must sum in double (or compensate).
  const std::int64_t n = 100001;
  Floats x(static_cast<std::size_t>(n), std::ldexp(1.0f, -12));
  x[0] = 1.0f;
  Tensor gx = upload(x);
  const double want = 1.0 + static_cast<double>(n - 1) * std::ldexp(1.0, -24);
  BOOST_TEST(std::fabs(gpu().sum_squares(dev(gx), n) - want) < 1e-9);
  // Several arrays in one call (one wait): each equal to its own sum_squares, bit for bit, empty ones 0.
  const Floats y = randoms(4099);
  Tensor gy = upload(y);
  const float* xs[] = {dev(gx), dev(gy), dev(gy) + 1, dev(gy)};
  const std::int64_t ns[] = {n, 4099, 4098, 0};
  double each[4] = {-1, -1, -1, -1};
  gpu().sum_squares_each(xs, ns, 4, each);
  for (int i = 0; i < 4; ++i) BOOST_TEST(each[i] == gpu().sum_squares(xs[i], ns[i]));
}

// ---------------------------------------------------------------- the op layer on CUDA tensors

BOOST_AUTO_TEST_CASE(ops_layer_runs_on_cuda_tensors) {
  // libpipe::ops dispatches on the tensors' device: a linear layer through ops on CUDA tensors matches the CPU.
  const std::int64_t R = 24, in = 40, out = 56;
  const Floats x = randoms(R * in), w = randoms(out * in, -0.1f, 0.1f), b = randoms(out);
  auto host = [](const Floats& v, const libpipe::Shape& shape) {
    Tensor t = Tensor::empty(shape, DType::float32);
    std::memcpy(t.data(), v.data(), v.size() * sizeof(float));
    return t;
  };
  auto on_gpu = [](const Floats& v, const libpipe::Shape& shape) {
    Tensor t = Tensor::empty(shape, DType::float32, tested());
    gpu().copy_from_host(t.data(), v.data(), v.size() * sizeof(float));
    return t;
  };
  Tensor yc = libpipe::ops::linear(host(x, {R, in}), host(w, {out, in}), host(b, {out}));
  Tensor yg = libpipe::ops::linear(on_gpu(x, {R, in}), on_gpu(w, {out, in}), on_gpu(b, {out}));
  BOOST_TEST((yg.device() == tested()));
  Floats yc_h(static_cast<std::size_t>(R * out));
  std::memcpy(yc_h.data(), yc.data(), yc_h.size() * sizeof(float));
  compare("ops::linear", dims({R, in, out}), yc_h, yg, gemm_tol(GemmMath::fp32));
}

// ---------------------------------------------------------------- Llama's ops (rmsnorm.cu, rotary.cu, swiglu.cu)

BOOST_AUTO_TEST_CASE(llama_ops_match_the_cpu) {
  // RMSNorm, rotary embedding with grouped key/value heads and the SwiGLU gate through libpipe::ops on the device
  // under test against the CPU, in float32 and in bfloat16 (the native kernels).
  namespace ops = libpipe::ops;
  const std::int64_t B = 2, T = 37, H = 8, KV = 2, D = 64, C = H * D, F = 96;
  for (DType dtype : {DType::float32, DType::bfloat16}) {
    const bool bf16 = dtype == DType::bfloat16;
    const std::string tag = bf16 ? " (bf16)" : "";
    auto pair_of = [&](const Floats& v, const libpipe::Shape& shape) {
      Tensor host = Tensor::empty(shape, DType::float32);
      std::memcpy(host.data(), v.data(), v.size() * sizeof(float));
      Tensor typed = ops::to_dtype(host, dtype);
      return std::make_pair(typed, ops::to_device(typed, tested()));
    };
    auto host_floats = [](const Tensor& t) {
      const Tensor wide = ops::to_device(ops::to_dtype(t, DType::float32), Device::cpu);
      Floats v(static_cast<std::size_t>(wide.numel()));
      std::memcpy(v.data(), wide.data(), v.size() * sizeof(float));
      return v;
    };
    const Tol row = bf16 ? Tol{8e-3, 0.1} : kRow;
    const Tol elementwise = bf16 ? Tol{8e-3, 0.01} : kElementwise;

    const auto x = pair_of(randoms(B * T * C, -2.0f, 2.0f), {B, T, C});
    const auto w = pair_of(randoms(C, 0.5f, 1.5f), {C});
    const auto dy = pair_of(randoms(B * T * C), {B, T, C});
    Tensor rc, rg;
    const Tensor yc = ops::rms_norm(x.first, w.first, 1e-5f, rc);
    const Tensor yg = ops::rms_norm(x.second, w.second, 1e-5f, rg);
    compare("rms_norm" + tag, dims({B, T, C}), host_floats(yc), host_floats(yg), row);
    compare("rms_norm_backward_input" + tag, dims({B, T, C}),
            host_floats(ops::rms_norm_backward_input(dy.first, x.first, w.first, rc)),
            host_floats(ops::rms_norm_backward_input(dy.second, x.second, w.second, ops::to_device(rc, tested()))),
            row);
    Tensor dwc = Tensor::zeros({C}, DType::float32), dwg = Tensor::zeros({C}, DType::float32, tested());
    ops::rms_norm_backward_weight(dy.first, x.first, rc, dwc);
    ops::rms_norm_backward_weight(dy.second, x.second, ops::to_device(rc, tested()), dwg);
    compare("rms_norm_backward_weight" + tag, dims({B, T, C}), host_floats(dwc), host_floats(dwg), kReduce);

    const auto proj = pair_of(randoms(B * T * (H + 2 * KV) * D), {B, T, (H + 2 * KV) * D});
    const auto dqkv = pair_of(randoms(B * T * 3 * C), {B, T, 3 * C});
    compare("rotary_gqa" + tag, dims({B, T, H, KV, D}), host_floats(ops::rotary_gqa(proj.first, H, KV, 500000.0f)),
            host_floats(ops::rotary_gqa(proj.second, H, KV, 500000.0f)), elementwise);
    compare("rotary_gqa_backward" + tag, dims({B, T, H, KV, D}),
            host_floats(ops::rotary_gqa_backward(dqkv.first, H, KV, 500000.0f)),
            host_floats(ops::rotary_gqa_backward(dqkv.second, H, KV, 500000.0f)), row);

    const auto h = pair_of(randoms(B * T * 2 * F, -4.0f, 4.0f), {B, T, 2 * F});
    const auto da = pair_of(randoms(B * T * F), {B, T, F});
    compare("swiglu" + tag, dims({B, T, F}), host_floats(ops::swiglu(h.first)), host_floats(ops::swiglu(h.second)),
            elementwise);
    compare("swiglu_backward" + tag, dims({B, T, F}), host_floats(ops::swiglu_backward(h.first, da.first)),
            host_floats(ops::swiglu_backward(h.second, da.second)), elementwise);

    // Embedding without a position table (an undefined wpe): the token rows alone, and their scatter-add.
    const std::int64_t V = 50;
    const auto wte = pair_of(randoms(V * C), {V, C});
    Tensor tokens = Tensor::empty({B, T}, DType::int32);
    for (std::int64_t i = 0; i < B * T; ++i) tokens.host_data<std::int32_t>()[i] = static_cast<std::int32_t>(i * 7 % V);
    const Tensor gtokens = ops::to_device(tokens, tested());
    compare("embedding without wpe" + tag, dims({B, T, C}), host_floats(ops::embedding(tokens, wte.first, Tensor())),
            host_floats(ops::embedding(gtokens, wte.second, Tensor())), kExact);
    Tensor dwte_c = Tensor::zeros({V, C}, DType::float32), dwte_g = Tensor::zeros({V, C}, DType::float32, tested());
    Tensor no_wpe;
    ops::embedding_backward(tokens, dy.first, dwte_c, no_wpe);
    ops::embedding_backward(gtokens, dy.second, dwte_g, no_wpe);
    compare("embedding_backward without wpe" + tag, dims({B, T, C}), host_floats(dwte_c), host_floats(dwte_g),
            kReduce);
  }
}

int main(int argc, char** argv) {
  const bool probe = argc > 1 && std::string(argv[1]) == "--probe";
  const char* harness = std::getenv("PIPE_CUDA_OPS_HARNESS");
  if (!probe && harness && std::string(harness) == "1") {
    std::printf("cuda_ops harness: the CPU backend on both sides (checks the test, not a GPU)\n");
    tested() = Device::cpu;
    return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
  }
  if (libpipe::cuda_device_count() == 0) {
    std::printf("SKIPPED: %s\n", libpipe::cuda_unavailable_reason().c_str());
    return 77;
  }
  libpipe::select_cuda_device(0);
  if (probe) {
    std::printf("cuda devices: %d (this process: %s)\n", libpipe::cuda_device_count(),
                libpipe::cuda_device_description().c_str());
    return 0;
  }
  std::printf("cuda_ops on %s (%d device(s) visible)\n", libpipe::cuda_device_description().c_str(),
              libpipe::cuda_device_count());
  libpipe::set_cuda_gemm_math(GemmMath::fp32);
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
