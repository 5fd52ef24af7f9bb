// Unit tests of the shipped layer plugins (core and transformer) at the level
// of describe() and create(): output types, parameter specs, cost figures,
// allocation, deterministic GPT-2 initialisation, and the exact errors bad
// inputs and arguments produce. The plugins are loaded the way the apps load
// them (dlopen from the built-in plugin directory), so this also proves they
// register every type.

#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE layers
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pipe/args.hpp"
#include "pipe/error.hpp"
#include "pipe/init.hpp"
#include "pipe/layer.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"
#include "pipe/shape.hpp"
#include "pipe/tensor.hpp"

namespace {

using libpipe::DType;
using libpipe::Shape;
using libpipe::TensorType;

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
libpipe::ArgValue F(double v) { return v; }
libpipe::ArgValue B(bool v) { return v; }
libpipe::ArgValue S(const char* v) { return std::string(v); }

libpipe::Args make_args(std::initializer_list<std::pair<const char*, libpipe::ArgValue>> values) {
  libpipe::Args args;
  int line = 1;
  for (const auto& [key, value] : values) args.set(key, value, line++);
  return args;
}

TensorType f32(Shape shape) { return {std::move(shape), DType::float32}; }
TensorType i32(Shape shape) { return {std::move(shape), DType::int32}; }

libpipe::LayerDescription describe(const std::string& type, const libpipe::Args& args,
                                   const TensorType& input) {
  return registry().get(type).describe(args, input);
}

std::vector<std::string> param_names(const libpipe::LayerDescription& d) {
  std::vector<std::string> names;
  for (const auto& p : d.params) names.push_back(p.name);
  return names;
}

const libpipe::ParamSpec& spec(const libpipe::LayerDescription& d, const std::string& name) {
  for (const auto& p : d.params)
    if (p.name == name) return p;
  throw std::runtime_error("no parameter " + name);
}

// describe() and create() must both refuse `input` with exactly this expected type.
void check_shape_error(const std::string& type, const libpipe::Args& args, const TensorType& input,
                       const std::string& expected) {
  BOOST_TEST_CONTEXT(type << " given " << libpipe::type_str(input)) {
    try {
      describe(type, args, input);
      BOOST_ERROR("describe accepted the input");
    } catch (const libpipe::ShapeError& e) {
      BOOST_TEST(e.expected() == expected);
      BOOST_TEST(std::string(e.what()) == "expects input " + expected);
    }
    const std::size_t before = libpipe::allocated_bytes(libpipe::Device::cpu);
    BOOST_CHECK_THROW(registry().get(type).create(args, input, {}), libpipe::ShapeError);
    BOOST_TEST(libpipe::allocated_bytes(libpipe::Device::cpu) == before);
  }
}

// describe() must refuse `args` with an ArgError about `key`, whose message names it.
void check_arg_error(const std::string& type, const libpipe::Args& args, const TensorType& input,
                     const std::string& key) {
  BOOST_TEST_CONTEXT(type << ", argument " << key) {
    try {
      describe(type, args, input);
      BOOST_ERROR("describe accepted the arguments");
    } catch (const libpipe::ArgError& e) {
      BOOST_TEST(e.key() == key);
      BOOST_TEST(std::string(e.what()).find(key) != std::string::npos, "message: " << e.what());
    }
  }
}

// Creates a layer and checks it holds exactly what describe() announced, and
// that exactly those bytes were allocated.
std::unique_ptr<libpipe::Layer> check_create(const std::string& type, const libpipe::Args& args,
                                             const TensorType& input,
                                             const libpipe::CreateContext& context = {}) {
  const libpipe::LayerDescription d = describe(type, args, input);
  const std::size_t before = libpipe::allocated_bytes(libpipe::Device::cpu);
  auto layer = registry().get(type).create(args, input, context);
  const std::size_t grown = libpipe::allocated_bytes(libpipe::Device::cpu) - before;
  BOOST_TEST_CONTEXT(type) {
    auto& params = layer->parameters();
    BOOST_TEST_REQUIRE(params.size() == d.params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      BOOST_TEST(params[i].spec.name == d.params[i].name);
      BOOST_TEST(libpipe::shape_str(params[i].spec.shape) == libpipe::shape_str(d.params[i].shape));
      BOOST_TEST(params[i].spec.tieable == d.params[i].tieable);
      BOOST_TEST(libpipe::shape_str(params[i].value.shape()) ==
                 libpipe::shape_str(d.params[i].shape));
      BOOST_CHECK(params[i].value.dtype() == DType::float32);
      BOOST_CHECK(params[i].value.device() == libpipe::Device::cpu);
    }
    const auto expected_bytes = static_cast<std::size_t>(d.param_count()) * 4;
    BOOST_TEST(layer->parameter_bytes() == expected_bytes);
    BOOST_TEST(grown == expected_bytes);
  }
  return layer;
}

libpipe::Tensor& param(libpipe::Layer& layer, const std::string& name) {
  for (auto& p : layer.parameters())
    if (p.spec.name == name) return p.value;
  throw std::runtime_error("no parameter " + name);
}

struct Stats {
  double mean, std, min, max;
};

Stats stats(libpipe::Tensor& t) {
  const float* x = t.host_data<float>();
  const std::int64_t n = t.numel();
  double sum = 0, sq = 0, lo = x[0], hi = x[0];
  for (std::int64_t i = 0; i < n; ++i) {
    sum += x[i];
    sq += double(x[i]) * x[i];
    lo = std::min(lo, double(x[i]));
    hi = std::max(hi, double(x[i]));
  }
  const double mean = sum / n;
  return {mean, std::sqrt(sq / n - mean * mean), lo, hi};
}

void check_constant(libpipe::Layer& layer, const std::string& name, float value) {
  const Stats s = stats(param(layer, name));
  BOOST_TEST_CONTEXT(name) {
    BOOST_TEST(s.min == value);
    BOOST_TEST(s.max == value);
  }
}

// Samples of N(0, stddev): mean and std within a few standard errors.
void check_normal(libpipe::Layer& layer, const std::string& name, double stddev) {
  libpipe::Tensor& t = param(layer, name);
  const Stats s = stats(t);
  const double n = double(t.numel());
  BOOST_TEST_CONTEXT(name << ": mean " << s.mean << ", std " << s.std) {
    BOOST_TEST(std::abs(s.mean) < 5 * stddev / std::sqrt(n));
    BOOST_TEST(std::abs(s.std - stddev) < 5 * stddev / std::sqrt(2 * n));
  }
}

bool same_values(libpipe::Layer& a, libpipe::Layer& b) {
  auto& pa = a.parameters();
  auto& pb = b.parameters();
  if (pa.size() != pb.size()) return false;
  for (std::size_t i = 0; i < pa.size(); ++i)
    if (pa[i].value.bytes() != pb[i].value.bytes() ||
        std::memcmp(pa[i].value.data(), pb[i].value.data(), pa[i].value.bytes()) != 0)
      return false;
  return true;
}

libpipe::Args linear_args(std::int64_t in, std::int64_t out) {
  return make_args({{"in_features", I(in)}, {"out_features", I(out)}});
}
libpipe::Args vocab_args(std::int64_t vocab, std::int64_t dim) {
  return make_args({{"vocab", I(vocab)}, {"dim", I(dim)}});
}
libpipe::Args embedding_args(std::int64_t vocab, std::int64_t dim, std::int64_t positions) {
  return make_args({{"vocab", I(vocab)}, {"dim", I(dim)}, {"positions", I(positions)}});
}
libpipe::Args attention_args(std::int64_t dim, std::int64_t heads) {
  return make_args({{"dim", I(dim)}, {"heads", I(heads)}});
}

}  // namespace

BOOST_AUTO_TEST_CASE(plugins_register_every_type) {
  for (const char* type :
       {"Linear", "ReLU", "GELU", "LayerNorm", "Embedding", "LMHead", "SoftmaxCrossEntropy",
        "MSELoss", "CausalSelfAttention", "TransformerBlock"}) {
    BOOST_TEST_CONTEXT(type) {
      const libpipe::LayerFactory* factory = registry().find(type);
      BOOST_TEST_REQUIRE(factory != nullptr);
      const std::string summary = factory->summary();
      BOOST_TEST(summary.rfind(std::string(type) + "(", 0) == 0, summary);
      BOOST_TEST(summary.find('\n') == std::string::npos);
    }
  }
}

BOOST_AUTO_TEST_CASE(linear_describe) {
  const auto d = describe("Linear", linear_args(512, 256), f32({3, 4, 512}));
  BOOST_TEST(libpipe::type_str(d.output) == "float32[3, 4, 256]");
  BOOST_TEST(param_names(d) == (std::vector<std::string>{"weight", "bias"}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::shape_str(spec(d, "weight").shape) == libpipe::shape_str(Shape{256, 512}));
  BOOST_TEST(libpipe::shape_str(spec(d, "bias").shape) == libpipe::shape_str(Shape{256}));
  BOOST_TEST(!spec(d, "weight").tieable);
  BOOST_TEST(d.param_count() == 512 * 256 + 256);
  BOOST_TEST(d.flops == 6 * 12 * 512 * 256);
  BOOST_TEST(d.activation_bytes == 12 * 512 * 4);

  const auto flat = describe("Linear", linear_args(784, 10), f32({784}));
  BOOST_TEST(libpipe::type_str(flat.output) == "float32[10]");

  auto no_bias = linear_args(512, 256);
  no_bias.set("bias", B(false));
  const auto nb = describe("Linear", no_bias, f32({512}));
  BOOST_TEST(param_names(nb) == (std::vector<std::string>{"weight"}),
             boost::test_tools::per_element());
  check_create("Linear", no_bias, f32({512}));
}

BOOST_AUTO_TEST_CASE(linear_errors) {
  const auto args = linear_args(512, 256);
  check_shape_error("Linear", args, f32({256}), "float32[*, 512]");
  check_shape_error("Linear", args, f32({512, 3}), "float32[*, 512]");
  check_shape_error("Linear", args, i32({512}), "float32[*, 512]");
  check_shape_error("Linear", args, f32({}), "float32[*, 512]");

  check_arg_error("Linear", make_args({{"out_features", I(256)}}), f32({512}), "in_features");
  check_arg_error("Linear", make_args({{"in_features", I(512)}}), f32({512}), "out_features");
  check_arg_error("Linear", make_args({{"in_features", I(512)}, {"out_features", S("wide")}}),
                  f32({512}), "out_features");
  check_arg_error("Linear", make_args({{"in_features", I(0)}, {"out_features", I(8)}}), f32({512}),
                  "in_features");
  check_arg_error("Linear",
                  make_args({{"in_features", I(512)}, {"out_features", I(8)}, {"bias", I(1)}}),
                  f32({512}), "bias");
}

BOOST_AUTO_TEST_CASE(linear_create_and_init) {
  auto layer = check_create("Linear", linear_args(1024, 1024), f32({1024}), {3, 42});
  check_normal(*layer, "weight", 0.02);
  check_constant(*layer, "bias", 0.0f);
}

BOOST_AUTO_TEST_CASE(activations) {
  for (const char* type : {"ReLU", "GELU"}) {
    BOOST_TEST_CONTEXT(type) {
      const auto d = describe(type, {}, f32({2, 3, 4}));
      BOOST_TEST(libpipe::type_str(d.output) == "float32[2, 3, 4]");
      BOOST_TEST(d.params.empty());
      BOOST_TEST(d.activation_bytes == 24 * 4);
      BOOST_TEST(libpipe::type_str(describe(type, {}, f32({})).output) ==
                 libpipe::type_str(f32({})));
      check_shape_error(type, {}, i32({8}), "float32[*]");
      check_create(type, {}, f32({16}));
    }
  }
  BOOST_TEST(describe("ReLU", {}, f32({2, 3, 4})).flops == 2 * 24);
  BOOST_TEST(describe("GELU", {}, f32({2, 3, 4})).flops == 10 * 24);
}

BOOST_AUTO_TEST_CASE(layer_norm) {
  const auto d = describe("LayerNorm", {}, f32({64, 128}));
  BOOST_TEST(libpipe::type_str(d.output) == libpipe::type_str(f32({64, 128})));
  BOOST_TEST(param_names(d) == (std::vector<std::string>{"weight", "bias"}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::shape_str(spec(d, "weight").shape) == libpipe::shape_str(Shape{128}));
  BOOST_TEST(libpipe::shape_str(spec(d, "bias").shape) == libpipe::shape_str(Shape{128}));
  BOOST_TEST(d.flops == 8 * 64 * 128);
  BOOST_TEST(d.activation_bytes == (64 * 128 + 2 * 64) * 4);

  BOOST_TEST(describe("LayerNorm", make_args({{"eps", F(1e-6)}}), f32({32})).param_count() == 64);
  BOOST_TEST(describe("LayerNorm", make_args({{"eps", I(1)}}), f32({32})).param_count() == 64);
  check_arg_error("LayerNorm", make_args({{"eps", F(-1.0)}}), f32({32}), "eps");
  check_arg_error("LayerNorm", make_args({{"eps", F(0.0)}}), f32({32}), "eps");
  check_arg_error("LayerNorm", make_args({{"eps", S("small")}}), f32({32}), "eps");
  check_shape_error("LayerNorm", {}, i32({64, 128}), "float32[*, C]");
  check_shape_error("LayerNorm", {}, f32({}), "float32[*, C]");

  auto layer = check_create("LayerNorm", {}, f32({64, 128}), {5, 1});
  check_constant(*layer, "weight", 1.0f);
  check_constant(*layer, "bias", 0.0f);
}

BOOST_AUTO_TEST_CASE(embedding) {
  const auto args = embedding_args(256, 128, 64);
  const auto d = describe("Embedding", args, i32({64}));
  BOOST_TEST(libpipe::type_str(d.output) == "float32[64, 128]");
  BOOST_TEST(param_names(d) == (std::vector<std::string>{"wte", "wpe"}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::shape_str(spec(d, "wte").shape) == libpipe::shape_str(Shape{256, 128}));
  BOOST_TEST(spec(d, "wte").tieable);
  BOOST_TEST(libpipe::shape_str(spec(d, "wpe").shape) == libpipe::shape_str(Shape{64, 128}));
  BOOST_TEST(!spec(d, "wpe").tieable);
  BOOST_TEST(d.flops == 3 * 64 * 128);
  BOOST_TEST(d.activation_bytes == 64 * 4);
  BOOST_TEST(libpipe::type_str(describe("Embedding", args, i32({16})).output) ==
             "float32[16, 128]");

  check_shape_error("Embedding", args, i32({65}), "int32[T <= 64]");
  check_shape_error("Embedding", args, f32({64}), "int32[T <= 64]");
  check_shape_error("Embedding", args, i32({2, 32}), "int32[T <= 64]");
  check_arg_error("Embedding", make_args({{"vocab", I(256)}, {"dim", I(128)}, {"positions", I(0)}}), i32({64}),
                  "positions");
  // Without positions: the token table alone, any length.
  const auto tokens_only = describe("Embedding", make_args({{"vocab", I(256)}, {"dim", I(128)}}), i32({4096}));
  BOOST_TEST(param_names(tokens_only) == (std::vector<std::string>{"wte"}), boost::test_tools::per_element());
  BOOST_TEST(libpipe::type_str(tokens_only.output) == "float32[4096, 128]");
  check_arg_error("Embedding",
                  make_args({{"vocab", F(256.0)}, {"dim", I(128)}, {"positions", I(64)}}),
                  i32({64}), "vocab");

  auto layer = check_create("Embedding", embedding_args(1024, 256, 256), i32({256}), {0, 7});
  check_normal(*layer, "wte", 0.02);
  check_normal(*layer, "wpe", 0.02);
}

BOOST_AUTO_TEST_CASE(lm_head) {
  const auto args = vocab_args(256, 128);
  const auto d = describe("LMHead", args, f32({64, 128}));
  BOOST_TEST(libpipe::type_str(d.output) == "float32[64, 256]");
  BOOST_TEST(param_names(d) == (std::vector<std::string>{"weight"}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::shape_str(spec(d, "weight").shape) == libpipe::shape_str(Shape{256, 128}));
  BOOST_TEST(spec(d, "weight").tieable);
  BOOST_TEST(d.flops == 6 * 64 * 128 * 256);
  BOOST_TEST(d.activation_bytes == 64 * 128 * 4);
  // The tied pair must agree on the shared tensor's shape.
  const auto embedding = describe("Embedding", embedding_args(256, 128, 64), i32({64}));
  BOOST_TEST(libpipe::shape_str(spec(embedding, "wte").shape) ==
             libpipe::shape_str(spec(d, "weight").shape));

  check_shape_error("LMHead", args, f32({64, 64}), "float32[T, 128]");
  check_shape_error("LMHead", args, f32({128}), "float32[T, 128]");
  check_shape_error("LMHead", args, i32({64, 128}), "float32[T, 128]");
  check_arg_error("LMHead", make_args({{"dim", I(128)}}), f32({64, 128}), "vocab");
  check_arg_error("LMHead", make_args({{"vocab", I(256)}, {"dim", I(-4)}}), f32({64, 128}), "dim");

  auto layer = check_create("LMHead", vocab_args(512, 256), f32({8, 256}), {2, 9});
  check_normal(*layer, "weight", 0.02);
}

BOOST_AUTO_TEST_CASE(losses) {
  const auto ce = describe("SoftmaxCrossEntropy", {}, f32({64, 256}));
  BOOST_TEST(libpipe::type_str(ce.output) == "float32[]");
  BOOST_TEST(ce.params.empty());
  BOOST_TEST(ce.flops == 6 * 64 * 256);
  BOOST_TEST(ce.activation_bytes == 64 * 256 * 4);
  BOOST_TEST(libpipe::type_str(describe("SoftmaxCrossEntropy", {}, f32({10})).output) ==
             "float32[]");
  check_shape_error("SoftmaxCrossEntropy", {}, i32({10}), "float32[*, V]");
  check_shape_error("SoftmaxCrossEntropy", {}, f32({}), "float32[*, V]");
  check_create("SoftmaxCrossEntropy", {}, f32({64, 256}));

  const auto mse = describe("MSELoss", {}, f32({4, 5}));
  BOOST_TEST(libpipe::type_str(mse.output) == "float32[]");
  BOOST_TEST(mse.params.empty());
  BOOST_TEST(mse.flops == 5 * 20);
  BOOST_TEST(mse.activation_bytes == 20 * 4);
  check_shape_error("MSELoss", {}, i32({4, 5}), "float32[*]");
  check_create("MSELoss", {}, f32({4, 5}));
}

BOOST_AUTO_TEST_CASE(attention_describe) {
  const std::int64_t t = 64, c = 128, h = 4;
  const auto d = describe("CausalSelfAttention", attention_args(c, h), f32({t, c}));
  BOOST_TEST(libpipe::type_str(d.output) == libpipe::type_str(f32({t, c})));
  BOOST_TEST(param_names(d) ==
                 (std::vector<std::string>{"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::shape_str(spec(d, "qkv.weight").shape) ==
             libpipe::shape_str(Shape{3 * c, c}));
  BOOST_TEST(libpipe::shape_str(spec(d, "qkv.bias").shape) == libpipe::shape_str(Shape{3 * c}));
  BOOST_TEST(libpipe::shape_str(spec(d, "proj.weight").shape) == libpipe::shape_str(Shape{c, c}));
  BOOST_TEST(libpipe::shape_str(spec(d, "proj.bias").shape) == libpipe::shape_str(Shape{c}));
  BOOST_TEST(d.param_count() == 4 * c * c + 4 * c);
  BOOST_TEST(d.flops == 6 * t * c * 3 * c + 6 * t * c * c + 3 * 2 * 2 * t * t * c + 8 * h * t * t);
  BOOST_TEST(d.activation_bytes == (5 * t * c + h * t * t) * 4);
}

BOOST_AUTO_TEST_CASE(attention_errors) {
  const auto args = attention_args(128, 4);
  check_shape_error("CausalSelfAttention", args, f32({64, 64}), "float32[T, 128]");
  check_shape_error("CausalSelfAttention", args, f32({128}), "float32[T, 128]");
  check_shape_error("CausalSelfAttention", args, f32({2, 64, 128}), "float32[T, 128]");
  check_shape_error("CausalSelfAttention", args, i32({64, 128}), "float32[T, 128]");
  check_arg_error("CausalSelfAttention", make_args({{"dim", I(128)}}), f32({64, 128}), "heads");
  check_arg_error("CausalSelfAttention",
                  make_args({{"dim", I(128)}, {"heads", I(4)}, {"n_layer", I(0)}}), f32({64, 128}),
                  "n_layer");

  for (const char* type : {"CausalSelfAttention", "TransformerBlock"}) {
    BOOST_TEST_CONTEXT(type) {
      try {
        describe(type, attention_args(128, 5), f32({64, 128}));
        BOOST_ERROR("heads = 5 accepted for dim = 128");
      } catch (const libpipe::Error& e) {
        const std::string message = e.what();
        BOOST_TEST(message.find("heads = 5") != std::string::npos, message);
        BOOST_TEST(message.find("dim = 128") != std::string::npos, message);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(attention_init) {
  auto args = attention_args(256, 4);
  auto standalone = check_create("CausalSelfAttention", args, f32({16, 256}), {1, 3});
  check_normal(*standalone, "qkv.weight", 0.02);
  check_constant(*standalone, "qkv.bias", 0.0f);
  check_normal(*standalone, "proj.weight", 0.02 / std::sqrt(2.0));  // n_layer defaults to 1
  check_constant(*standalone, "proj.bias", 0.0f);

  args.set("n_layer", I(4));
  auto scaled = check_create("CausalSelfAttention", args, f32({16, 256}), {1, 3});
  check_normal(*scaled, "proj.weight", 0.02 / std::sqrt(8.0));
}

BOOST_AUTO_TEST_CASE(transformer_block_describe) {
  const std::int64_t t = 64, c = 128;
  const auto d = describe("TransformerBlock", attention_args(c, 4), f32({t, c}));
  BOOST_TEST(libpipe::type_str(d.output) == libpipe::type_str(f32({t, c})));
  BOOST_TEST(param_names(d) ==
                 (std::vector<std::string>{"ln1.weight", "ln1.bias", "attn.qkv.weight",
                                           "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                                           "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias",
                                           "mlp.proj.weight", "mlp.proj.bias"}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::shape_str(spec(d, "mlp.fc.weight").shape) ==
             libpipe::shape_str(Shape{4 * c, c}));
  BOOST_TEST(libpipe::shape_str(spec(d, "mlp.fc.bias").shape) == libpipe::shape_str(Shape{4 * c}));
  BOOST_TEST(libpipe::shape_str(spec(d, "mlp.proj.weight").shape) ==
             libpipe::shape_str(Shape{c, 4 * c}));
  BOOST_TEST(libpipe::shape_str(spec(d, "mlp.proj.bias").shape) == libpipe::shape_str(Shape{c}));
  for (const auto& p : d.params) BOOST_TEST(!p.tieable);

  const std::vector<std::pair<std::int64_t, std::int64_t>> widths = {{128, 4}, {768, 12}};
  for (const auto& [dim, heads] : widths) {
    const auto block = describe("TransformerBlock", attention_args(dim, heads), f32({16, dim}));
    BOOST_TEST(block.param_count() == 12 * dim * dim + 13 * dim);
  }

  auto narrow = attention_args(c, 4);
  narrow.set("mlp_ratio", I(2));
  const auto n = describe("TransformerBlock", narrow, f32({t, c}));
  BOOST_TEST(libpipe::shape_str(spec(n, "mlp.fc.weight").shape) ==
             libpipe::shape_str(Shape{2 * c, c}));
  BOOST_TEST(n.param_count() == 8 * c * c + 11 * c);
  narrow.set("mlp_ratio", I(0));
  check_arg_error("TransformerBlock", narrow, f32({t, c}), "mlp_ratio");
  check_shape_error("TransformerBlock", attention_args(c, 4), f32({t, 64}), "float32[T, 128]");
}

// The block's figures are those of its parts as both plugins describe them
// (the transformer plugin restates core's cost constants; this keeps them equal).
BOOST_AUTO_TEST_CASE(transformer_block_is_the_sum_of_its_parts) {
  const std::int64_t t = 32, c = 256, h = 8, hidden = 3 * c;
  auto args = attention_args(c, h);
  args.set("mlp_ratio", I(3));
  const auto block = describe("TransformerBlock", args, f32({t, c}));

  const TensorType x = f32({t, c});
  const std::vector<libpipe::LayerDescription> parts = {
      describe("LayerNorm", {}, x),
      describe("CausalSelfAttention", attention_args(c, h), x),
      describe("LayerNorm", {}, x),
      describe("Linear", linear_args(c, hidden), x),
      describe("GELU", {}, f32({t, hidden})),
      describe("Linear", linear_args(hidden, c), f32({t, hidden})),
  };
  std::int64_t flops = 2 * 2 * t * c;  // the two residual adds, forward and backward
  std::int64_t bytes = 0, count = 0;
  for (const auto& p : parts) {
    flops += p.flops;
    bytes += p.activation_bytes;
    count += p.param_count();
  }
  BOOST_TEST(block.flops == flops);
  BOOST_TEST(block.activation_bytes == bytes);
  BOOST_TEST(block.param_count() == count);
}

BOOST_AUTO_TEST_CASE(transformer_block_init) {
  auto args = attention_args(256, 4);
  args.set("n_layer", I(6));
  auto layer = check_create("TransformerBlock", args, f32({16, 256}), {4, 11});
  for (const char* name : {"ln1.weight", "ln2.weight"}) check_constant(*layer, name, 1.0f);
  for (const char* name :
       {"ln1.bias", "ln2.bias", "attn.qkv.bias", "attn.proj.bias", "mlp.fc.bias", "mlp.proj.bias"})
    check_constant(*layer, name, 0.0f);
  check_normal(*layer, "attn.qkv.weight", 0.02);
  check_normal(*layer, "mlp.fc.weight", 0.02);
  check_normal(*layer, "attn.proj.weight", 0.02 / std::sqrt(12.0));
  check_normal(*layer, "mlp.proj.weight", 0.02 / std::sqrt(12.0));
}

// Initial weights depend on the run's seed and the layer's index only, so that
// every partitioning of a model starts from the same weights.
BOOST_AUTO_TEST_CASE(initialisation_is_deterministic_per_layer) {
  struct Case {
    const char* type;
    libpipe::Args args;
    TensorType input;
  };
  const std::vector<Case> cases = {
      {"Linear", linear_args(64, 32), f32({64})},
      {"LayerNorm", {}, f32({8, 32})},
      {"Embedding", embedding_args(100, 32, 16), i32({16})},
      {"LMHead", vocab_args(100, 32), f32({16, 32})},
      {"CausalSelfAttention", attention_args(32, 4), f32({16, 32})},
      {"TransformerBlock", attention_args(32, 4), f32({16, 32})},
  };
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.type) {
      const libpipe::CreateContext context{7, 1234};
      auto a = check_create(c.type, c.args, c.input, context);
      auto b = check_create(c.type, c.args, c.input, context);
      BOOST_TEST(same_values(*a, *b));
      // LayerNorm's initial values are constants: no seed can change them.
      const bool random = std::string(c.type) != "LayerNorm";
      auto other_index = check_create(c.type, c.args, c.input, {8, 1234});
      BOOST_TEST(same_values(*a, *other_index) == !random);
      auto other_seed = check_create(c.type, c.args, c.input, {7, 1235});
      BOOST_TEST(same_values(*a, *other_seed) == !random);
    }
  }
}

// The shipped model files, restated layer by layer: their shape chains hold
// and their parameter counts (tied weights once) are the ones their headers state.
namespace {

struct ChainLayer {
  const char* type;
  libpipe::Args args;
  const char* tie = nullptr;
};

std::int64_t chain_params(TensorType input, const std::vector<ChainLayer>& layers,
                          const std::string& expected_output) {
  std::int64_t total = 0;
  std::vector<std::string> ties;
  for (const auto& layer : layers) {
    const auto d = describe(layer.type, layer.args, input);
    for (const auto& p : d.params) {
      const bool shared = p.tieable && layer.tie;
      if (shared && std::find(ties.begin(), ties.end(), layer.tie) != ties.end()) continue;
      if (shared) ties.push_back(layer.tie);
      total += libpipe::numel(p.shape);
    }
    input = d.output;
  }
  BOOST_TEST(libpipe::type_str(input) == expected_output);
  return total;
}

std::vector<ChainLayer> gpt(std::int64_t vocab, std::int64_t positions, std::int64_t dim,
                            std::int64_t heads, std::int64_t blocks) {
  std::vector<ChainLayer> layers = {
      {"Embedding", embedding_args(vocab, dim, positions), "embedding"}};
  auto block = attention_args(dim, heads);
  block.set("n_layer", I(blocks));
  for (std::int64_t i = 0; i < blocks; ++i) layers.push_back({"TransformerBlock", block});
  layers.push_back({"LayerNorm", {}});
  layers.push_back({"LMHead", vocab_args(vocab, dim), "embedding"});
  layers.push_back({"SoftmaxCrossEntropy", {}});
  return layers;
}

}  // namespace

BOOST_AUTO_TEST_CASE(shipped_model_parameter_counts) {
  BOOST_TEST(chain_params(i32({64}), gpt(256, 64, 128, 4, 4), "float32[]") == 834304);
  BOOST_TEST(chain_params(i32({256}), gpt(256, 256, 512, 8, 8), "float32[]") == 25482240);
  BOOST_TEST(chain_params(i32({1024}), gpt(50257, 1024, 768, 12, 12), "float32[]") == 124439808);

  const std::vector<std::int64_t> widths = {256, 384, 192, 512, 128, 320, 64, 160, 10};
  std::vector<ChainLayer> mlp;
  for (std::size_t i = 0; i + 1 < widths.size(); ++i) {
    if (i > 0) mlp.push_back({"ReLU", {}});
    mlp.push_back({"Linear", linear_args(widths[i], widths[i + 1])});
  }
  mlp.push_back({"SoftmaxCrossEntropy", {}});
  BOOST_TEST(chain_params(f32({256}), mlp, "float32[]") == 410922);
}
