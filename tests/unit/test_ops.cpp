// The op layer on the CPU backend: every forward op against a naive
// double-precision reference, every backward op against central finite
// differences of that reference (so the backward is checked against the
// forward's definition, not against a second derivation), the causal mask,
// optimizer steps computed by hand with PyTorch's formulas, the "+=" ops, and
// the text of the errors.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE ops
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "pipe/backend.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"
#include "pipe/ops.hpp"
#include "pipe/tensor.hpp"
#include "test_util.hpp"

using libpipe::Device;
using libpipe::DType;
using libpipe::Shape;
using libpipe::Tensor;
namespace ops = libpipe::ops;

namespace {

using Vec = std::vector<double>;

std::mt19937& rng() {
  static std::mt19937 gen(20240611);
  return gen;
}

Tensor random_tensor(const Shape& shape, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::empty(shape, DType::float32);
  std::uniform_real_distribution<float> dist(static_cast<float>(lo), static_cast<float>(hi));
  float* p = t.host_data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng());
  return t;
}

Tensor random_labels(const Shape& shape, int classes) {
  Tensor t = Tensor::empty(shape, DType::int32);
  std::uniform_int_distribution<int> dist(0, classes - 1);
  auto* p = t.host_data<std::int32_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng());
  return t;
}

Tensor from_vec(const Shape& shape, const Vec& v) {
  Tensor t = Tensor::empty(shape, DType::float32);
  float* p = t.host_data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(v[static_cast<std::size_t>(i)]);
  return t;
}

Vec to_vec(const Tensor& t) {
  Tensor c = t;  // host_data is non-const; the storage is shared, not copied
  const float* p = c.host_data<float>();
  return Vec(p, p + t.numel());
}

// Fills with NaN: an op that reads its output before writing it shows up.
Tensor nan_tensor(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::float32);
  ops::fill(t, std::numeric_limits<float>::quiet_NaN());
  return t;
}

// |actual - expected| <= atol + rtol |expected| everywhere; reports the worst element.
void check_close(const Vec& actual, const Vec& expected, double atol, double rtol, const std::string& what) {
  BOOST_TEST_REQUIRE(actual.size() == expected.size(), what << ": size " << actual.size() << " vs " << expected.size());
  double worst = 0.0, max_diff = 0.0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double diff = std::fabs(actual[i] - expected[i]);
    const double bound = atol + rtol * std::fabs(expected[i]);
    const double ratio = !std::isfinite(actual[i]) ? 1e30 : diff <= bound ? (bound > 0 ? diff / bound : 0.0) : 1e30;
    if (ratio > worst || i == 0) worst = ratio, at = i;
    max_diff = std::max(max_diff, diff);
  }
  BOOST_TEST_MESSAGE(what << ": max |diff| " << max_diff);
  BOOST_TEST(worst <= 1.0, what << ": element " << at << " is " << actual[at] << ", expected " << expected[at]
                                << " (max |diff| " << max_diff << ")");
}

void check_close(const Tensor& actual, const Vec& expected, double atol, double rtol, const std::string& what) {
  check_close(to_vec(actual), expected, atol, rtol, what);
}

// Central differences of f at x in double, for every element (or those in `only`).
Vec numeric_grad(const std::function<double(const Vec&)>& f, Vec x, const std::vector<std::size_t>& only = {}) {
  Vec g(x.size(), 0.0);
  auto one = [&](std::size_t i) {
    const double h = 1e-6 * std::max(1.0, std::fabs(x[i]));
    const double keep = x[i];
    x[i] = keep + h;
    const double up = f(x);
    x[i] = keep - h;
    const double down = f(x);
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  };
  if (only.empty())
    for (std::size_t i = 0; i < x.size(); ++i) one(i);
  else
    for (std::size_t i : only) one(i);
  return g;
}

std::vector<std::size_t> sample_indices(std::size_t n, std::size_t count);
Vec pick(const Vec& v, const std::vector<std::size_t>& idx);

// A backward op's result against central differences of L = f(x): every element of a small x, a random
// sample of 300 (plus the first and last 50) of a large one, so that the suite stays fast.
void check_grad(const Tensor& got, const std::function<double(const Vec&)>& f, const Vec& x, double atol, double rtol,
                const std::string& what) {
  if (x.size() <= 1500) return check_close(got, numeric_grad(f, x), atol, rtol, what);
  std::vector<std::size_t> idx = sample_indices(x.size(), 300);
  for (std::size_t i = 0; i < 50; ++i) idx.push_back(i), idx.push_back(x.size() - 1 - i);
  check_close(pick(to_vec(got), idx), pick(numeric_grad(f, x, idx), idx), atol, rtol, what + " (sampled)");
}

// Keeps the entries of v listed in idx (to compare a sampled numeric gradient).
Vec pick(const Vec& v, const std::vector<std::size_t>& idx) {
  Vec out;
  for (std::size_t i : idx) out.push_back(v[i]);
  return out;
}

std::vector<std::size_t> sample_indices(std::size_t n, std::size_t count) {
  std::vector<std::size_t> idx;
  std::uniform_int_distribution<std::size_t> dist(0, n - 1);
  for (std::size_t i = 0; i < count; ++i) idx.push_back(dist(rng()));
  return idx;
}

Vec neg(Vec v) {
  for (double& x : v) x = -x;
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

using pipe_test::error_of;

// ---- double-precision references

// y [rows, out] = x [rows, in] W^T + b
Vec ref_linear(const Vec& x, const Vec& w, const Vec& b, std::int64_t rows, std::int64_t in, std::int64_t out) {
  Vec y(static_cast<std::size_t>(rows * out));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[o];
      for (std::int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

double ref_gelu(double x) {
  const double s = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(s * (x + 0.044715 * x * x * x)));
}

Vec ref_gelu(const Vec& x) {
  Vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = ref_gelu(x[i]);
  return y;
}

Vec ref_relu(const Vec& x) {
  Vec y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] > 0 ? x[i] : 0.0;
  return y;
}

Vec ref_layernorm(const Vec& x, const Vec& w, const Vec& b, std::int64_t rows, std::int64_t cols, double eps) {
  Vec y(x.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    double m = 0, v = 0;
    for (std::int64_t c = 0; c < cols; ++c) m += x[r * cols + c];
    m /= cols;
    for (std::int64_t c = 0; c < cols; ++c) v += (x[r * cols + c] - m) * (x[r * cols + c] - m);
    v /= cols;
    for (std::int64_t c = 0; c < cols; ++c) y[r * cols + c] = (x[r * cols + c] - m) / std::sqrt(v + eps) * w[c] + b[c];
  }
  return y;
}

// Causal attention: qkv [B, T, 3C] -> out [B, T, C], probs [B, H, T, T].
void ref_attention(const Vec& qkv, std::int64_t B, std::int64_t T, std::int64_t H, std::int64_t D, Vec& out,
                   Vec* probs = nullptr) {
  const std::int64_t C = H * D;
  out.assign(static_cast<std::size_t>(B * T * C), 0.0);
  if (probs) probs->assign(static_cast<std::size_t>(B * H * T * T), 0.0);
  Vec s(static_cast<std::size_t>(T));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t i = 0; i < T; ++i) {
        auto q = [&](std::int64_t t, std::int64_t d) { return qkv[(b * T + t) * 3 * C + h * D + d]; };
        auto k = [&](std::int64_t t, std::int64_t d) { return qkv[(b * T + t) * 3 * C + C + h * D + d]; };
        auto v = [&](std::int64_t t, std::int64_t d) { return qkv[(b * T + t) * 3 * C + 2 * C + h * D + d]; };
        double mx = -1e300;
        for (std::int64_t j = 0; j <= i; ++j) {
          double dotp = 0;
          for (std::int64_t d = 0; d < D; ++d) dotp += q(i, d) * k(j, d);
          s[j] = dotp / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (std::int64_t j = 0; j <= i; ++j) z += (s[j] = std::exp(s[j] - mx));
        for (std::int64_t j = 0; j <= i; ++j) {
          const double p = s[j] / z;
          if (probs) (*probs)[((b * H + h) * T + i) * T + j] = p;
          for (std::int64_t d = 0; d < D; ++d) out[(b * T + i) * C + h * D + d] += p * v(j, d);
        }
      }
}

// Per-sample mean of -log softmax[label] over rows_per_sample rows.
Vec ref_cross_entropy(const Vec& logits, const std::vector<int>& labels, std::int64_t rows, std::int64_t vocab,
                      std::int64_t per_sample) {
  Vec loss(static_cast<std::size_t>(rows / per_sample), 0.0);
  for (std::int64_t r = 0; r < rows; ++r) {
    double mx = -1e300;
    for (std::int64_t j = 0; j < vocab; ++j) mx = std::max(mx, logits[r * vocab + j]);
    double z = 0;
    for (std::int64_t j = 0; j < vocab; ++j) z += std::exp(logits[r * vocab + j] - mx);
    loss[r / per_sample] += (std::log(z) + mx - logits[r * vocab + labels[r]]) / per_sample;
  }
  return loss;
}

std::vector<int> labels_of(const Tensor& t) {
  Tensor c = t;
  const auto* p = c.host_data<std::int32_t>();
  return std::vector<int>(p, p + t.numel());
}

}  // namespace

// ---------------------------------------------------------------- basics

BOOST_AUTO_TEST_CASE(backend_lookup_and_threads) {
  BOOST_TEST(std::string(libpipe::backend_for(Device::cpu).name()) == "cpu");
  // Without a usable GPU (no CUDA in this build, no driver, no device) asking for one says why, in one line.
  if (libpipe::cuda_device_count() == 0)
    BOOST_TEST(error_of([] { libpipe::backend_for(Device::cuda); }) ==
               "device 'cuda': " + libpipe::cuda_unavailable_reason());
  BOOST_TEST(libpipe::cpu_threads() == 1);
  libpipe::set_cpu_threads(2);
  BOOST_TEST(libpipe::cpu_threads() == 2);
  libpipe::set_cpu_threads(1);
  BOOST_TEST(error_of([] { libpipe::set_cpu_threads(0); }) ==
             "set_cpu_threads: thread count must be at least 1, got 0");
}

#if defined(__SANITIZE_ADDRESS__)
#define PIPE_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PIPE_TEST_UNDER_ASAN 1
#endif
#endif

// Host blocks of 64 KiB and more are kept when freed and handed out again at the same size (cpu_allocator.hpp),
// so that a training step's resident memory is its tensors' peak; a reused block still comes back zeroed.
BOOST_AUTO_TEST_CASE(host_blocks_are_reused_and_zeroed) {
  const std::size_t before = libpipe::allocated_bytes(Device::cpu);
  const Shape large{256, 1024};  // 1 MiB of float32
  void* first = nullptr;
  {
    Tensor t = Tensor::empty(large, DType::float32, Device::cpu);
    first = t.data();
    BOOST_TEST(reinterpret_cast<std::uintptr_t>(first) % 64 == 0);
    BOOST_TEST(libpipe::allocated_bytes(Device::cpu) == before + t.bytes());
    for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = 1.5f;
  }
  BOOST_TEST(libpipe::allocated_bytes(Device::cpu) == before);
  Tensor again = Tensor::zeros(large, DType::float32, Device::cpu);
#ifndef PIPE_TEST_UNDER_ASAN  // under ASan every block comes from malloc, so a use after free is caught
  BOOST_TEST(again.data() == first);
#endif
  std::size_t nonzero = 0;
  for (std::int64_t i = 0; i < again.numel(); ++i) nonzero += again.f32()[i] != 0.0f;
  BOOST_TEST(nonzero == 0u);
  // Another size does not take the cached block, and both are counted while alive.
  Tensor other = Tensor::empty({257, 1024}, DType::float32, Device::cpu);
  BOOST_TEST(other.data() != again.data());
  BOOST_TEST(libpipe::allocated_bytes(Device::cpu) == before + again.bytes() + other.bytes());
  BOOST_TEST(libpipe::peak_allocated_bytes(Device::cpu) >= before + again.bytes() + other.bytes());
  // Small blocks come from malloc and are aligned the same way.
  Tensor small = Tensor::zeros({3}, DType::float32, Device::cpu);
  BOOST_TEST(reinterpret_cast<std::uintptr_t>(small.data()) % 64 == 0);
  BOOST_TEST(small.f32()[2] == 0.0f);
}

BOOST_AUTO_TEST_CASE(elementwise_basics) {
  for (std::int64_t n : {1, 7, 33, 1000}) {
    Tensor a = random_tensor({n}), b = random_tensor({n});
    Vec va = to_vec(a), vb = to_vec(b), sum(va.size()), scaled(va.size());
    for (std::size_t i = 0; i < va.size(); ++i) sum[i] = va[i] + vb[i], scaled[i] = va[i] * 0.5f;
    check_close(ops::add(a, b), sum, 0, 1e-7, "add");
    Tensor y = ops::clone(a);
    check_close(y, va, 0, 0, "clone");
    ops::accumulate(y, b);
    check_close(y, sum, 0, 1e-7, "accumulate");
    Tensor s = ops::clone(a);
    ops::scale(s, 0.5f);
    check_close(s, scaled, 0, 0, "scale");
    ops::fill(s, 3.0f);
    check_close(s, Vec(va.size(), 3.0), 0, 0, "fill");
  }
  // clone of int32 keeps the values and dtype
  Tensor labels = random_labels({5}, 100);
  Tensor c = ops::clone(labels);
  BOOST_TEST(c.dtype() == DType::int32);
  BOOST_TEST(labels_of(c) == labels_of(labels));
}

BOOST_AUTO_TEST_CASE(sum_squares_in_double) {
  // 1 + 2^-24 * n: float accumulation would lose every small term.
  const std::int64_t n = 100001;
  Vec v(n, std::pow(2.0, -12));
  v[0] = 1.0;
  const double expected = 1.0 + (n - 1) * std::pow(2.0, -24);
  BOOST_TEST(std::fabs(ops::sum_squares(from_vec({n}, v)) - expected) < 1e-12);
  Tensor t = random_tensor({37, 3});
  Vec tv = to_vec(t);
  BOOST_TEST(std::fabs(ops::sum_squares(t) - dot(tv, tv)) < 1e-12);
  // Several at once: each exactly what sum_squares gives alone (the engine's gradient norm relies on it).
  Tensor empty = Tensor::zeros({0}, DType::float32);
  Tensor big = from_vec({n}, v);
  const std::vector<double> each = ops::sum_squares_each({&t, &empty, &big});
  BOOST_TEST(each.size() == 3u);
  BOOST_TEST(each[0] == ops::sum_squares(t));
  BOOST_TEST(each[1] == 0.0);
  BOOST_TEST(each[2] == ops::sum_squares(big));
  BOOST_TEST(ops::sum_squares_each({}).empty());
}

BOOST_AUTO_TEST_CASE(gemm_all_transposes_and_strides) {
  libpipe::Backend& be = libpipe::backend_for(Device::cpu);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (auto [m, n, k] : {std::array<std::int64_t, 3>{1, 1, 1}, {3, 5, 7}, {17, 1, 9}, {33, 65, 31}}) {
        const std::int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
        Tensor a = random_tensor({ta ? k : m, lda}), b = random_tensor({tb ? n : k, ldb});
        Tensor c = random_tensor({m, ldc});
        Vec va = to_vec(a), vb = to_vec(b), vc = to_vec(c), want = vc;
        for (std::int64_t i = 0; i < m; ++i)
          for (std::int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (std::int64_t p = 0; p < k; ++p)
              s += (ta ? va[p * lda + i] : va[i * lda + p]) * (tb ? vb[j * ldb + p] : vb[p * ldb + j]);
            want[i * ldc + j] = 1.5 * s - 0.5 * vc[i * ldc + j];
          }
        be.gemm(ta, tb, m, n, k, 1.5f, a.f32(), lda, b.f32(), ldb, -0.5f, c.f32(), ldc);
        check_close(c, want, 1e-5, 1e-5, "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
      }
  // beta = 0 never reads C (uninitialised outputs), k = 0 leaves beta * C.
  Tensor a = random_tensor({4, 3}), b = random_tensor({3, 2});
  Tensor c = nan_tensor({4, 2});
  be.gemm(false, false, 4, 2, 3, 1.0f, a.f32(), 3, b.f32(), 2, 0.0f, c.f32(), 2);
  for (double x : to_vec(c)) BOOST_TEST(std::isfinite(x));
  Tensor c2 = from_vec({2, 2}, {1, 2, 3, 4});
  be.gemm(false, false, 2, 2, 0, 1.0f, a.f32(), 1, b.f32(), 2, 2.0f, c2.f32(), 2);
  check_close(c2, {2, 4, 6, 8}, 0, 0, "gemm k=0");
  BOOST_TEST(error_of([&] { be.gemm(false, false, 4, 2, 3, 1.0f, a.f32(), 2, b.f32(), 2, 0.0f, c.f32(), 2); }) ==
             "gemm: leading dimensions lda=2 ldb=2 ldc=2 too small for m=4 n=2 k=3 (trans_a=0, trans_b=0)");
}

BOOST_AUTO_TEST_CASE(gemm_strided_batched_matches_loop) {
  libpipe::Backend& be = libpipe::backend_for(Device::cpu);
  const std::int64_t batch = 3, m = 5, n = 4, k = 6;
  Tensor a = random_tensor({batch, m, k}), b = random_tensor({batch, n, k});
  Tensor c = nan_tensor({batch, m, n});
  be.gemm_strided_batched(false, true, m, n, k, 1.0f, a.f32(), k, m * k, b.f32(), k, n * k, 0.0f, c.f32(), n, m * n,
                          batch);
  Vec va = to_vec(a), vb = to_vec(b), want(static_cast<std::size_t>(batch * m * n));
  for (std::int64_t z = 0; z < batch; ++z)
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (std::int64_t p = 0; p < k; ++p) s += va[(z * m + i) * k + p] * vb[(z * n + j) * k + p];
        want[(z * m + i) * n + j] = s;
      }
  check_close(c, want, 1e-6, 1e-5, "gemm_strided_batched");
}

// ---------------------------------------------------------------- linear

BOOST_AUTO_TEST_CASE(linear_forward_and_backward) {
  struct Case {
    Shape x;
    std::int64_t out;
    bool bias;
  };
  for (const Case& cs : {Case{{1, 1}, 1, true}, Case{{1, 16}, 8, true}, Case{{3, 5, 7}, 9, true},
                         Case{{2, 3, 33}, 17, false}, Case{{64, 128}, 96, true}}) {
    const std::int64_t in = cs.x.back(), out = cs.out, rows = libpipe::numel(cs.x) / in;
    Tensor x = random_tensor(cs.x), w = random_tensor({out, in}), b = cs.bias ? random_tensor({out}) : Tensor();
    Vec vx = to_vec(x), vw = to_vec(w), vb = cs.bias ? to_vec(b) : Vec();
    Tensor y = ops::linear(x, w, b);
    Shape want_shape = cs.x;
    want_shape.back() = out;
    BOOST_TEST(y.shape() == want_shape);
    check_close(y, ref_linear(vx, vw, vb, rows, in, out), 1e-5, 1e-5, "linear");

    // Backward against finite differences of L = sum(dy * linear(x)).
    Tensor dy = random_tensor(want_shape);
    Vec vdy = to_vec(dy);
    auto loss_x = [&](const Vec& xx) { return dot(vdy, ref_linear(xx, vw, vb, rows, in, out)); };
    auto loss_w = [&](const Vec& ww) { return dot(vdy, ref_linear(vx, ww, vb, rows, in, out)); };
    auto loss_b = [&](const Vec& bb) { return dot(vdy, ref_linear(vx, vw, bb, rows, in, out)); };
    Tensor dx = ops::linear_backward_input(dy, w);
    BOOST_TEST(dx.shape() == cs.x);
    check_grad(dx, loss_x, vx, 1e-5, 1e-4, "linear_backward_input");

    // dweight and dbias accumulate: start from known values, add one micro-batch's gradient.
    Tensor dw = random_tensor({out, in}), db = cs.bias ? random_tensor({out}) : Tensor();
    Vec dw0 = to_vec(dw), db0 = cs.bias ? to_vec(db) : Vec();
    ops::linear_backward_weight(dy, x, dw, db);
    // Subtracting the starting values leaves this micro-batch's gradient.
    check_grad(ops::add(dw, from_vec({out, in}, neg(dw0))), loss_w, vw, 1e-5, 1e-4,
               "linear_backward_weight dweight (+=)");
    if (cs.bias) {
      Vec want_db = numeric_grad(loss_b, vb);
      for (std::size_t i = 0; i < want_db.size(); ++i) want_db[i] += db0[i];
      check_close(db, want_db, 1e-5, 1e-4, "linear_backward_weight dbias (+=)");
    }
  }
}

BOOST_AUTO_TEST_CASE(linear_gelu_is_gelu_of_linear) {
  for (auto [rows, in, out] : {std::array<std::int64_t, 3>{1, 3, 5}, {7, 16, 33}, {64, 128, 512}}) {
    Tensor x = random_tensor({rows, in}), w = random_tensor({out, in}, -0.3, 0.3), b = random_tensor({out});
    Tensor pre;
    Tensor y = ops::linear_gelu(x, w, b, pre);
    Vec h = ref_linear(to_vec(x), to_vec(w), to_vec(b), rows, in, out);
    check_close(pre, h, 1e-5, 1e-5, "linear_gelu pre-activation");
    check_close(y, ref_gelu(h), 1e-5, 1e-5, "linear_gelu");
  }
}

// ---------------------------------------------------------------- activations

BOOST_AUTO_TEST_CASE(activations_forward_and_backward) {
  for (const Shape& shape : {Shape{1}, Shape{3, 7}, Shape{2, 5, 33}}) {
    // Wide range: GELU's tails (|x| ~ 10) and its middle.
    Tensor x = random_tensor(shape, -10, 10), dy = random_tensor(shape);
    Vec vx = to_vec(x), vdy = to_vec(dy);
    check_close(ops::gelu(x), ref_gelu(vx), 1e-6, 1e-5, "gelu");
    check_close(ops::relu(x), ref_relu(vx), 0, 0, "relu");
    check_close(ops::gelu_backward(x, dy), numeric_grad([&](const Vec& xx) { return dot(vdy, ref_gelu(xx)); }, vx),
                1e-5, 1e-4, "gelu_backward");
    check_close(ops::relu_backward(x, dy), numeric_grad([&](const Vec& xx) { return dot(vdy, ref_relu(xx)); }, vx),
                1e-6, 1e-6, "relu_backward");
  }
  // A dense sweep of GELU and its derivative around the bend.
  Vec xs;
  for (double v = -12; v <= 12; v += 0.01) xs.push_back(v);
  Tensor x = from_vec({static_cast<std::int64_t>(xs.size())}, xs);
  Vec vx = to_vec(x);
  check_close(ops::gelu(x), ref_gelu(vx), 1e-6, 1e-5, "gelu sweep");
  Tensor ones = from_vec(x.shape(), Vec(xs.size(), 1.0));
  check_close(ops::gelu_backward(x, ones),
              numeric_grad([&](const Vec& xx) { return dot(Vec(xs.size(), 1.0), ref_gelu(xx)); }, vx), 1e-5, 1e-4,
              "gelu_backward sweep");
}

// ---------------------------------------------------------------- LayerNorm

BOOST_AUTO_TEST_CASE(layernorm_forward_and_backward) {
  const float eps = 1e-5f;
  for (const Shape& shape : {Shape{1, 1, 4}, Shape{3, 7}, Shape{2, 3, 33}, Shape{5, 128}}) {
    const std::int64_t cols = shape.back(), rows = libpipe::numel(shape) / cols;
    Tensor x = random_tensor(shape, -2, 2), w = random_tensor({cols}), b = random_tensor({cols});
    Vec vx = to_vec(x), vw = to_vec(w), vb = to_vec(b);
    Tensor mean, rstd;
    Tensor y = ops::layernorm(x, w, b, eps, mean, rstd);
    check_close(y, ref_layernorm(vx, vw, vb, rows, cols, eps), 1e-5, 1e-4, "layernorm");
    BOOST_TEST(mean.numel() == rows);
    BOOST_TEST(rstd.numel() == rows);

    Tensor dy = random_tensor(shape);
    Vec vdy = to_vec(dy);
    auto loss_x = [&](const Vec& xx) { return dot(vdy, ref_layernorm(xx, vw, vb, rows, cols, eps)); };
    auto loss_w = [&](const Vec& ww) { return dot(vdy, ref_layernorm(vx, ww, vb, rows, cols, eps)); };
    auto loss_b = [&](const Vec& bb) { return dot(vdy, ref_layernorm(vx, vw, bb, rows, cols, eps)); };
    check_close(ops::layernorm_backward_input(dy, x, w, mean, rstd), numeric_grad(loss_x, vx), 1e-4, 1e-3,
                "layernorm_backward_input");
    Tensor dw = random_tensor({cols}), db = random_tensor({cols});
    Vec want_dw = numeric_grad(loss_w, vw), want_db = numeric_grad(loss_b, vb), dw0 = to_vec(dw), db0 = to_vec(db);
    for (std::int64_t c = 0; c < cols; ++c) want_dw[c] += dw0[c], want_db[c] += db0[c];
    ops::layernorm_backward_weight(dy, x, mean, rstd, dw, db);
    check_close(dw, want_dw, 1e-4, 1e-3, "layernorm_backward_weight dweight (+=)");
    check_close(db, want_db, 1e-5, 1e-4, "layernorm_backward_weight dbias (+=)");
  }
}

BOOST_AUTO_TEST_CASE(layernorm_large_mean) {
  // Mean 1000, std ~0.01: a one-pass E[x^2] - E[x]^2 in float would lose every digit of the variance.
  const std::int64_t rows = 4, cols = 64;
  Tensor x = random_tensor({rows, cols}, 1000 - 0.02, 1000 + 0.02);
  Tensor w = from_vec({cols}, Vec(cols, 1.0)), b = from_vec({cols}, Vec(cols, 0.0));
  Tensor mean, rstd;
  Tensor y = ops::layernorm(x, w, b, 1e-12f, mean, rstd);
  check_close(y, ref_layernorm(to_vec(x), to_vec(w), to_vec(b), rows, cols, 1e-12), 2e-3, 2e-3, "layernorm mean 1000");
}

// ---------------------------------------------------------------- attention

namespace {

struct AttnCase {
  std::int64_t B, T, H, D;
};

std::string attn_name(const AttnCase& c) {
  return "B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
         " D=" + std::to_string(c.D);
}

}  // namespace

BOOST_AUTO_TEST_CASE(attention_forward_matches_reference) {
  // Head sizes that are multiples of 16 take the register-tiled path, others sgemm; T around and between
  // multiples of the 16-wide vectors and the 4-row tiles.
  for (const AttnCase& c : {AttnCase{1, 1, 1, 1}, AttnCase{2, 5, 3, 4}, AttnCase{1, 1, 2, 16}, AttnCase{2, 7, 1, 16},
                            AttnCase{1, 64, 4, 32}, AttnCase{2, 37, 2, 32}, AttnCase{1, 50, 1, 64},
                            AttnCase{1, 33, 1, 128}, AttnCase{2, 130, 2, 8}, AttnCase{1, 300, 1, 16}}) {
    const std::int64_t C = c.H * c.D;
    Tensor qkv = random_tensor({c.B, c.T, 3 * C}, -2, 2);
    Tensor probs;
    Tensor out = ops::attention(qkv, c.H, probs);
    BOOST_TEST(out.shape() == (Shape{c.B, c.T, C}));
    BOOST_TEST(probs.shape() == (Shape{c.B, c.H, c.T, c.T}));
    Vec want_out, want_probs;
    ref_attention(to_vec(qkv), c.B, c.T, c.H, c.D, want_out, &want_probs);
    check_close(out, want_out, 1e-5, 1e-4, "attention out " + attn_name(c));
    // probs above the diagonal are exactly 0 (compared with tolerance 0 there since the reference has 0).
    check_close(probs, want_probs, 1e-6, 1e-4, "attention probs " + attn_name(c));
  }
}

BOOST_AUTO_TEST_CASE(attention_backward_matches_finite_differences) {
  for (const AttnCase& c :
       {AttnCase{1, 1, 1, 2}, AttnCase{2, 5, 3, 4}, AttnCase{1, 17, 2, 8}, AttnCase{1, 1, 1, 16}, AttnCase{2, 7, 2, 16},
        AttnCase{1, 21, 1, 48}, AttnCase{1, 64, 2, 32}, AttnCase{1, 150, 1, 8}, AttnCase{1, 70, 1, 16}}) {
    const std::int64_t C = c.H * c.D;
    Tensor qkv = random_tensor({c.B, c.T, 3 * C}, -1.5, 1.5), dout = random_tensor({c.B, c.T, C});
    Vec vqkv = to_vec(qkv), vdout = to_vec(dout);
    Tensor probs;
    ops::attention(qkv, c.H, probs);
    Tensor dqkv = ops::attention_backward(dout, qkv, probs, c.H);
    BOOST_TEST(dqkv.shape() == qkv.shape());
    auto loss = [&](const Vec& x) {
      Vec out;
      ref_attention(x, c.B, c.T, c.H, c.D, out);
      return dot(vdout, out);
    };
    // Every element for small cases; a sample (including the first and last rows) for long sequences.
    std::vector<std::size_t> idx;
    if (vqkv.size() > 2000) {
      idx = sample_indices(vqkv.size(), 150);
      for (std::size_t i = 0; i < static_cast<std::size_t>(3 * C); ++i)
        idx.push_back(i), idx.push_back(vqkv.size() - 1 - i);
    }
    Vec num = numeric_grad(loss, vqkv, idx);
    Vec got = to_vec(dqkv);
    if (!idx.empty()) num = pick(num, idx), got = pick(got, idx);
    check_close(got, num, 1e-4, 1e-3, "attention_backward " + attn_name(c));
  }
}

BOOST_AUTO_TEST_CASE(attention_is_causal) {
  for (const AttnCase& c : {AttnCase{2, 9, 2, 4}, AttnCase{2, 9, 2, 16}, AttnCase{1, 200, 2, 16}}) {
    const std::int64_t C = c.H * c.D, t0 = c.T / 2;
    Tensor qkv = random_tensor({c.B, c.T, 3 * C});
    Tensor probs, probs2;
    Vec out = to_vec(ops::attention(qkv, c.H, probs));
    // Change every q, k, v of the tokens after t0: outputs up to t0 must not move at all.
    Tensor moved = ops::clone(qkv);
    float* p = moved.host_data<float>();
    for (std::int64_t b = 0; b < c.B; ++b)
      for (std::int64_t t = t0 + 1; t < c.T; ++t)
        for (std::int64_t j = 0; j < 3 * C; ++j) p[(b * c.T + t) * 3 * C + j] += 5.0f;
    Vec out2 = to_vec(ops::attention(moved, c.H, probs2));
    for (std::int64_t b = 0; b < c.B; ++b)
      for (std::int64_t t = 0; t <= t0; ++t)
        for (std::int64_t j = 0; j < C; ++j) {
          const std::size_t i = static_cast<std::size_t>((b * c.T + t) * C + j);
          BOOST_TEST(out[i] == out2[i], "attention output at sample " << b << " position " << t << " moved");
        }
    // And the gradient of an early output reaches no later token.
    Vec dout(static_cast<std::size_t>(c.B * c.T * C), 0.0);
    for (std::int64_t j = 0; j < C; ++j) dout[t0 * C + j] = 1.0;
    Vec dqkv = to_vec(ops::attention_backward(from_vec({c.B, c.T, C}, dout), qkv, probs, c.H));
    for (std::int64_t t = t0 + 1; t < c.T; ++t)
      for (std::int64_t j = 0; j < 3 * C; ++j) BOOST_TEST(dqkv[(t * 3 * C) + j] == 0.0);
  }
}

// ---------------------------------------------------------------- threads

namespace {

std::vector<std::uint32_t> bits_of(const Tensor& t) {
  Tensor c = t;
  std::vector<std::uint32_t> out(static_cast<std::size_t>(t.numel()));
  std::memcpy(out.data(), c.host_data<float>(), out.size() * sizeof(float));
  return out;
}

// Small integers: products and sums of them are exact in float in any order, so the GEMMs inside linear ops give
// the same bits on any thread count too, and what is compared below is the kernels' split alone.
Tensor integer_tensor(const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::float32);
  std::uniform_int_distribution<int> dist(-3, 3);
  float* p = t.host_data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(dist(rng()));
  return t;
}

}  // namespace

// The kernels split their work over set_cpu_threads' threads (cpu_threads.hpp) by elements, rows, columns or
// heads: every output must have the same bits as on one thread, at even and uneven splits, with tails.
BOOST_AUTO_TEST_CASE(kernels_give_the_same_bits_on_any_thread_count) {
  const Tensor a = random_tensor({100003}, -6, 6), b = random_tensor({100003});
  const Tensor x = random_tensor({2000, 33}, -2, 2), w = random_tensor({33}), bias = random_tensor({33});
  const Tensor dy = random_tensor({2000, 33});
  const Tensor xi = integer_tensor({600, 40}), wi = integer_tensor({520, 40}), bi = random_tensor({520});
  const Tensor dyi = integer_tensor({600, 520});
  const Tensor dw0 = random_tensor({33}), db0 = random_tensor({33}), dbi0 = random_tensor({520});  // += into these
  // 7 samples of 30 rows over 257 classes (per-sample losses); AdamW over 100003 parameters.
  const Tensor logits = random_tensor({7, 30, 257}, -4, 4), labels = random_labels({7, 30}, 257);
  const Tensor dloss = random_tensor({7});
  const Tensor param0 = random_tensor({100003}), grad = random_tensor({100003});
  const Tensor m0 = random_tensor({100003}, -0.1, 0.1), v0 = random_tensor({100003}, 0, 0.01);
  // Llama's ops: RMS norm over the rows of x, the swiglu gate over [gate, up] rows of 2 x 33.
  const Tensor h = random_tensor({2000, 66}, -4, 4), dyh = random_tensor({2000, 33}), drms0 = random_tensor({33});
  // Rotary embeddings of 4 query heads and 2 key/value heads of 16 over 5 x 37 rows (uneven parts).
  const Tensor rope_x = random_tensor({5, 37, 8 * 16}, -2, 2), rope_dqkv = random_tensor({5, 37, 12 * 16});
  const AttnCase attn_cases[] = {{3, 37, 3, 16}, {4, 64, 4, 32}};
  std::vector<Tensor> qkvs, douts;
  for (const AttnCase& c : attn_cases) {
    qkvs.push_back(random_tensor({c.B, c.T, 3 * c.H * c.D}, -2, 2));
    douts.push_back(random_tensor({c.B, c.T, c.H * c.D}));
  }
  // Flash attention (the CPU's path from 1024 tokens), called on the backend at a short length: 9 heads over 2 and
  // 3 threads, 130 tokens across its 64-row blocks, heads of 24 padded to 32.
  const AttnCase flash{3, 130, 3, 24};
  const Tensor flash_qkv = random_tensor({flash.B, flash.T, 3 * flash.H * flash.D}, -2, 2);
  const Tensor flash_dout = random_tensor({flash.B, flash.T, flash.H * flash.D});
  auto run_all = [&] {
    std::vector<Tensor> out;
    out.push_back(ops::add(a, b));
    Tensor acc = ops::clone(a);
    ops::accumulate(acc, b);
    out.push_back(acc);
    out.push_back(ops::gelu_backward(a, b));
    Tensor mean, rstd;
    out.push_back(ops::layernorm(x, w, bias, 1e-5f, mean, rstd));
    out.push_back(mean);
    out.push_back(rstd);
    out.push_back(ops::layernorm_backward_input(dy, x, w, mean, rstd));
    Tensor dw = ops::clone(dw0), db = ops::clone(db0);
    ops::layernorm_backward_weight(dy, x, mean, rstd, dw, db);
    out.push_back(dw);
    out.push_back(db);
    out.push_back(ops::linear(xi, wi, bi));
    Tensor pre;
    out.push_back(ops::linear_gelu(xi, wi, bi, pre));
    out.push_back(pre);
    Tensor dwi = Tensor::zeros({520, 40}, DType::float32), dbi = ops::clone(dbi0);
    ops::linear_backward_weight(dyi, xi, dwi, dbi);
    out.push_back(dwi);
    out.push_back(dbi);
    Tensor rms_rstd;
    out.push_back(ops::rms_norm(x, w, 1e-5f, rms_rstd));
    out.push_back(rms_rstd);
    out.push_back(ops::rms_norm_backward_input(dy, x, w, rms_rstd));
    Tensor drms = ops::clone(drms0);
    ops::rms_norm_backward_weight(dy, x, rms_rstd, drms);
    out.push_back(drms);
    out.push_back(ops::swiglu(h));
    out.push_back(ops::swiglu_backward(h, dyh));
    out.push_back(ops::to_dtype(ops::to_dtype(a, DType::bfloat16), DType::float32));  // both conversions
    out.push_back(ops::rotary_gqa(rope_x, 4, 2, 10000.0f));
    out.push_back(ops::rotary_gqa_backward(rope_dqkv, 4, 2, 10000.0f));
    out.push_back(ops::cross_entropy(logits, labels));
    out.push_back(ops::cross_entropy_backward(logits, labels, dloss));
    Tensor param = ops::clone(param0), m = ops::clone(m0), v = ops::clone(v0);
    ops::adamw(param, grad, m, v, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
    out.push_back(param);
    out.push_back(m);
    out.push_back(v);
    for (std::size_t i = 0; i < qkvs.size(); ++i) {
      Tensor probs;
      out.push_back(ops::attention(qkvs[i], attn_cases[i].H, probs));
      out.push_back(probs);
      out.push_back(ops::attention_backward(douts[i], qkvs[i], probs, attn_cases[i].H));
    }
    Tensor flash_out = Tensor::empty({flash.B, flash.T, flash.H * flash.D}, DType::float32);
    Tensor state = Tensor::empty({flash.B * flash.H, flash.T, flash.D + 1}, DType::float32);
    Tensor flash_dqkv = Tensor::empty(flash_qkv.shape(), DType::float32);
    libpipe::Backend& cpu = libpipe::backend_for(libpipe::Device::cpu);
    cpu.flash_attention_forward(flash_qkv.f32(), flash_out.f32(), state.f32(), flash.B, flash.T, flash.H, flash.D);
    cpu.flash_attention_backward(flash_dout.f32(), flash_qkv.f32(), state.f32(), flash_dqkv.f32(), flash.B, flash.T,
                                 flash.H, flash.D);
    out.push_back(flash_out);
    out.push_back(state);
    out.push_back(flash_dqkv);
    return out;
  };
  const std::vector<Tensor> one = run_all();
  for (int threads : {2, 3}) {
    libpipe::set_cpu_threads(threads);
    const std::vector<Tensor> many = run_all();
    libpipe::set_cpu_threads(1);
    BOOST_TEST_REQUIRE(many.size() == one.size());
    for (std::size_t i = 0; i < one.size(); ++i)
      BOOST_TEST((bits_of(many[i]) == bits_of(one[i])), "output " << i << " differs on " << threads << " threads");
  }
}

// ---------------------------------------------------------------- losses

BOOST_AUTO_TEST_CASE(cross_entropy_forward_and_backward) {
  for (const Shape& shape : {Shape{1, 1}, Shape{1, 5}, Shape{3, 7}, Shape{2, 5, 33}, Shape{2, 64, 256}}) {
    const std::int64_t vocab = shape.back(), rows = libpipe::numel(shape) / vocab, batch = shape[0];
    const Shape label_shape(shape.begin(), shape.end() - 1);
    Tensor logits = random_tensor(shape, -4, 4), labels = random_labels(label_shape, static_cast<int>(vocab));
    Vec vz = to_vec(logits);
    std::vector<int> vl = labels_of(labels);
    Tensor loss = ops::cross_entropy(logits, labels);
    BOOST_TEST(loss.shape() == Shape{batch});
    check_close(loss, ref_cross_entropy(vz, vl, rows, vocab, rows / batch), 1e-6, 1e-5, "cross_entropy");
    Tensor dloss = random_tensor({batch});
    Vec vdl = to_vec(dloss);
    auto f = [&](const Vec& z) { return dot(vdl, ref_cross_entropy(z, vl, rows, vocab, rows / batch)); };
    check_grad(ops::cross_entropy_backward(logits, labels, dloss), f, vz, 1e-6, 1e-4, "cross_entropy_backward");
  }
  // Large logits: the max subtraction keeps exp from overflowing.
  Tensor logits = from_vec({1, 3}, {1000, 1001, 999});
  Tensor labels = Tensor::empty({1}, DType::int32);
  labels.host_data<std::int32_t>()[0] = 1;
  check_close(ops::cross_entropy(logits, labels), ref_cross_entropy(to_vec(logits), {1}, 1, 3, 1), 1e-6, 1e-5,
              "cross_entropy large logits");
  Tensor d = ops::cross_entropy_backward(logits, labels, from_vec({1}, {1.0}));
  for (double g : to_vec(d)) BOOST_TEST(std::isfinite(g));
}

BOOST_AUTO_TEST_CASE(mse_forward_and_backward) {
  for (const Shape& shape : {Shape{1}, Shape{3, 7}, Shape{2, 5, 3}}) {
    const std::int64_t batch = shape[0], per = libpipe::numel(shape) / batch;
    Tensor x = random_tensor(shape), t = random_tensor(shape), dloss = random_tensor({batch});
    Vec vx = to_vec(x), vt = to_vec(t), vdl = to_vec(dloss);
    auto ref = [&](const Vec& xx) {
      Vec loss(static_cast<std::size_t>(batch), 0.0);
      for (std::size_t i = 0; i < xx.size(); ++i) loss[i / per] += (xx[i] - vt[i]) * (xx[i] - vt[i]) / per;
      return loss;
    };
    check_close(ops::mse(x, t), ref(vx), 1e-7, 1e-5, "mse");
    check_close(ops::mse_backward(x, t, dloss), numeric_grad([&](const Vec& xx) { return dot(vdl, ref(xx)); }, vx),
                1e-6, 1e-4, "mse_backward");
  }
}

// ---------------------------------------------------------------- embedding

BOOST_AUTO_TEST_CASE(embedding_forward_and_backward) {
  const std::int64_t B = 3, T = 5, V = 7, P = 6, C = 9;
  Tensor tokens = random_labels({B, T}, V);
  tokens.host_data<std::int32_t>()[0] = tokens.host_data<std::int32_t>()[1];  // a repeated token: the scatter adds
  Tensor wte = random_tensor({V, C}), wpe = random_tensor({P, C});
  Vec vte = to_vec(wte), vpe = to_vec(wpe);
  std::vector<int> tok = labels_of(tokens);
  auto ref = [&](const Vec& te, const Vec& pe) {
    Vec out(static_cast<std::size_t>(B * T * C));
    for (std::int64_t r = 0; r < B * T; ++r)
      for (std::int64_t c = 0; c < C; ++c) out[r * C + c] = te[tok[r] * C + c] + pe[(r % T) * C + c];
    return out;
  };
  Tensor out = ops::embedding(tokens, wte, wpe);
  BOOST_TEST(out.shape() == (Shape{B, T, C}));
  check_close(out, ref(vte, vpe), 0, 1e-7, "embedding");

  Tensor dout = random_tensor({B, T, C});
  Vec vd = to_vec(dout);
  Tensor dwte = random_tensor({V, C}), dwpe = random_tensor({P, C});
  Vec want_te = numeric_grad([&](const Vec& te) { return dot(vd, ref(te, vpe)); }, vte);
  Vec want_pe = numeric_grad([&](const Vec& pe) { return dot(vd, ref(vte, pe)); }, vpe);
  Vec te0 = to_vec(dwte), pe0 = to_vec(dwpe);
  for (std::size_t i = 0; i < want_te.size(); ++i) want_te[i] += te0[i];
  for (std::size_t i = 0; i < want_pe.size(); ++i) want_pe[i] += pe0[i];
  ops::embedding_backward(tokens, dout, dwte, dwpe);
  check_close(dwte, want_te, 1e-5, 1e-4, "embedding_backward dwte (+=)");
  check_close(dwpe, want_pe, 1e-5, 1e-4, "embedding_backward dwpe (+=)");
}

// ---------------------------------------------------------------- accumulation

BOOST_AUTO_TEST_CASE(gradient_ops_add_rather_than_overwrite) {
  // Twice the same micro-batch gives twice the gradient on top of what was there.
  libpipe::Backend& be = libpipe::backend_for(Device::cpu);
  Tensor dy = random_tensor({6, 5}), x = random_tensor({6, 4});
  Tensor db = from_vec({5}, Vec(5, 1.0));
  be.bias_grad(dy.f32(), db.f32(), 6, 5);
  be.bias_grad(dy.f32(), db.f32(), 6, 5);
  Vec vdy = to_vec(dy), want(5, 1.0);
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 5; ++c) want[c] += 2 * vdy[r * 5 + c];
  check_close(db, want, 1e-6, 1e-6, "bias_grad twice");

  Tensor dw = from_vec({5, 4}, Vec(20, 1.0)), dbias = from_vec({5}, Vec(5, 1.0));
  ops::linear_backward_weight(dy, x, dw, dbias);
  ops::linear_backward_weight(dy, x, dw, dbias);
  Vec vx = to_vec(x), want_w(20, 1.0);
  for (int o = 0; o < 5; ++o)
    for (int i = 0; i < 4; ++i)
      for (int r = 0; r < 6; ++r) want_w[o * 4 + i] += 2 * vdy[r * 5 + o] * vx[r * 4 + i];
  check_close(dw, want_w, 1e-5, 1e-5, "linear_backward_weight twice");
  check_close(dbias, want, 1e-6, 1e-6, "linear_backward_weight dbias twice");

  Tensor w = random_tensor({5}), b = random_tensor({5}), mean, rstd;
  ops::layernorm(dy, w, b, 1e-5f, mean, rstd);
  Tensor lw2 = from_vec({5}, Vec(5, 3.0)), lb2 = from_vec({5}, Vec(5, 3.0)), lw1 = from_vec({5}, Vec(5, 0.0)),
         lb1 = from_vec({5}, Vec(5, 0.0));
  ops::layernorm_backward_weight(dy, dy, mean, rstd, lw1, lb1);
  ops::layernorm_backward_weight(dy, dy, mean, rstd, lw2, lb2);
  ops::layernorm_backward_weight(dy, dy, mean, rstd, lw2, lb2);
  Vec w1 = to_vec(lw1), b1 = to_vec(lb1), w_want(5), b_want(5);
  for (int c = 0; c < 5; ++c) w_want[c] = 3 + 2 * w1[c], b_want[c] = 3 + 2 * b1[c];
  check_close(lw2, w_want, 1e-5, 1e-5, "layernorm_backward_weight twice");
  check_close(lb2, b_want, 1e-5, 1e-5, "layernorm_backward_weight dbias twice");

  Tensor tokens = random_labels({2, 3}, 4), dout = random_tensor({2, 3, 5});
  Tensor te1 = from_vec({4, 5}, Vec(20, 0.0)), pe1 = from_vec({3, 5}, Vec(15, 0.0));
  Tensor te2 = from_vec({4, 5}, Vec(20, 2.0)), pe2 = from_vec({3, 5}, Vec(15, 2.0));
  ops::embedding_backward(tokens, dout, te1, pe1);
  ops::embedding_backward(tokens, dout, te2, pe2);
  ops::embedding_backward(tokens, dout, te2, pe2);
  Vec t1 = to_vec(te1), p1 = to_vec(pe1), t_want(20), p_want(15);
  for (int i = 0; i < 20; ++i) t_want[i] = 2 + 2 * t1[i];
  for (int i = 0; i < 15; ++i) p_want[i] = 2 + 2 * p1[i];
  check_close(te2, t_want, 1e-5, 1e-5, "embedding_backward dwte twice");
  check_close(pe2, p_want, 1e-5, 1e-5, "embedding_backward dwpe twice");
}

// ---------------------------------------------------------------- optimizers

BOOST_AUTO_TEST_CASE(adamw_matches_pytorch_formula) {
  const float lr = 0.01f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  const std::int64_t n = 37;
  Tensor p = random_tensor({n}), m = from_vec({n}, Vec(n, 0.0)), v = from_vec({n}, Vec(n, 0.0));
  Vec vp = to_vec(p), vm(n, 0.0), vv(n, 0.0);
  for (int step = 1; step <= 4; ++step) {
    Tensor g = random_tensor({n});
    Vec vg = to_vec(g);
    ops::adamw(p, g, m, v, lr, b1, b2, eps, wd, step);
    for (std::int64_t i = 0; i < n; ++i) {
      vp[i] *= 1.0 - double(lr) * wd;
      vm[i] = b1 * vm[i] + (1.0 - b1) * vg[i];
      vv[i] = b2 * vv[i] + (1.0 - b2) * vg[i] * vg[i];
      const double mhat = vm[i] / (1.0 - std::pow(double(b1), step));
      const double vhat = vv[i] / (1.0 - std::pow(double(b2), step));
      vp[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
    check_close(p, vp, 1e-6, 1e-5, "adamw param step " + std::to_string(step));
    check_close(m, vm, 1e-7, 1e-5, "adamw m step " + std::to_string(step));
    check_close(v, vv, 1e-8, 1e-5, "adamw v step " + std::to_string(step));
  }
  BOOST_TEST(error_of([&] { ops::adamw(p, p, m, v, lr, b1, b2, eps, wd, 0); }) ==
             "adamw: step must count from 1, got 0");
}

BOOST_AUTO_TEST_CASE(sgd_momentum_matches_pytorch_formula) {
  const float lr = 0.1f, mom = 0.9f, wd = 0.01f;
  const std::int64_t n = 19;
  Tensor p = random_tensor({n}), buf = from_vec({n}, Vec(n, 0.0));
  Vec vp = to_vec(p), vb(n, 0.0);
  for (int step = 1; step <= 3; ++step) {
    Tensor g = random_tensor({n});
    Vec vg = to_vec(g);
    ops::sgd_momentum(p, g, buf, lr, mom, wd);
    for (std::int64_t i = 0; i < n; ++i) {
      const double gi = vg[i] + double(wd) * vp[i];
      vb[i] = mom * vb[i] + gi;
      vp[i] -= lr * vb[i];
    }
    check_close(p, vp, 1e-6, 1e-5, "sgd param step " + std::to_string(step));
    check_close(buf, vb, 1e-6, 1e-5, "sgd buffer step " + std::to_string(step));
  }
}

// ---------------------------------------------------------------- errors

BOOST_AUTO_TEST_CASE(errors_name_op_and_shapes) {
  Tensor x = random_tensor({4, 16}), w = random_tensor({8, 32}), b = random_tensor({8});
  BOOST_TEST(error_of([&] { ops::linear(x, w, b); }) ==
             "linear: x float32[4, 16] does not match weight [8, 32] (in_features 32)");
  BOOST_TEST(error_of([&] {
               ops::linear(random_tensor({4, 32}), w, random_tensor({7}));
             }) == "linear: bias float32[7] should be [8] (out_features)");
  BOOST_TEST(error_of([&] {
               ops::linear_backward_input(random_tensor({4, 7}), w);
             }) == "linear_backward_input: dy float32[4, 7] does not match weight [8, 32] (out_features 8)");
  BOOST_TEST(error_of([&] {
               ops::add(random_tensor({2, 3}), random_tensor({3, 2}));
             }) == "add: a float32[2, 3] and b float32[3, 2] differ in shape");
  Tensor labels = random_labels({4}, 3);
  BOOST_TEST(error_of([&] { ops::add(labels, labels); }) == "add: a is int32[4], expected float32 or bfloat16");

  // Bad labels and tokens name the row and the value.
  Tensor logits = random_tensor({2, 3, 5});
  Tensor bad = random_labels({2, 3}, 5);
  bad.host_data<std::int32_t>()[4] = 5;
  BOOST_TEST(error_of([&] { ops::cross_entropy(logits, bad); }) == "cross_entropy: label 5 at row 4 is outside [0, 5)");
  bad.host_data<std::int32_t>()[4] = -1;
  BOOST_TEST(error_of([&] { ops::cross_entropy_backward(logits, bad, random_tensor({2})); }) ==
             "cross_entropy_backward: label -1 at row 4 is outside [0, 5)");
  BOOST_TEST(error_of([&] {
               ops::cross_entropy(logits, random_labels({3, 2}, 5));
             }) == "cross_entropy: labels int32[3, 2] do not match logits float32[2, 3, 5] (expected labels [2, 3])");
  Tensor tokens = random_labels({2, 3}, 7);
  tokens.host_data<std::int32_t>()[5] = 7;
  BOOST_TEST(error_of([&] {
               ops::embedding(tokens, random_tensor({7, 4}), random_tensor({3, 4}));
             }) == "embedding: token 7 at row 5 (sample 1, position 2) is outside [0, 7)");
  BOOST_TEST(error_of([&] {
               ops::embedding(random_labels({2, 4}, 7), random_tensor({7, 4}), random_tensor({3, 4}));
             }) == "embedding: tokens int32[2, 4] have 4 positions but wpe float32[3, 4] holds only 3");

  Tensor probs;
  BOOST_TEST(error_of([&] {
               ops::attention(random_tensor({2, 3, 12}), 3, probs);
             }) ==
             "attention: qkv float32[2, 3, 12] with 3 heads: the last dimension must be 3C with C a positive multiple "
             "of heads");
  Tensor mean, rstd;
  BOOST_TEST(error_of([&] { ops::layernorm(x, random_tensor({15}), random_tensor({16}), 1e-5f, mean, rstd); }) ==
             "layernorm: weight float32[15] should be [16] (the last dimension of x)");

  // Tensors on different devices (a borrowed pointer labelled cuda: never dereferenced).
  float dummy[4] = {};
  Tensor on_cuda = Tensor::borrow(dummy, {4}, DType::float32, Device::cuda);
  BOOST_TEST(error_of([&] { ops::add(random_tensor({4}), on_cuda); }) == "add: b is on cuda but a is on cpu");
}
