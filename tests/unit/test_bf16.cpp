// Mixed precision on the CPU backend: bfloat16 rounding (nearest even, one
// quiet NaN, overflow to infinity), the conversions, every op on bfloat16
// tensors against the float32 op on the same (widened) values rounded once at
// the end, the dtypes ops give their outputs, and parameters with float32
// master weights through an optimizer step.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE bf16
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "pipe/bfloat16.hpp"
#include "pipe/ops.hpp"
#include "pipe/optimizer.hpp"
#include "pipe/tensor.hpp"
#include "test_util.hpp"

using libpipe::bf16_to_float;
using libpipe::DType;
using libpipe::float_to_bf16;
using libpipe::Shape;
using libpipe::Tensor;
namespace ops = libpipe::ops;

namespace {

std::mt19937& rng() {
  static std::mt19937 gen(20261205);
  return gen;
}

Tensor random_f32(const Shape& shape, float lo = -1.0f, float hi = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::float32);
  std::uniform_real_distribution<float> dist(lo, hi);
  float* p = t.host_data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng());
  return t;
}

Tensor random_bf16(const Shape& shape, float lo = -1.0f, float hi = 1.0f) {
  return ops::to_dtype(random_f32(shape, lo, hi), DType::bfloat16);
}

Tensor random_labels(const Shape& shape, int classes) {
  Tensor t = Tensor::empty(shape, DType::int32);
  std::uniform_int_distribution<int> dist(0, classes - 1);
  auto* p = t.host_data<std::int32_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng());
  return t;
}

float from_bits(std::uint32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

// a and b hold the same dtype, shape and bits.
void check_identical(const Tensor& a, const Tensor& b, const std::string& what) {
  BOOST_TEST_CONTEXT(what) {
    BOOST_TEST_REQUIRE(libpipe::dtype_name(a.dtype()) == libpipe::dtype_name(b.dtype()));
    BOOST_TEST_REQUIRE(libpipe::shape_str(a.shape()) == libpipe::shape_str(b.shape()));
    Tensor ca = a, cb = b;  // host_data needs non-const tensors
    const auto* pa = static_cast<const unsigned char*>(ca.data());
    const auto* pb = static_cast<const unsigned char*>(cb.data());
    std::size_t differing = 0;
    for (std::size_t i = 0; i < a.bytes(); ++i) differing += pa[i] != pb[i];
    BOOST_TEST(differing == 0u);
  }
}

// The float32 op's result on the widened inputs, rounded to bfloat16: what the op must give on bfloat16 inputs.
Tensor rounded(const Tensor& t) { return ops::to_dtype(t, DType::bfloat16); }
Tensor widened(const Tensor& t) { return ops::to_dtype(t, DType::float32); }

}  // namespace

BOOST_AUTO_TEST_CASE(rounding_is_to_nearest_even) {
  BOOST_TEST(float_to_bf16(1.0f) == 0x3F80);
  BOOST_TEST(bf16_to_float(0x3F80) == 1.0f);
  // The bfloat16 ulp at 1 is 2^-7: a half-ulp tie rounds to the even mantissa, anything past it up.
  BOOST_TEST(float_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);                         // tie, to 1.0 (even)
  BOOST_TEST(float_to_bf16(1.0f + std::ldexp(3.0f, -8)) == 0x3F82);                         // tie, to 1 + 2^-6
  BOOST_TEST(float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3F81);  // past the tie
  BOOST_TEST(float_to_bf16(-0.0f) == 0x8000);
  BOOST_TEST(float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
  BOOST_TEST(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
  BOOST_TEST(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // overflows to infinity
  BOOST_TEST(float_to_bf16(std::numeric_limits<float>::quiet_NaN()) == 0x7FFF);
  BOOST_TEST(float_to_bf16(from_bits(0xFF800001u)) == 0x7FFF);  // a negative signalling NaN: the one quiet NaN
  BOOST_TEST(float_to_bf16(from_bits(0x7F7FFFFFu)) == 0x7F80);
  BOOST_TEST(float_to_bf16(from_bits(0x00010000u)) == 0x0001);  // subnormals keep their top bits
  // Every bfloat16 value survives widening and narrowing.
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const bool nan = (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu) != 0;
    if (!nan && float_to_bf16(bf16_to_float(bits)) != bits) BOOST_FAIL("bfloat16 " << h << " does not round-trip");
  }
  // The rounding error is at most half an ulp, 2^(e-8) for x in [2^e, 2^(e+1)).
  for (int i = 0; i < 10000; ++i) {
    const float x = std::uniform_real_distribution<float>(-1e6f, 1e6f)(rng());
    if (x != 0.0f && std::fabs(bf16_to_float(float_to_bf16(x)) - x) > std::ldexp(1.0f, std::ilogb(x) - 8))
      BOOST_FAIL("rounding " << x << " errs by more than half an ulp");
  }
}

BOOST_AUTO_TEST_CASE(conversions_and_their_errors) {
  const Tensor x = random_f32({3, 5}, -100.0f, 100.0f);
  const Tensor h = ops::to_dtype(x, DType::bfloat16);
  BOOST_TEST(h.dtype() == DType::bfloat16);
  BOOST_TEST(h.bytes() == 30u);
  Tensor hx = h, xx = x;
  for (std::int64_t i = 0; i < x.numel(); ++i) BOOST_TEST(hx.bf16()[i] == float_to_bf16(xx.f32()[i]));
  BOOST_TEST(ops::to_dtype(x, DType::float32).data() == x.data());  // no copy when it already is
  Tensor back = widened(h);
  for (std::int64_t i = 0; i < x.numel(); ++i) BOOST_TEST(back.f32()[i] == bf16_to_float(hx.bf16()[i]));
  // bfloat16 into bfloat16 is exact.
  Tensor copy = Tensor::empty({15}, DType::bfloat16);
  ops::convert_into(copy, h);
  check_identical(copy.view({3, 5}), h, "bfloat16 to bfloat16");

  Tensor ids = random_labels({4}, 3);
  BOOST_TEST(pipe_test::error_of([&] { ops::to_dtype(ids, DType::bfloat16); }) ==
             "convert_into: src is int32[4], expected float32 or bfloat16");
  Tensor small = Tensor::empty({4}, DType::bfloat16);
  BOOST_TEST(pipe_test::error_of([&] { ops::convert_into(small, x); }) ==
             "convert_into: dst bfloat16[4] and src float32[3, 5] differ in number of elements");
  BOOST_TEST(pipe_test::error_of([&] { ops::sum_squares(h); }) == "sum_squares: t is bfloat16[3, 5], expected float32");
}

// Each op on bfloat16 inputs equals the float32 op on the widened inputs, rounded to bfloat16 once.
BOOST_AUTO_TEST_CASE(ops_compute_in_float32_and_round_once) {
  const Tensor x = random_bf16({2, 3, 16}), w = random_bf16({8, 16}), b = random_bf16({8});
  check_identical(ops::linear(x, w, b), rounded(ops::linear(widened(x), widened(w), widened(b))), "linear");
  check_identical(ops::linear(x, w, Tensor()), rounded(ops::linear(widened(x), widened(w), Tensor())),
                  "linear without bias");
  Tensor pre, pre_ref;
  check_identical(ops::linear_gelu(x, w, b, pre), rounded(ops::linear_gelu(widened(x), widened(w), widened(b), pre_ref)),
                  "linear_gelu");
  check_identical(pre, rounded(pre_ref), "linear_gelu's pre-activation");

  const Tensor dy = random_bf16({2, 3, 8});
  check_identical(ops::linear_backward_input(dy, w), rounded(ops::linear_backward_input(widened(dy), widened(w))),
                  "linear_backward_input");
  Tensor dw = random_f32({8, 16}), db = random_f32({8});
  Tensor dw_ref = ops::clone(dw), db_ref = ops::clone(db);
  ops::linear_backward_weight(dy, x, dw, db);  // float32 gradients accumulate the bfloat16 activations' products
  ops::linear_backward_weight(widened(dy), widened(x), dw_ref, db_ref);
  check_identical(dw, dw_ref, "linear_backward_weight's dweight (float32)");
  check_identical(db, db_ref, "linear_backward_weight's dbias (float32)");

  const Tensor g = random_bf16({2, 3, 16}, -3.0f, 3.0f);
  check_identical(ops::gelu(g), rounded(ops::gelu(widened(g))), "gelu");
  check_identical(ops::gelu_backward(g, x), rounded(ops::gelu_backward(widened(g), widened(x))), "gelu_backward");
  check_identical(ops::relu(g), rounded(ops::relu(widened(g))), "relu");
  check_identical(ops::add(g, x), rounded(ops::add(widened(g), widened(x))), "add");
  Tensor acc = ops::clone(g);
  ops::accumulate(acc, x);
  check_identical(acc, rounded(ops::add(widened(g), widened(x))), "accumulate");
  Tensor scaled = ops::clone(g);
  ops::scale(scaled, 0.37f);
  Tensor scaled_ref = widened(g);
  ops::scale(scaled_ref, 0.37f);
  check_identical(scaled, rounded(scaled_ref), "scale");

  const Tensor lw = random_bf16({16}, 0.5f, 1.5f), lb = random_bf16({16});
  Tensor mean, rstd, mean_ref, rstd_ref;
  check_identical(ops::layernorm(g, lw, lb, 1e-5f, mean, rstd),
                  rounded(ops::layernorm(widened(g), widened(lw), widened(lb), 1e-5f, mean_ref, rstd_ref)),
                  "layernorm");
  check_identical(mean, mean_ref, "layernorm's mean (float32)");
  check_identical(ops::layernorm_backward_input(x, g, lw, mean, rstd),
                  rounded(ops::layernorm_backward_input(widened(x), widened(g), widened(lw), mean, rstd)),
                  "layernorm_backward_input");

  const Tensor qkv = random_bf16({2, 5, 24});
  Tensor probs, probs_ref;
  check_identical(ops::attention(qkv, 2, probs), rounded(ops::attention(widened(qkv), 2, probs_ref)), "attention");
  check_identical(probs, rounded(probs_ref), "attention's saved probabilities");
  const Tensor dout = random_bf16({2, 5, 8});
  check_identical(ops::attention_backward(dout, qkv, probs, 2),
                  rounded(ops::attention_backward(widened(dout), widened(qkv), widened(probs), 2)),
                  "attention_backward");

  const Tensor logits = random_bf16({2, 3, 7}, -4.0f, 4.0f);
  const Tensor labels = random_labels({2, 3}, 7);
  const Tensor loss = ops::cross_entropy(logits, labels);
  BOOST_TEST(loss.dtype() == DType::float32);  // losses stay float32
  check_identical(loss, ops::cross_entropy(widened(logits), labels), "cross_entropy");
  const Tensor dloss = random_f32({2});
  check_identical(ops::cross_entropy_backward(logits, labels, dloss),
                  rounded(ops::cross_entropy_backward(widened(logits), labels, dloss)), "cross_entropy_backward");

  const Tensor wte = random_bf16({7, 16}), wpe = random_bf16({3, 16});
  check_identical(ops::embedding(labels, wte, wpe), rounded(ops::embedding(labels, widened(wte), widened(wpe))),
                  "embedding (its output takes the tables' dtype)");

  const Tensor target = random_f32({2, 3, 16});
  check_identical(ops::mse(g, target), ops::mse(widened(g), target), "mse");
  check_identical(ops::mse_backward(g, target, dloss), rounded(ops::mse_backward(widened(g), target, dloss)),
                  "mse_backward");
}

// A typed GEMM with a bfloat16 C and beta != 0 reads C widened, and leading dimensions larger than the rows.
BOOST_AUTO_TEST_CASE(gemm_with_bf16_c_and_leading_dimensions) {
  libpipe::Backend& be = libpipe::backend_for(libpipe::Device::cpu);
  const Tensor a = random_bf16({4, 6}), b = random_bf16({3, 8});  // A [m=4, k=3] at lda 6, B [k=3, n=5] at ldb 8
  const Tensor c0 = random_bf16({4, 7});                             // C [4, 5] at ldc 7
  Tensor c = ops::clone(c0);
  be.gemm(false, false, 4, 5, 3, 0.5f, {a.data(), DType::bfloat16}, 6, {b.data(), DType::bfloat16}, 8, 2.0f,
          {c.data(), DType::bfloat16}, 7);
  Tensor wa = widened(a), wb = widened(b), wc0 = widened(c0), wc = widened(c);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 7; ++j) {
      double want = wc0.f32()[i * 7 + j];
      if (j < 5) {
        double sum = 0;
        for (int l = 0; l < 3; ++l) sum += double(wa.f32()[i * 6 + l]) * wb.f32()[l * 8 + j];
        want = bf16_to_float(float_to_bf16(static_cast<float>(0.5 * sum + 2.0 * want)));
      }
      BOOST_TEST(wc.f32()[i * 7 + j] == want, boost::test_tools::tolerance(1e-2));  // one bfloat16 rounding apart
      if (j >= 5) BOOST_TEST(wc.f32()[i * 7 + j] == wc0.f32()[i * 7 + j]);      // past n: untouched
    }
  BOOST_TEST(pipe_test::error_of([&] {
               be.gemm(false, false, 1, 1, 1, 1.0f, {a.data(), DType::int32}, 1, {b.data(), DType::bfloat16}, 1, 0.0f,
                       {c.data(), DType::bfloat16}, 1);
             }) == "gemm: operands must be float32 or bfloat16, not int32");
}

// Parameters stored in bfloat16 keep float32 masters; the optimizer steps the master and rounds it into the value.
BOOST_AUTO_TEST_CASE(optimizer_steps_the_float32_master) {
  struct OneParam : libpipe::Layer {
    std::vector<libpipe::Parameter> params;
    std::vector<libpipe::Parameter>& parameters() override { return params; }
    Tensor forward(libpipe::LayerContext&, const Tensor& x) override { return x; }
    Tensor backward_input(libpipe::LayerContext&, const Tensor& dy) override { return dy; }
    void backward_weight(libpipe::LayerContext&, const Tensor&) override {}
  } layer;
  const Tensor start = random_f32({4, 4});
  libpipe::Parameter w;
  w.spec.name = "w";
  w.spec.shape = {4, 4};
  w.value = ops::clone(start);
  layer.params.push_back(w);
  libpipe::store_parameters_in_bf16(layer);
  libpipe::allocate_grads(layer);
  libpipe::Parameter& p = layer.params[0];
  BOOST_TEST(p.value.dtype() == DType::bfloat16);
  BOOST_TEST(p.grad.dtype() == DType::float32);
  check_identical(p.master, start, "the master keeps the float32 values");
  BOOST_TEST(layer.parameter_bytes() == 16u * (4 + 2));

  // A tiny step that bfloat16 alone could not hold: the master keeps it.
  ops::fill(p.grad, 1.0f);
  libpipe::OptimizerConfig config;
  config.kind = "sgd";
  config.momentum = 0.0f;
  config.weight_decay = 0.0f;
  libpipe::Optimizer opt(config, {&p});
  opt.step(1e-5f);
  Tensor master = p.master, s = start;
  for (int i = 0; i < 16; ++i) BOOST_TEST(master.f32()[i] == s.f32()[i] - 1e-5f);
  check_identical(p.value, rounded(p.master), "the value is the rounded master");
}
