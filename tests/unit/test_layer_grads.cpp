// Gradient checks of the shipped layers' math: every layer type's dx (through
// backward_input) and every parameter gradient (through backward_weight)
// against central finite differences of a scalar objective, on small random
// shapes. Then the properties the engine relies on: backward_weight
// accumulates, contexts of different micro-batches are independent (so a
// zero-bubble schedule may run backward_weight late), TransformerBlock is the
// composition of the separate layers, a GPT-shaped stack with a tied head
// starts at loss ln(vocab) and differentiates end to end, and misuse is one
// Error naming the layer type and the shapes.
//
// Finite differences in float32: eps = 1e-2, central, objective summed in
// double. A coordinate passes when |analytic - numeric| <= 1e-3 + 2e-2 *
// max(|analytic|, |numeric|). Weights are redrawn at a scale (0.4) where every
// non-linearity matters and gradients are O(1), so the absolute floor (1e-3)
// is far below the values checked (the GPT stack uses the loss summed over
// tokens for the same reason). Each check prints its largest difference.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE layer_grads
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pipe/args.hpp"
#include "pipe/error.hpp"
#include "pipe/init.hpp"
#include "pipe/layer.hpp"
#include "pipe/ops.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"
#include "pipe/shape.hpp"
#include "pipe/tensor.hpp"

namespace {

using libpipe::DType;
using libpipe::Layer;
using libpipe::LayerContext;
using libpipe::Shape;
using libpipe::Tensor;
using libpipe::TensorType;

constexpr double kEps = 1e-2;
constexpr double kRelTol = 2e-2;
constexpr double kAbsTol = 1e-3;
constexpr float kWeightStd = 0.4f;

// The shapes of every case: B = 2 samples of T = 5 positions, C = 8 channels.
constexpr std::int64_t kB = 2, kT = 5, kC = 8, kHeads = 2, kVocab = 11;

// Loaded once: plugins are never unloaded, so one registry serves every case.
libpipe::LayerRegistry& registry() {
  static libpipe::LayerRegistry* instance = [] {
    auto* r = new libpipe::LayerRegistry;
    libpipe::load_plugins(*r, libpipe::PluginSearch{/*builtin*/ true, /*environment*/ false, {}});
    return r;
  }();
  return *instance;
}

// ArgValue's converting constructor is ambiguous for plain int literals.
libpipe::ArgValue I(std::int64_t v) { return v; }
libpipe::ArgValue B(bool v) { return v; }

libpipe::Args make_args(std::initializer_list<std::pair<const char*, libpipe::ArgValue>> values) {
  libpipe::Args args;
  int line = 1;
  for (const auto& [key, value] : values) args.set(key, value, line++);
  return args;
}

TensorType f32(Shape shape) { return {std::move(shape), DType::float32}; }
TensorType i32(Shape shape) { return {std::move(shape), DType::int32}; }

// Host pointers; a copy of a Tensor shares its storage, so these stay valid
// as long as `t` does.
float* values(Tensor& t) { return t.host_data<float>(); }
const float* values(const Tensor& t) {
  Tensor shared = t;
  return shared.host_data<float>();
}

std::unique_ptr<Layer> make(const std::string& type, const libpipe::Args& args, const TensorType& input,
                            int layer_index = 0) {
  libpipe::CreateContext context;
  context.layer_index = layer_index;
  context.seed = 1234;
  auto layer = registry().get(type).create(args, input, context);
  libpipe::allocate_grads(*layer);
  return layer;
}

Tensor param(Layer& layer, const std::string& name) {
  for (auto& p : layer.parameters())
    if (p.spec.name == name) return p.value;
  throw std::runtime_error("no parameter " + name);
}
Tensor grad(Layer& layer, const std::string& name) {
  for (auto& p : layer.parameters())
    if (p.spec.name == name) return p.grad;
  throw std::runtime_error("no parameter " + name);
}

Tensor random(const Shape& shape, libpipe::Rng& rng, float stddev = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::float32);
  libpipe::fill_normal(t, rng, stddev);
  return t;
}

// Token ids in [0, vocab); a few forced repeats so that the embedding's
// scatter-add really adds.
Tensor random_tokens(const Shape& shape, std::int64_t vocab, libpipe::Rng& rng) {
  Tensor t = Tensor::empty(shape, DType::int32);
  auto* p = t.host_data<std::int32_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<std::int32_t>(rng.next_u64() % vocab);
  if (t.numel() >= 4) p[3] = p[0];
  return t;
}

// Redraws every parameter from N(0, kWeightStd): the shipped init (0.02) makes
// most gradients tiny, which finite differences cannot resolve in float32.
void randomize(Layer& layer, libpipe::Rng& rng) {
  for (auto& p : layer.parameters()) libpipe::fill_normal(p.value, rng, kWeightStd);
}

double dot(const Tensor& a, const Tensor& b) {
  BOOST_REQUIRE(a.numel() == b.numel());
  const float* pa = values(a);
  const float* pb = values(b);
  double s = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) s += double(pa[i]) * pb[i];
  return s;
}

Tensor copy(const Tensor& t) { return libpipe::ops::clone(t); }

// Compares an analytic gradient with central differences of `objective` at
// the chosen coordinates of `targets` (several tensors are perturbed together
// for a tied weight), and prints the largest difference.
void check_gradient(const std::string& name, std::vector<Tensor> targets, const Tensor& analytic,
                    const std::function<double()>& objective, std::vector<std::int64_t> indices = {}) {
  if (indices.empty())
    for (std::int64_t i = 0; i < analytic.numel(); ++i) indices.push_back(i);
  const float* a = values(analytic);
  double worst = 0, worst_ratio = 0, largest = 0;
  std::int64_t worst_index = -1, failures = 0;
  std::string first_failure;
  for (auto i : indices) {
    const float saved = values(targets[0])[i];
    auto set = [&](float v) {
      for (auto& t : targets) values(t)[i] = v;
    };
    const float up = static_cast<float>(saved + kEps), down = static_cast<float>(saved - kEps);
    set(up);
    const double f_up = objective();
    set(down);
    const double f_down = objective();
    set(saved);
    const double numeric = (f_up - f_down) / (double(up) - double(down));
    const double diff = std::abs(a[i] - numeric);
    const double allowed = kAbsTol + kRelTol * std::max(std::abs(double(a[i])), std::abs(numeric));
    largest = std::max(largest, std::abs(double(a[i])));
    if (diff > worst) worst = diff, worst_index = i;
    worst_ratio = std::max(worst_ratio, diff / allowed);
    if (diff > allowed && failures++ == 0)
      first_failure =
          "[" + std::to_string(i) + "] analytic " + std::to_string(a[i]) + ", numeric " + std::to_string(numeric);
  }
  std::cout << "  " << name << ": " << indices.size() << " coordinates, largest |analytic - numeric| " << worst
            << " at [" << worst_index << "] (largest |analytic| " << largest << "), " << worst_ratio
            << " of the tolerance\n";
  BOOST_CHECK_MESSAGE(failures == 0, name << ": " << failures << " of " << indices.size()
                                          << " coordinates outside the tolerance, first " << first_failure);
}

// The standard check of one layer: L = sum(y * R) for a fixed random R (so
// dy = R); dx through backward_input (for a float input) and every parameter
// gradient through backward_weight, against finite differences.
void check_layer(const std::string& title, Layer& layer, Tensor x, const Tensor& labels, libpipe::Rng& rng) {
  std::cout << title << "\n";
  LayerContext ctx;
  ctx.labels = labels;
  const Tensor y = layer.forward(ctx, x);
  const Tensor r = random(y.shape(), rng);
  libpipe::zero_grads(layer);
  const Tensor dx = layer.backward_input(ctx, r);
  layer.backward_weight(ctx, r);

  auto objective = [&] {
    LayerContext c;
    c.labels = labels;
    return dot(layer.forward(c, x), r);
  };
  if (x.dtype() == DType::float32) {
    BOOST_REQUIRE(dx.defined());
    BOOST_TEST(libpipe::shape_str(dx.shape()) == libpipe::shape_str(x.shape()));
    check_gradient(title + " dx", {x}, dx, objective);
  }
  for (auto& p : layer.parameters()) check_gradient(title + " " + p.spec.name, {p.value}, p.grad, objective);
}

libpipe::Args linear_args(std::int64_t in, std::int64_t out, bool bias = true) {
  return make_args({{"in_features", I(in)}, {"out_features", I(out)}, {"bias", B(bias)}});
}
libpipe::Args attention_args() { return make_args({{"dim", I(kC)}, {"heads", I(kHeads)}}); }

// Everything a layer's gradients depend on after one forward, backward_input
// and backward_weight with dy = r.
struct Pass {
  Tensor y, dx;
  std::map<std::string, Tensor> grads;
};

Pass run_pass(Layer& layer, const Tensor& x, const Tensor& r, const Tensor& labels = {}) {
  LayerContext ctx;
  ctx.labels = labels;
  Pass pass;
  pass.y = layer.forward(ctx, x);
  libpipe::zero_grads(layer);
  pass.dx = layer.backward_input(ctx, r);
  layer.backward_weight(ctx, r);
  for (auto& p : layer.parameters()) pass.grads[p.spec.name] = copy(p.grad);
  return pass;
}

// Equality up to float rounding (different but equivalent orders of operations).
void check_close(const std::string& name, const Tensor& a, const Tensor& b, double tol = 1e-5) {
  BOOST_TEST_REQUIRE(libpipe::shape_str(a.shape()) == libpipe::shape_str(b.shape()), name);
  const float* pa = values(a);
  const float* pb = values(b);
  double worst = 0;
  std::int64_t bad = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    const double diff = std::abs(double(pa[i]) - pb[i]);
    worst = std::max(worst, diff);
    if (diff > tol * (1 + std::abs(double(pb[i])))) ++bad;
  }
  BOOST_CHECK_MESSAGE(bad == 0, name << ": " << bad << " elements differ, largest difference " << worst);
}

// `call` must throw a libpipe::Error whose message contains every one of `parts`.
void check_error(const std::function<void()>& call, std::initializer_list<std::string> parts) {
  try {
    call();
    BOOST_ERROR("no error; expected one containing '" << *parts.begin() << "'");
  } catch (const libpipe::Error& e) {
    const std::string message = e.what();
    for (const auto& part : parts)
      BOOST_CHECK_MESSAGE(message.find(part) != std::string::npos, "'" << part << "' not in: " << message);
    BOOST_CHECK_MESSAGE(message.find('\n') == std::string::npos, "not one line: " << message);
  }
}

}  // namespace

// ---- each layer type against finite differences

BOOST_AUTO_TEST_CASE(linear_gradients) {
  libpipe::Rng rng(1);
  auto layer = make("Linear", linear_args(kC, 6), f32({kT, kC}));
  randomize(*layer, rng);
  check_layer("Linear [B, T, C]", *layer, random({kB, kT, kC}, rng), {}, rng);

  auto flat = make("Linear", linear_args(kC, 3, false), f32({kC}));
  randomize(*flat, rng);
  BOOST_TEST(flat->parameters().size() == 1u);
  check_layer("Linear [B, C], no bias", *flat, random({kB, kC}, rng), {}, rng);
}

BOOST_AUTO_TEST_CASE(relu_gradients) {
  libpipe::Rng rng(2);
  auto layer = make("ReLU", {}, f32({kT, kC}));
  Tensor x = random({kB, kT, kC}, rng);
  // Away from the kink at 0, where central differences straddle two slopes.
  for (std::int64_t i = 0; i < x.numel(); ++i)
    if (std::abs(values(x)[i]) < 0.1f) values(x)[i] = values(x)[i] < 0 ? -0.5f : 0.5f;
  check_layer("ReLU", *layer, x, {}, rng);
}

BOOST_AUTO_TEST_CASE(gelu_gradients) {
  libpipe::Rng rng(3);
  auto layer = make("GELU", {}, f32({kT, kC}));
  check_layer("GELU", *layer, random({kB, kT, kC}, rng, 2.0f), {}, rng);
}

BOOST_AUTO_TEST_CASE(layer_norm_gradients) {
  libpipe::Rng rng(4);
  auto layer = make("LayerNorm", {}, f32({kT, kC}));
  randomize(*layer, rng);
  check_layer("LayerNorm", *layer, random({kB, kT, kC}, rng), {}, rng);
}

BOOST_AUTO_TEST_CASE(embedding_gradients) {
  libpipe::Rng rng(5);
  auto layer = make("Embedding", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}, {"positions", I(7)}}), i32({kT}));
  randomize(*layer, rng);
  const Tensor tokens = random_tokens({kB, kT}, kVocab, rng);
  check_layer("Embedding", *layer, tokens, {}, rng);

  // Token ids have no gradient: backward_input says so with an undefined tensor.
  LayerContext ctx;
  const Tensor y = layer->forward(ctx, tokens);
  BOOST_TEST(libpipe::shape_str(y.shape()) == libpipe::shape_str({kB, kT, kC}));
  BOOST_TEST(!layer->backward_input(ctx, random(y.shape(), rng)).defined());
}

BOOST_AUTO_TEST_CASE(lm_head_gradients) {
  libpipe::Rng rng(6);
  auto layer = make("LMHead", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}}), f32({kT, kC}));
  randomize(*layer, rng);
  check_layer("LMHead", *layer, random({kB, kT, kC}, rng), {}, rng);
}

BOOST_AUTO_TEST_CASE(softmax_cross_entropy_gradients) {
  libpipe::Rng rng(7);
  auto layer = make("SoftmaxCrossEntropy", {}, f32({kT, kVocab}));
  check_layer("SoftmaxCrossEntropy [B, T, V]", *layer, random({kB, kT, kVocab}, rng, 2.0f),
              random_tokens({kB, kT}, kVocab, rng), rng);
  auto flat = make("SoftmaxCrossEntropy", {}, f32({kVocab}));
  check_layer("SoftmaxCrossEntropy [B, V]", *flat, random({kB, kVocab}, rng, 2.0f), random_tokens({kB}, kVocab, rng),
              rng);

  // The per-sample loss is the mean over the sample's rows of -log softmax[label].
  const Tensor logits = random({kB, kT, kVocab}, rng);
  const Tensor labels = random_tokens({kB, kT}, kVocab, rng);
  LayerContext ctx;
  ctx.labels = labels;
  const Tensor loss = layer->forward(ctx, logits);
  BOOST_TEST_REQUIRE(libpipe::shape_str(loss.shape()) == libpipe::shape_str({kB}));
  const float* z = values(logits);
  const std::int32_t* label = Tensor(labels).host_data<std::int32_t>();
  for (std::int64_t b = 0; b < kB; ++b) {
    double sum = 0;
    for (std::int64_t t = 0; t < kT; ++t) {
      const float* row = z + (b * kT + t) * kVocab;
      double norm = 0;
      for (std::int64_t v = 0; v < kVocab; ++v) norm += std::exp(double(row[v]));
      sum += std::log(norm) - row[label[b * kT + t]];
    }
    BOOST_TEST(values(loss)[b] == sum / kT, boost::test_tools::tolerance(1e-5));
  }
}

BOOST_AUTO_TEST_CASE(mse_loss_gradients) {
  libpipe::Rng rng(8);
  auto layer = make("MSELoss", {}, f32({kT, kC}));
  check_layer("MSELoss", *layer, random({kB, kT, kC}, rng), random({kB, kT, kC}, rng), rng);
}

BOOST_AUTO_TEST_CASE(causal_self_attention_gradients) {
  libpipe::Rng rng(9);
  auto layer = make("CausalSelfAttention", attention_args(), f32({kT, kC}));
  randomize(*layer, rng);
  check_layer("CausalSelfAttention", *layer, random({kB, kT, kC}, rng), {}, rng);
}

BOOST_AUTO_TEST_CASE(transformer_block_gradients) {
  libpipe::Rng rng(10);
  auto layer = make("TransformerBlock", attention_args(), f32({kT, kC}));
  randomize(*layer, rng);
  check_layer("TransformerBlock", *layer, random({kB, kT, kC}, rng), {}, rng);
}

// Causality: an output position must not depend on later inputs.
BOOST_AUTO_TEST_CASE(attention_is_causal) {
  libpipe::Rng rng(11);
  for (const char* type : {"CausalSelfAttention", "TransformerBlock"}) {
    auto layer = make(type, attention_args(), f32({kT, kC}));
    randomize(*layer, rng);
    Tensor x = random({kB, kT, kC}, rng);
    LayerContext a, b;
    const Tensor y = copy(layer->forward(a, x));
    for (std::int64_t c = 0; c < kC; ++c) values(x)[(kT - 1) * kC + c] += 1.0f;  // sample 0, last position
    const Tensor z = layer->forward(b, x);
    // Largest change of sample 0's outputs at positions before the last, and at the last.
    double before_last = 0, last = 0;
    for (std::int64_t t = 0; t < kT; ++t)
      for (std::int64_t c = 0; c < kC; ++c) {
        const double d = std::abs(values(y)[t * kC + c] - values(z)[t * kC + c]);
        double& worst = t == kT - 1 ? last : before_last;
        worst = std::max(worst, d);
      }
    BOOST_TEST_CONTEXT(type) {
      BOOST_TEST(before_last == 0.0);
      BOOST_TEST(last > 0.0);
    }
  }
}

// ---- what schedules rely on

struct LayerCase {
  std::string type;
  libpipe::Args args;
  TensorType input;
};

std::vector<LayerCase> weighted_cases() {
  return {{"Linear", linear_args(kC, 6), f32({kT, kC})},
          {"LayerNorm", {}, f32({kT, kC})},
          {"Embedding", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}, {"positions", I(kT)}}), i32({kT})},
          {"LMHead", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}}), f32({kT, kC})},
          {"CausalSelfAttention", attention_args(), f32({kT, kC})},
          {"TransformerBlock", attention_args(), f32({kT, kC})}};
}

Tensor random_input(const TensorType& type, libpipe::Rng& rng) {
  Shape shape{kB};
  shape.insert(shape.end(), type.shape.begin(), type.shape.end());
  return type.dtype == DType::int32 ? random_tokens(shape, kVocab, rng) : random(shape, rng);
}

BOOST_AUTO_TEST_CASE(backward_weight_accumulates) {
  libpipe::Rng rng(12);
  for (const auto& c : weighted_cases()) {
    BOOST_TEST_CONTEXT(c.type) {
      auto layer = make(c.type, c.args, c.input);
      randomize(*layer, rng);
      const Tensor x = random_input(c.input, rng);
      LayerContext ctx;
      const Tensor y = layer->forward(ctx, x);
      const Tensor r = random(y.shape(), rng);
      layer->backward_input(ctx, r);
      libpipe::zero_grads(*layer);
      layer->backward_weight(ctx, r);
      std::map<std::string, Tensor> once;
      for (auto& p : layer->parameters()) once[p.spec.name] = copy(p.grad);
      layer->backward_weight(ctx, r);
      for (auto& p : layer->parameters()) {
        Tensor twice = copy(once[p.spec.name]);
        libpipe::ops::scale(twice, 2.0f);
        check_close(c.type + " " + p.spec.name + " after two backward_weight", p.grad, twice);
        BOOST_TEST(libpipe::ops::sum_squares(once[p.spec.name]) > 0.0, p.spec.name << " has a zero gradient");
      }
    }
  }
}

// Two micro-batches in flight, their calls interleaved the way a zero-bubble
// schedule interleaves them (F1 F2 B2 B1 W2 W1): each context's gradients are
// those of its own micro-batch alone.
BOOST_AUTO_TEST_CASE(contexts_are_independent) {
  libpipe::Rng rng(13);
  for (const auto& c : weighted_cases()) {
    BOOST_TEST_CONTEXT(c.type) {
      auto layer = make(c.type, c.args, c.input);
      randomize(*layer, rng);
      const Tensor x1 = random_input(c.input, rng), x2 = random_input(c.input, rng);
      Shape out{kB};
      const Shape d = registry().get(c.type).describe(c.args, c.input).output.shape;
      out.insert(out.end(), d.begin(), d.end());
      const Tensor r1 = random(out, rng), r2 = random(out, rng);
      const Pass p1 = run_pass(*layer, x1, r1);
      const Pass p2 = run_pass(*layer, x2, r2);

      LayerContext c1, c2;
      check_close("y1", layer->forward(c1, x1), p1.y);
      check_close("y2", layer->forward(c2, x2), p2.y);
      const Tensor dx2 = layer->backward_input(c2, r2);
      const Tensor dx1 = layer->backward_input(c1, r1);
      if (p1.dx.defined()) {
        check_close("dx1", dx1, p1.dx);
        check_close("dx2", dx2, p2.dx);
      }
      libpipe::zero_grads(*layer);
      layer->backward_weight(c2, r2);
      for (auto& p : layer->parameters())
        check_close(p.spec.name + " of micro-batch 2", p.grad, p2.grads.at(p.spec.name));
      libpipe::zero_grads(*layer);
      layer->backward_weight(c1, r1);
      for (auto& p : layer->parameters())
        check_close(p.spec.name + " of micro-batch 1", p.grad, p1.grads.at(p.spec.name));
    }
  }
}

// The block is exactly LayerNorm, CausalSelfAttention, residual, LayerNorm,
// Linear, GELU, Linear, residual, run as separate layers with its weights.
BOOST_AUTO_TEST_CASE(transformer_block_equals_composition) {
  libpipe::Rng rng(14);
  auto block = make("TransformerBlock", attention_args(), f32({kT, kC}));
  randomize(*block, rng);
  auto ln1 = make("LayerNorm", {}, f32({kT, kC}));
  auto attn = make("CausalSelfAttention", attention_args(), f32({kT, kC}));
  auto ln2 = make("LayerNorm", {}, f32({kT, kC}));
  auto fc = make("Linear", linear_args(kC, 4 * kC), f32({kT, kC}));
  auto gelu = make("GELU", {}, f32({kT, 4 * kC}));
  auto proj = make("Linear", linear_args(4 * kC, kC), f32({kT, 4 * kC}));
  const std::vector<std::pair<std::string, Layer*>> parts = {{"ln1.", ln1.get()},
                                                             {"attn.", attn.get()},
                                                             {"ln2.", ln2.get()},
                                                             {"mlp.fc.", fc.get()},
                                                             {"mlp.proj.", proj.get()}};
  for (const auto& [prefix, part] : parts)
    for (auto& p : part->parameters()) {
      Tensor value = p.value;
      libpipe::ops::fill(value, 0.0f);
      libpipe::ops::accumulate(value, param(*block, prefix + p.spec.name));
    }

  const Tensor x = random({kB, kT, kC}, rng);
  const Tensor r = random({kB, kT, kC}, rng);
  const Pass whole = run_pass(*block, x, r);

  for (const auto& part : parts) libpipe::zero_grads(*part.second);
  LayerContext c[6];
  const Tensor h = libpipe::ops::add(x, attn->forward(c[1], ln1->forward(c[0], x)));
  const Tensor y =
      libpipe::ops::add(h, proj->forward(c[5], gelu->forward(c[4], fc->forward(c[3], ln2->forward(c[2], h)))));
  check_close("y", y, whole.y);

  const Tensor dgelu = proj->backward_input(c[5], r);
  const Tensor dfc = gelu->backward_input(c[4], dgelu);
  const Tensor dln2 = fc->backward_input(c[3], dfc);
  Tensor dh = ln2->backward_input(c[2], dln2);
  libpipe::ops::accumulate(dh, r);  // the residual around the MLP
  const Tensor dln1 = attn->backward_input(c[1], dh);
  Tensor dx = ln1->backward_input(c[0], dln1);
  libpipe::ops::accumulate(dx, dh);  // the residual around attention
  check_close("dx", dx, whole.dx);

  // Each part's weight gradient from the gradient at its own output.
  proj->backward_weight(c[5], r);
  fc->backward_weight(c[3], dfc);
  ln2->backward_weight(c[2], dln2);
  attn->backward_weight(c[1], dh);
  ln1->backward_weight(c[0], dln1);
  for (const auto& [prefix, part] : parts)
    for (auto& p : part->parameters()) check_close(prefix + p.spec.name, p.grad, whole.grads.at(prefix + p.spec.name));
}

// A gpt-tiny-shaped model: Embedding, two blocks, LayerNorm, LMHead tied to
// the embedding, SoftmaxCrossEntropy. At the shipped init the loss is
// ln(vocab); with larger weights every sampled coordinate of every parameter
// (the tied table perturbed in both layers at once) matches finite differences.
BOOST_AUTO_TEST_CASE(gpt_stack) {
  libpipe::Rng rng(15);
  const auto block_args = make_args({{"dim", I(kC)}, {"heads", I(kHeads)}, {"n_layer", I(2)}});
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(
      make("Embedding", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}, {"positions", I(kT)}}), i32({kT}), 0));
  layers.push_back(make("TransformerBlock", block_args, f32({kT, kC}), 1));
  layers.push_back(make("TransformerBlock", block_args, f32({kT, kC}), 2));
  layers.push_back(make("LayerNorm", {}, f32({kT, kC}), 3));
  layers.push_back(make("LMHead", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}}), f32({kT, kC}), 4));
  layers.push_back(make("SoftmaxCrossEntropy", {}, f32({kT, kVocab}), 5));
  Layer& embedding = *layers.front();
  Layer& head = *layers[4];
  auto tie = [&] {
    Tensor w = param(head, "weight");
    libpipe::ops::fill(w, 0.0f);
    libpipe::ops::accumulate(w, param(embedding, "wte"));
  };
  tie();

  const Tensor tokens = random_tokens({kB, kT}, kVocab, rng);
  const Tensor labels = random_tokens({kB, kT}, kVocab, rng);
  // The per-sample losses [B], each context kept for backward.
  auto forward = [&](std::vector<LayerContext>& ctx) {
    ctx.assign(layers.size(), LayerContext{});
    ctx.back().labels = labels;
    Tensor a = tokens;
    for (std::size_t i = 0; i < layers.size(); ++i) a = layers[i]->forward(ctx[i], a);
    BOOST_REQUIRE(libpipe::shape_str(a.shape()) == libpipe::shape_str({kB}));
    return a;
  };
  std::vector<LayerContext> ctx;
  const Tensor initial = forward(ctx);
  const double mean = (double(values(initial)[0]) + values(initial)[1]) / kB;
  std::cout << "gpt stack: mean loss at init " << mean << ", ln(vocab) " << std::log(double(kVocab)) << "\n";
  BOOST_TEST(std::abs(mean - std::log(double(kVocab))) < 0.05);

  // The objective is the loss summed over every token (T times the sum of the
  // per-sample means, so dy = T per sample): PyTorch's mean times B * T,
  // which puts the gradients well above the absolute floor.
  for (auto& layer : layers) randomize(*layer, rng);
  tie();
  auto objective = [&] {
    std::vector<LayerContext> c;
    const Tensor loss = forward(c);
    return kT * (double(values(loss)[0]) + values(loss)[1]);
  };
  std::cout << "gpt stack: summed token loss " << objective() << " with weights of std " << kWeightStd << "\n";
  forward(ctx);
  Tensor d = Tensor::empty({kB}, DType::float32);
  libpipe::ops::fill(d, float(kT));
  for (std::size_t i = layers.size(); i-- > 0;) {
    libpipe::zero_grads(*layers[i]);
    const Tensor dx = layers[i]->backward_input(ctx[i], d);
    layers[i]->backward_weight(ctx[i], d);
    d = dx;
  }
  BOOST_TEST(!d.defined());  // the token ids have no gradient
  Tensor tied = copy(grad(embedding, "wte"));
  libpipe::ops::accumulate(tied, grad(head, "weight"));

  auto sample = [&](std::int64_t n) {
    std::vector<std::int64_t> indices;
    for (int k = 0; k < 6; ++k) indices.push_back(static_cast<std::int64_t>(rng.next_u64() % n));
    return indices;
  };
  check_gradient("gpt stack tied wte (embedding + head)", {param(embedding, "wte"), param(head, "weight")}, tied,
                 objective, sample(kVocab * kC));
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (auto& p : layers[i]->parameters()) {
      if (p.spec.tieable) continue;
      check_gradient("gpt stack layer " + std::to_string(i) + " " + p.spec.name, {p.value}, p.grad, objective,
                     sample(p.value.numel()));
    }
}

// ---- misuse: one line naming the layer type and the shapes

BOOST_AUTO_TEST_CASE(errors_name_the_layer_and_shapes) {
  libpipe::Rng rng(16);
  auto linear = make("Linear", linear_args(kC, 6), f32({kT, kC}));
  LayerContext ctx;
  check_error(
      [&] {
        linear->forward(ctx, random({kB, kT, 7}, rng));
      },
      {"Linear", "float32[2, 5, 7]", "float32[B, 5, 8]"});
  check_error([&] { linear->forward(ctx, random({kT, kC}, rng)); }, {"Linear", "float32[5, 8]", "float32[B, 5, 8]"});
  check_error(
      [&] {
        linear->forward(ctx, random_tokens({kB, kT, kC}, kVocab, rng));
      },
      {"Linear", "int32[2, 5, 8]", "float32[B, 5, 8]"});
  check_error([&] { linear->backward_input(ctx, random({kB, kT, 6}, rng)); }, {"Linear", "backward_input"});
  LayerContext ok;
  linear->forward(ok, random({kB, kT, kC}, rng));
  check_error(
      [&] {
        linear->backward_input(ok, random({kB, kT, 5}, rng));
      },
      {"Linear", "float32[2, 5, 5]", "float32[2, 5, 6]"});

  auto embedding =
      make("Embedding", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}, {"positions", I(kT)}}), i32({kT}));
  check_error([&] { embedding->forward(ctx, random({kB, kT}, rng)); }, {"Embedding", "float32[2, 5]", "int32[B, 5]"});

  auto ce = make("SoftmaxCrossEntropy", {}, f32({kT, kVocab}));
  check_error(
      [&] {
        LayerContext c;
        ce->forward(c, random({kB, kT, kVocab}, rng));
      },
      {"SoftmaxCrossEntropy", "labels", "float32[2, 5, 11]", "int32[2, 5]"});
  check_error(
      [&] {
        LayerContext c;
        c.labels = random_tokens({kB, kT + 1}, kVocab, rng);
        ce->forward(c, random({kB, kT, kVocab}, rng));
      },
      {"SoftmaxCrossEntropy", "int32[2, 6]", "int32[2, 5]"});
  check_error(
      [&] {
        LayerContext c;
        c.labels = random({kB, kT}, rng);
        ce->forward(c, random({kB, kT, kVocab}, rng));
      },
      {"SoftmaxCrossEntropy", "float32[2, 5]", "int32[2, 5]"});

  auto mse = make("MSELoss", {}, f32({kC}));
  check_error(
      [&] {
        LayerContext c;
        mse->forward(c, random({kB, kC}, rng));
      },
      {"MSELoss", "labels", "float32[2, 8]"});
  check_error(
      [&] {
        LayerContext c;
        c.labels = random({kB, kC + 1}, rng);
        mse->forward(c, random({kB, kC}, rng));
      },
      {"MSELoss", "float32[2, 9]", "float32[2, 8]"});

  for (const char* type : {"CausalSelfAttention", "TransformerBlock"}) {
    auto layer = make(type, attention_args(), f32({kT, kC}));
    check_error(
        [&] {
          layer->forward(ctx, random({kB, kT + 1, kC}, rng));
        },
        {type, "float32[2, 6, 8]", "float32[B, 5, 8]"});
    // backward_weight needs what backward_input saves: called first, it says so.
    LayerContext c;
    const Tensor y = layer->forward(c, random({kB, kT, kC}, rng));
    check_error([&] { layer->backward_weight(c, y); },
                {type, "backward_weight", "forward, backward_input and backward_weight"});
  }

  // Gradients are allocated by allocate_grads, not by backward_weight.
  libpipe::CreateContext context;
  auto bare = registry().get("Linear").create(linear_args(kC, 6), f32({kT, kC}), context);
  LayerContext c;
  const Tensor y = bare->forward(c, random({kB, kT, kC}, rng));
  check_error([&] { bare->backward_weight(c, y); }, {"Linear", "allocate_grads"});
}
