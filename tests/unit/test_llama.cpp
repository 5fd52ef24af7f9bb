// The llama plugin (plugins/llama): RMSNorm, LlamaAttention, SwiGLU and
// LlamaBlock against central finite differences (as test_layer_grads does for
// the GPT layers: eps 1e-2, |analytic - numeric| <= 1e-3 + 2e-2 max(|a|, |n|),
// weights redrawn at std 0.4), the properties the engine relies on
// (backward_weight accumulates, contexts are independent), LlamaBlock as the
// composition of the separate layers, grouped key/value heads as repeated
// heads, rotary embeddings as Hugging Face's rotate_half with the angles
// t theta^(-2i/D), causality, a Llama stack with an untied head starting at
// ln(vocab), the description figures as the sum of the parts, the shipped
// models' parameter counts, and the one-line errors for bad arguments.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE llama
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
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/init.hpp"
#include "pipe/layer.hpp"
#include "pipe/model.hpp"
#include "pipe/ops.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"
#include "pipe/shape.hpp"
#include "pipe/tensor.hpp"
#include "shipped_model.hpp"

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

// B = 2 samples of T = 5 positions, C = 8 channels in 4 query heads (D = 2) sharing 2 key/value heads, an MLP
// 12 wide, vocabulary 11.
constexpr std::int64_t kB = 2, kT = 5, kC = 8, kHeads = 4, kKvHeads = 2, kHidden = 12, kVocab = 11;

libpipe::LayerRegistry& registry() {
  static libpipe::LayerRegistry* instance = [] {
    auto* r = new libpipe::LayerRegistry;
    libpipe::load_plugins(*r, libpipe::PluginSearch{/*builtin*/ true, /*environment*/ false, {}});
    return r;
  }();
  return *instance;
}

libpipe::ArgValue I(std::int64_t v) { return v; }
libpipe::ArgValue F(double v) { return v; }

libpipe::Args make_args(std::initializer_list<std::pair<const char*, libpipe::ArgValue>> values) {
  libpipe::Args args;
  int line = 1;
  for (const auto& [key, value] : values) args.set(key, value, line++);
  return args;
}

TensorType f32(Shape shape) { return {std::move(shape), DType::float32}; }
TensorType i32(Shape shape) { return {std::move(shape), DType::int32}; }

float* values(Tensor& t) { return t.host_data<float>(); }
const float* values(const Tensor& t) {
  Tensor shared = t;
  return shared.host_data<float>();
}

libpipe::Args attention_args(std::int64_t kv_heads = kKvHeads, double theta = 10000.0) {
  return make_args({{"dim", I(kC)}, {"heads", I(kHeads)}, {"kv_heads", I(kv_heads)}, {"rope_theta", F(theta)}});
}
libpipe::Args mlp_args() { return make_args({{"dim", I(kC)}, {"hidden", I(kHidden)}}); }
libpipe::Args block_args() {
  return make_args({{"dim", I(kC)}, {"heads", I(kHeads)}, {"kv_heads", I(kKvHeads)}, {"hidden", I(kHidden)}});
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

Tensor random(const Shape& shape, libpipe::Rng& rng, float stddev = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::float32);
  libpipe::fill_normal(t, rng, stddev);
  return t;
}

Tensor random_tokens(const Shape& shape, std::int64_t vocab, libpipe::Rng& rng) {
  Tensor t = Tensor::empty(shape, DType::int32);
  auto* p = t.host_data<std::int32_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<std::int32_t>(rng.next_u64() % vocab);
  if (t.numel() >= 4) p[3] = p[0];
  return t;
}

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

// Analytic gradient against central differences of `objective` at the chosen coordinates of `targets`.
void check_gradient(const std::string& name, std::vector<Tensor> targets, const Tensor& analytic,
                    const std::function<double()>& objective, std::vector<std::int64_t> indices = {}) {
  if (indices.empty())
    for (std::int64_t i = 0; i < analytic.numel(); ++i) indices.push_back(i);
  const float* a = values(analytic);
  double worst = 0, worst_ratio = 0;
  std::int64_t failures = 0;
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
    worst = std::max(worst, diff);
    worst_ratio = std::max(worst_ratio, diff / allowed);
    if (diff > allowed && failures++ == 0)
      first_failure =
          "[" + std::to_string(i) + "] analytic " + std::to_string(a[i]) + ", numeric " + std::to_string(numeric);
  }
  std::cout << "  " << name << ": " << indices.size() << " coordinates, largest |analytic - numeric| " << worst
            << ", " << worst_ratio << " of the tolerance\n";
  BOOST_CHECK_MESSAGE(failures == 0, name << ": " << failures << " of " << indices.size()
                                          << " coordinates outside the tolerance, first " << first_failure);
}

// L = sum(y * R): dx through backward_input and every parameter gradient through backward_weight.
void check_layer(const std::string& title, Layer& layer, Tensor x, libpipe::Rng& rng) {
  std::cout << title << "\n";
  LayerContext ctx;
  const Tensor y = layer.forward(ctx, x);
  const Tensor r = random(y.shape(), rng);
  libpipe::zero_grads(layer);
  const Tensor dx = layer.backward_input(ctx, r);
  layer.backward_weight(ctx, r);
  auto objective = [&] {
    LayerContext c;
    return dot(layer.forward(c, x), r);
  };
  if (x.dtype() == DType::float32) {
    BOOST_REQUIRE(dx.defined());
    BOOST_TEST(libpipe::shape_str(dx.shape()) == libpipe::shape_str(x.shape()));
    check_gradient(title + " dx", {x}, dx, objective);
  }
  for (auto& p : layer.parameters()) check_gradient(title + " " + p.spec.name, {p.value}, p.grad, objective);
}

struct Pass {
  Tensor y, dx;
  std::map<std::string, Tensor> grads;
};

Pass run_pass(Layer& layer, const Tensor& x, const Tensor& r) {
  LayerContext ctx;
  Pass pass;
  pass.y = layer.forward(ctx, x);
  libpipe::zero_grads(layer);
  pass.dx = layer.backward_input(ctx, r);
  layer.backward_weight(ctx, r);
  for (auto& p : layer.parameters()) pass.grads[p.spec.name] = copy(p.grad);
  return pass;
}

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

// Sets a layer's parameter to `value` (same shape).
void assign(Layer& layer, const std::string& name, const Tensor& value) {
  Tensor p = param(layer, name);
  libpipe::ops::fill(p, 0.0f);
  libpipe::ops::accumulate(p, value);
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const libpipe::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ---- each layer type against finite differences

BOOST_AUTO_TEST_CASE(rms_norm_gradients) {
  libpipe::Rng rng(1);
  auto layer = make("RMSNorm", {}, f32({kT, kC}));
  randomize(*layer, rng);
  check_layer("RMSNorm", *layer, random({kB, kT, kC}, rng), rng);
}

BOOST_AUTO_TEST_CASE(llama_attention_gradients) {
  libpipe::Rng rng(2);
  for (std::int64_t kv : {kHeads, kKvHeads, std::int64_t{1}}) {
    auto layer = make("LlamaAttention", attention_args(kv, 10.0), f32({kT, kC}));  // theta 10: large angles
    randomize(*layer, rng);
    check_layer("LlamaAttention kv_heads=" + std::to_string(kv), *layer, random({kB, kT, kC}, rng), rng);
  }
}

BOOST_AUTO_TEST_CASE(swiglu_gradients) {
  libpipe::Rng rng(3);
  auto layer = make("SwiGLU", mlp_args(), f32({kT, kC}));
  randomize(*layer, rng);
  check_layer("SwiGLU", *layer, random({kB, kT, kC}, rng), rng);
}

BOOST_AUTO_TEST_CASE(llama_block_gradients) {
  libpipe::Rng rng(4);
  auto layer = make("LlamaBlock", block_args(), f32({kT, kC}));
  randomize(*layer, rng);
  check_layer("LlamaBlock", *layer, random({kB, kT, kC}, rng), rng);
}

BOOST_AUTO_TEST_CASE(embedding_without_positions) {
  libpipe::Rng rng(5);
  auto layer = make("Embedding", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}}), i32({kT}));
  BOOST_TEST(layer->parameters().size() == 1u);  // wte only
  randomize(*layer, rng);
  const Tensor tokens = random_tokens({kB, kT}, kVocab, rng);
  check_layer("Embedding without positions", *layer, tokens, rng);
  // y[b, t] is exactly wte[token[b, t]].
  LayerContext ctx;
  const Tensor y = layer->forward(ctx, tokens);
  const Tensor wte = param(*layer, "wte");
  const std::int32_t* ids = Tensor(tokens).host_data<std::int32_t>();
  for (std::int64_t r = 0; r < kB * kT; ++r)
    for (std::int64_t c = 0; c < kC; ++c) BOOST_TEST(values(y)[r * kC + c] == values(wte)[ids[r] * kC + c]);
  // Any length: no position table bounds it.
  BOOST_TEST(registry().get("Embedding").describe(make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}}), i32({4096}))
                 .output.shape[0] == 4096);
}

// ---- what schedules rely on

struct LayerCase {
  std::string type;
  libpipe::Args args;
};

std::vector<LayerCase> cases() {
  return {{"RMSNorm", {}}, {"LlamaAttention", attention_args()}, {"SwiGLU", mlp_args()}, {"LlamaBlock", block_args()}};
}

BOOST_AUTO_TEST_CASE(backward_weight_accumulates_and_contexts_are_independent) {
  libpipe::Rng rng(6);
  for (const auto& c : cases()) {
    BOOST_TEST_CONTEXT(c.type) {
      auto layer = make(c.type, c.args, f32({kT, kC}));
      randomize(*layer, rng);
      const Tensor x1 = random({kB, kT, kC}, rng), x2 = random({kB, kT, kC}, rng);
      const Tensor r1 = random({kB, kT, kC}, rng), r2 = random({kB, kT, kC}, rng);
      const Pass p1 = run_pass(*layer, x1, r1);
      const Pass p2 = run_pass(*layer, x2, r2);

      // F1 F2 B2 B1 W2 W1, as a zero-bubble schedule interleaves them.
      LayerContext c1, c2;
      check_close("y1", layer->forward(c1, x1), p1.y);
      check_close("y2", layer->forward(c2, x2), p2.y);
      check_close("dx2", layer->backward_input(c2, r2), p2.dx);
      check_close("dx1", layer->backward_input(c1, r1), p1.dx);
      libpipe::zero_grads(*layer);
      layer->backward_weight(c2, r2);
      for (auto& p : layer->parameters())
        check_close(p.spec.name + " of micro-batch 2", p.grad, p2.grads.at(p.spec.name));
      libpipe::zero_grads(*layer);
      layer->backward_weight(c1, r1);
      for (auto& p : layer->parameters()) {
        check_close(p.spec.name + " of micro-batch 1", p.grad, p1.grads.at(p.spec.name));
        BOOST_TEST(libpipe::ops::sum_squares(p.grad) > 0.0, p.spec.name << " has a zero gradient");
      }
      // A second backward_weight adds the same again.
      layer->backward_weight(c1, r1);
      for (auto& p : layer->parameters()) {
        Tensor twice = copy(p1.grads.at(p.spec.name));
        libpipe::ops::scale(twice, 2.0f);
        check_close(p.spec.name + " after two backward_weight", p.grad, twice);
      }
    }
  }
}

// The block is exactly RMSNorm, LlamaAttention, residual, RMSNorm, SwiGLU, residual run as separate layers with
// its weights.
BOOST_AUTO_TEST_CASE(llama_block_equals_composition) {
  libpipe::Rng rng(7);
  auto block = make("LlamaBlock", block_args(), f32({kT, kC}));
  randomize(*block, rng);
  auto norm1 = make("RMSNorm", {}, f32({kT, kC}));
  auto attn = make("LlamaAttention", attention_args(), f32({kT, kC}));
  auto norm2 = make("RMSNorm", {}, f32({kT, kC}));
  auto mlp = make("SwiGLU", mlp_args(), f32({kT, kC}));
  const std::vector<std::pair<std::string, Layer*>> parts = {
      {"norm1.", norm1.get()}, {"attn.", attn.get()}, {"norm2.", norm2.get()}, {"mlp.", mlp.get()}};
  std::size_t names = 0;
  for (const auto& [prefix, part] : parts)
    for (auto& p : part->parameters()) {
      assign(*part, p.spec.name, param(*block, prefix + p.spec.name));
      ++names;
    }
  BOOST_TEST(names == block->parameters().size());

  const Tensor x = random({kB, kT, kC}, rng);
  const Tensor r = random({kB, kT, kC}, rng);
  const Pass whole = run_pass(*block, x, r);

  for (const auto& part : parts) libpipe::zero_grads(*part.second);
  LayerContext c[4];
  const Tensor h = libpipe::ops::add(x, attn->forward(c[1], norm1->forward(c[0], x)));
  const Tensor y = libpipe::ops::add(h, mlp->forward(c[3], norm2->forward(c[2], h)));
  check_close("y", y, whole.y);

  const Tensor dn2 = mlp->backward_input(c[3], r);
  Tensor dh = norm2->backward_input(c[2], dn2);
  libpipe::ops::accumulate(dh, r);
  const Tensor dn1 = attn->backward_input(c[1], dh);
  Tensor dx = norm1->backward_input(c[0], dn1);
  libpipe::ops::accumulate(dx, dh);
  check_close("dx", dx, whole.dx);

  mlp->backward_weight(c[3], r);
  norm2->backward_weight(c[2], dn2);
  attn->backward_weight(c[1], dh);
  norm1->backward_weight(c[0], dn1);
  for (const auto& [prefix, part] : parts)
    for (auto& p : part->parameters()) check_close(prefix + p.spec.name, p.grad, whole.grads.at(prefix + p.spec.name));
}

// Grouped key/value heads are shared heads: with every k and v head duplicated for its group, full multi-head
// attention computes the same, and the shared heads' gradients are the sums of the duplicates'.
BOOST_AUTO_TEST_CASE(grouped_heads_are_repeated_heads) {
  libpipe::Rng rng(8);
  const std::int64_t D = kC / kHeads, group = kHeads / kKvHeads;
  auto grouped = make("LlamaAttention", attention_args(kKvHeads), f32({kT, kC}));
  auto full = make("LlamaAttention", attention_args(kHeads), f32({kT, kC}));
  randomize(*grouped, rng);
  // full's qkv rows: q as grouped's; k and v head h = grouped's head h / group.
  const Tensor wg = param(*grouped, "qkv.weight");
  Tensor wf = param(*full, "qkv.weight");
  const float* g = values(wg);
  float* f = values(wf);
  auto row = [&](float* dst, const float* src) { std::copy(src, src + kC, dst); };
  for (std::int64_t h = 0; h < kHeads; ++h)
    for (std::int64_t d = 0; d < D; ++d) {
      row(f + (h * D + d) * kC, g + (h * D + d) * kC);
      row(f + ((kHeads + h) * D + d) * kC, g + ((kHeads + h / group) * D + d) * kC);
      row(f + ((2 * kHeads + h) * D + d) * kC, g + ((kHeads + kKvHeads + h / group) * D + d) * kC);
    }
  assign(*full, "proj.weight", param(*grouped, "proj.weight"));

  const Tensor x = random({kB, kT, kC}, rng), r = random({kB, kT, kC}, rng);
  const Pass pg = run_pass(*grouped, x, r), pf = run_pass(*full, x, r);
  check_close("y", pg.y, pf.y);
  check_close("dx", pg.dx, pf.dx);
  check_close("proj.weight grad", pg.grads.at("proj.weight"), pf.grads.at("proj.weight"));
  const float* dg = values(pg.grads.at("qkv.weight"));
  const float* df = values(pf.grads.at("qkv.weight"));
  double worst = 0;
  for (std::int64_t g_head = 0; g_head < 2 * kKvHeads; ++g_head)  // k heads, then v heads
    for (std::int64_t d = 0; d < D; ++d)
      for (std::int64_t c = 0; c < kC; ++c) {
        const bool is_v = g_head >= kKvHeads;
        const std::int64_t kv = is_v ? g_head - kKvHeads : g_head;
        double sum = 0;
        for (std::int64_t h = kv * group; h < (kv + 1) * group; ++h)
          sum += df[(((is_v ? 2 : 1) * kHeads + h) * D + d) * kC + c];
        worst = std::max(worst, std::abs(sum - dg[((kHeads + g_head) * D + d) * kC + c]));
      }
  BOOST_TEST(worst < 1e-5);
}

// rotary_gqa against the formula Hugging Face's Llama computes: q' = q cos + rotate_half(q) sin, rotate_half(q) =
// [-q_hi, q_lo], angle t theta^(-2i/D) for the pair (i, i + D/2); v copied; and its backward as the transpose.
BOOST_AUTO_TEST_CASE(rotary_is_hugging_faces_rotate_half) {
  libpipe::Rng rng(9);
  const std::int64_t B = 2, T = 7, H = 4, KV = 2, D = 6, half = D / 2, in = (H + 2 * KV) * D;
  const float theta = 500000.0f;
  const Tensor x = random({B, T, in}, rng);
  const Tensor qkv = libpipe::ops::rotary_gqa(x, H, KV, theta);
  BOOST_TEST_REQUIRE(libpipe::shape_str(qkv.shape()) == libpipe::shape_str({B, T, 3 * H * D}));
  const float* xs = values(x);
  const float* ys = values(qkv);
  double worst = 0;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t part = 0; part < 3; ++part) {
          const std::int64_t src = part == 0 ? h : part == 1 ? H + h / (H / KV) : H + KV + h / (H / KV);
          const float* in_head = xs + (b * T + t) * in + src * D;
          const float* out_head = ys + (b * T + t) * 3 * H * D + (part * H + h) * D;
          for (std::int64_t d = 0; d < D; ++d) {
            const std::int64_t i = d % half;
            const double angle = t * std::pow(double(theta), -2.0 * i / D);
            const double rotate_half = d < half ? -in_head[d + half] : in_head[d - half];
            const double want = part == 2 ? in_head[d] : in_head[d] * std::cos(angle) + rotate_half * std::sin(angle);
            worst = std::max(worst, std::abs(want - out_head[d]));
          }
        }
  BOOST_TEST(worst < 2e-6);
  // Backward is the transpose: <rotary(x), g> = <x, rotary_backward(g)>.
  const Tensor g = random({B, T, 3 * H * D}, rng);
  const Tensor dx = libpipe::ops::rotary_gqa_backward(g, H, KV, theta);
  BOOST_TEST(dot(qkv, g) == dot(x, dx), boost::test_tools::tolerance(1e-5));

  // Attention sees relative positions: with the same q and k at every position, the score of query position t
  // against key position s depends on t - s only.
  const Tensor qk = random({1, 1, 3 * D}, rng);
  Tensor row = Tensor::empty({1, T, 3 * D}, DType::float32);
  for (std::int64_t t = 0; t < T; ++t) std::copy(values(qk), values(qk) + 3 * D, values(row) + t * 3 * D);
  const Tensor rotated = libpipe::ops::rotary_gqa(row, 1, 1, 10.0f);
  auto score = [&](std::int64_t t, std::int64_t s) {
    double sum = 0;
    for (std::int64_t d = 0; d < D; ++d)
      sum += double(values(rotated)[t * 3 * D + d]) * values(rotated)[s * 3 * D + D + d];
    return sum;
  };
  for (std::int64_t shift = 1; shift + 2 < T; ++shift) {
    BOOST_TEST(score(2 + shift, shift) == score(2, 0), boost::test_tools::tolerance(1e-5));
    BOOST_TEST(score(shift, shift) == score(0, 0), boost::test_tools::tolerance(1e-5));
  }
  BOOST_TEST(std::abs(score(2, 0) - score(0, 0)) > 1e-3);  // and the angle matters
}

// An output position does not depend on later inputs.
BOOST_AUTO_TEST_CASE(attention_is_causal) {
  libpipe::Rng rng(10);
  auto layer = make("LlamaAttention", attention_args(), f32({kT, kC}));
  randomize(*layer, rng);
  Tensor x = random({kB, kT, kC}, rng);
  LayerContext a, b;
  const Tensor y = copy(layer->forward(a, x));
  for (std::int64_t c = 0; c < kC; ++c) values(x)[(kT - 1) * kC + c] += 1.0f;
  const Tensor z = layer->forward(b, x);
  double before_last = 0, last = 0;
  for (std::int64_t t = 0; t < kT; ++t)
    for (std::int64_t c = 0; c < kC; ++c) {
      const double d = std::abs(values(y)[t * kC + c] - values(z)[t * kC + c]);
      (t == kT - 1 ? last : before_last) = std::max(t == kT - 1 ? last : before_last, d);
    }
  BOOST_TEST(before_last == 0.0);
  BOOST_TEST(last > 0.0);
}

// A Llama stack: Embedding (no positions), two blocks, RMSNorm, an untied LMHead, SoftmaxCrossEntropy. At the
// shipped init the loss is ln(vocab); with larger weights sampled coordinates of every parameter match finite
// differences of the summed token loss.
BOOST_AUTO_TEST_CASE(llama_stack) {
  libpipe::Rng rng(11);
  auto args = block_args();
  args.set("n_layer", I(2), 99);
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(make("Embedding", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}}), i32({kT}), 0));
  layers.push_back(make("LlamaBlock", args, f32({kT, kC}), 1));
  layers.push_back(make("LlamaBlock", args, f32({kT, kC}), 2));
  layers.push_back(make("RMSNorm", {}, f32({kT, kC}), 3));
  layers.push_back(make("LMHead", make_args({{"vocab", I(kVocab)}, {"dim", I(kC)}}), f32({kT, kC}), 4));
  layers.push_back(make("SoftmaxCrossEntropy", {}, f32({kT, kVocab}), 5));
  const Tensor tokens = random_tokens({kB, kT}, kVocab, rng);
  const Tensor labels = random_tokens({kB, kT}, kVocab, rng);
  auto forward = [&](std::vector<LayerContext>& ctx) {
    ctx.assign(layers.size(), LayerContext{});
    ctx.back().labels = labels;
    Tensor a = tokens;
    for (std::size_t i = 0; i < layers.size(); ++i) a = layers[i]->forward(ctx[i], a);
    return a;
  };
  std::vector<LayerContext> ctx;
  const Tensor initial = forward(ctx);
  const double mean = (double(values(initial)[0]) + values(initial)[1]) / kB;
  std::cout << "llama stack: mean loss at init " << mean << ", ln(vocab) " << std::log(double(kVocab)) << "\n";
  BOOST_TEST(std::abs(mean - std::log(double(kVocab))) < 0.05);

  for (auto& layer : layers) randomize(*layer, rng);
  auto objective = [&] {
    std::vector<LayerContext> c;
    const Tensor loss = forward(c);
    return kT * (double(values(loss)[0]) + values(loss)[1]);
  };
  forward(ctx);
  Tensor d = Tensor::empty({kB}, DType::float32);
  libpipe::ops::fill(d, float(kT));
  for (std::size_t i = layers.size(); i-- > 0;) {
    libpipe::zero_grads(*layers[i]);
    const Tensor dx = layers[i]->backward_input(ctx[i], d);
    layers[i]->backward_weight(ctx[i], d);
    d = dx;
  }
  BOOST_TEST(!d.defined());
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (auto& p : layers[i]->parameters()) {
      std::vector<std::int64_t> indices;
      for (int k = 0; k < 6; ++k) indices.push_back(static_cast<std::int64_t>(rng.next_u64() % p.value.numel()));
      check_gradient("llama stack layer " + std::to_string(i) + " " + p.spec.name, {p.value}, p.grad, objective,
                     indices);
    }
}

// ---- descriptions

BOOST_AUTO_TEST_CASE(descriptions_name_every_parameter) {
  const std::int64_t t = 64, c = 128, h = 4, kv = 2, d = c / h, f = 352;
  auto names = [](const libpipe::LayerDescription& desc) {
    std::vector<std::string> n;
    for (const auto& p : desc.params) n.push_back(libpipe::shape_str(p.shape) + " " + p.name);
    return n;
  };
  const auto args = make_args({{"dim", I(c)}, {"heads", I(h)}, {"kv_heads", I(kv)}, {"hidden", I(f)}});
  const auto block = registry().get("LlamaBlock").describe(args, f32({t, c}));
  const auto qkv_rows = std::to_string((h + 2 * kv) * d);
  BOOST_TEST(names(block) ==
                 (std::vector<std::string>{"[128] norm1.weight", "[" + qkv_rows + ", 128] attn.qkv.weight",
                                           "[128, 128] attn.proj.weight", "[128] norm2.weight",
                                           "[704, 128] mlp.gate_up.weight", "[128, 352] mlp.down.weight"}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::type_str(block.output) == libpipe::type_str(f32({t, c})));
  BOOST_TEST(block.gemms.size() > 0u);

  // The block's figures are those of its parts plus two residual adds (2 FLOPs per element each).
  const TensorType x = f32({t, c});
  const std::vector<libpipe::LayerDescription> parts = {
      registry().get("RMSNorm").describe({}, x), registry().get("LlamaAttention").describe(args, x),
      registry().get("RMSNorm").describe({}, x), registry().get("SwiGLU").describe(args, x)};
  std::int64_t flops = 2 * 2 * t * c, bytes = 0, count = 0;
  std::size_t gemms = 0;
  for (const auto& p : parts) {
    flops += p.flops;
    bytes += p.activation_bytes;
    count += p.param_count();
    gemms += p.gemms.size();
  }
  BOOST_TEST(block.flops == flops);
  BOOST_TEST(block.activation_bytes == bytes);
  BOOST_TEST(block.param_count() == count);
  BOOST_TEST(block.gemms.size() == gemms);
  BOOST_TEST(count == 2 * c + (h + 2 * kv) * d * c + c * c + 3 * c * f);
}

BOOST_AUTO_TEST_CASE(shipped_models_have_their_stated_counts) {
  const auto& tiny = pipe_test::shipped_model("llama-tiny");
  BOOST_TEST(tiny.params == 803968);  // as llama-tiny.toml says, the untied head counted
  BOOST_TEST(tiny.layers.size() == 8u);
  BOOST_TEST(tiny.ties.empty());
  const auto& big = pipe_test::shipped_model("llama-3.2-1b");
  BOOST_TEST(big.params == 1235814400);  // the published 1.24B, the tied embedding counted once
  BOOST_TEST(big.layers.size() == 20u);  // embedding, 16 blocks, final norm, head, loss
  BOOST_TEST(big.ties.size() == 1u);
}

// ---- errors: one line, naming the argument, and in a model file the layer index and type

BOOST_AUTO_TEST_CASE(bad_arguments_are_one_line_errors) {
  auto describe = [](const std::string& type, const libpipe::Args& args) {
    return error_of([&] { registry().get(type).describe(args, f32({kT, 12})); });
  };
  const std::string kv = describe("LlamaAttention", make_args({{"dim", I(12)}, {"heads", I(4)}, {"kv_heads", I(3)}}));
  BOOST_TEST(kv.find("kv_heads = 3 does not divide heads = 4") != std::string::npos, kv);
  const std::string odd = describe("LlamaBlock", make_args({{"dim", I(12)}, {"heads", I(4)}, {"hidden", I(8)}}));
  BOOST_TEST(odd.find("head dimension dim / heads = 3 is odd") != std::string::npos, odd);
  const std::string theta =
      describe("LlamaAttention", make_args({{"dim", I(12)}, {"heads", I(2)}, {"rope_theta", F(-1.0)}}));
  BOOST_TEST(theta.find("rope_theta") != std::string::npos, theta);
  const std::string eps = describe("RMSNorm", make_args({{"eps", F(0.0)}}));
  BOOST_TEST(eps.find("'eps' must be positive") != std::string::npos, eps);
  for (const auto& m : {kv, odd, theta, eps}) BOOST_TEST(m.find('\n') == std::string::npos, m);

  const std::string text = R"([model]
name = "m"
input_shape = [8]
input_dtype = "int32"

[[layer]]
type = "Embedding"
vocab = 16
dim = 12

[[layer]]
type = "LlamaBlock"
dim = 12
heads = 4
kv_heads = 3
hidden = 8
)";
  const std::string message =
      error_of([&] { libpipe::describe_model(libpipe::parse_model(text, "m.toml"), registry()); });
  BOOST_TEST(message.find("layer 1 (LlamaBlock)") != std::string::npos, message);
  BOOST_TEST(message.find("kv_heads = 3") != std::string::npos, message);
  BOOST_TEST(message.find('\n') == std::string::npos, message);
}

// The ops' own checks: a wrong shape is one line naming the op and the shapes.
BOOST_AUTO_TEST_CASE(op_errors_name_the_op_and_shapes) {
  libpipe::Rng rng(12);
  namespace ops = libpipe::ops;
  auto check = [](const std::function<void()>& call, std::initializer_list<std::string> parts) {
    const std::string message = error_of(call);
    BOOST_TEST_REQUIRE(!message.empty(), "no error for " << *parts.begin());
    for (const auto& part : parts) BOOST_TEST(message.find(part) != std::string::npos, message);
    BOOST_TEST(message.find('\n') == std::string::npos, message);
  };
  check([&] { ops::rotary_gqa(random({2, 5, 24}, rng), 4, 2, 1e4f); },
        {"rotary_gqa", "float32[2, 5, 24]", "even head dimension"});  // D = 24 / 8 = 3
  check([&] { ops::rotary_gqa(random({2, 5, 32}, rng), 4, 3, 1e4f); }, {"rotary_gqa", "multiple of kv_heads 3"});
  check([&] { ops::rotary_gqa(random({2, 5, 32}, rng), 4, 2, 0.0f); }, {"rotary_gqa", "theta"});
  check([&] { ops::rotary_gqa_backward(random({2, 5, 20}, rng), 4, 2, 1e4f); },
        {"rotary_gqa_backward", "float32[2, 5, 20]"});
  check([&] { ops::swiglu(random({2, 5}, rng)); }, {"swiglu", "float32[2, 5]", "[..., 2F]"});
  check([&] { ops::swiglu_backward(random({2, 6}, rng), random({2, 2}, rng)); },
        {"swiglu_backward", "float32[2, 2]", "[2, 3]"});
  Tensor rstd;
  check([&] { ops::rms_norm(random({2, 8}, rng), random({7}, rng), 1e-5f, rstd); },
        {"rms_norm", "weight", "float32[7]", "[8]"});
  check([&] { ops::rms_norm(random({2, 8}, rng), random({8}, rng), 0.0f, rstd); }, {"rms_norm", "eps"});
}
