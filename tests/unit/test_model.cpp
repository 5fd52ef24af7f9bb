// Model files and whole-model description: structure errors with file:line,
// type/argument/shape errors naming the layer, tie groups, and the exact
// parameter counts of the shipped models.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE model
#include <boost/test/unit_test.hpp>

#include "pipe/describe.hpp"
#include "pipe/model.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"
#include "test_util.hpp"

namespace {

using pipe_test::error_of;

struct Builtins {
  libpipe::LayerRegistry registry;
  Builtins() { libpipe::load_plugins(registry, libpipe::PluginSearch{true, false, {}}); }
};

const std::string kHeader = "[model]\nname = \"t\"\ninput_shape = [16]\ninput_dtype = \"float32\"\n";  // lines 1-4

std::string parse_error(const std::string& text) {
  return error_of([&] { libpipe::parse_model(text, "m.toml"); });
}

std::string describe_error(const std::string& text) {
  static Builtins builtins;
  return error_of([&] { libpipe::describe_model(libpipe::parse_model(text, "m.toml"), builtins.registry); });
}

libpipe::ModelDescription describe_shipped(const std::string& name) {
  static Builtins builtins;
  return libpipe::describe_model(libpipe::load_model_file(libpipe::resolve_model_path(name)), builtins.registry);
}

}  // namespace

BOOST_AUTO_TEST_CASE(parses_layers_repeat_and_tie) {
  auto m = libpipe::parse_model(kHeader +
                                 "[[layer]]\ntype = \"Linear\"\nin_features = 16\nout_features = 8\ntie = \"w\"\n"
                                 "[[layer]]\ntype = \"ReLU\"\nrepeat = 3\n",
                             "m.toml");
  BOOST_TEST(m.name == "t");
  BOOST_TEST(m.input.shape == libpipe::Shape{16});
  BOOST_TEST(m.input.dtype == libpipe::DType::float32);
  BOOST_REQUIRE(m.layers.size() == 4u);
  BOOST_TEST(m.layers[0].type == "Linear");
  BOOST_TEST(m.layers[0].tie == "w");
  BOOST_TEST(m.layers[0].where.str() == "m.toml:5");
  BOOST_TEST(m.layers[0].args.get_int("out_features") == 8);
  BOOST_TEST(m.layers[0].args.line_of("out_features") == 8);
  BOOST_TEST(!m.layers[0].args.has("tie"));  // structural keys are not arguments
  for (int i = 1; i < 4; ++i) {
    BOOST_TEST(m.layers[i].type == "ReLU");
    BOOST_TEST(m.layers[i].where.line == 10);
  }
}

BOOST_AUTO_TEST_CASE(toml_syntax_error_has_line_and_column) {
  std::string e = parse_error(kHeader + "[[layer]]\ntype = \"Linear\nin_features = 16\n");
  BOOST_TEST(e.rfind("m.toml:6:", 0) == 0u, e);
  BOOST_TEST(e.find(": TOML syntax error: ") != std::string::npos, e);
}

BOOST_AUTO_TEST_CASE(structure_errors) {
  BOOST_TEST(parse_error("[[layer]]\ntype = \"ReLU\"\n") ==
             "m.toml: missing [model] table (it needs input_shape and input_dtype)");
  BOOST_TEST(parse_error("[model]\ninput_shap = [4]\n") ==
             "m.toml:2: [model]: unknown key 'input_shap' (did you mean 'input_shape'?)");
  BOOST_TEST(parse_error("[model]\ninput_dtype = \"float32\"\n") ==
             "m.toml:1: [model]: missing input_shape (the per-sample input shape, e.g. [64])");
  BOOST_TEST(parse_error("[model]\ninput_shape = [4, 0]\ninput_dtype = \"float32\"\n") ==
             "m.toml:2: [model]: input_shape must be a non-empty list of positive integers");
  BOOST_TEST(parse_error("[model]\ninput_shape = [4]\ninput_dtype = \"float64\"\n") ==
             "m.toml:3: [model]: unknown dtype 'float64' (expected float32, bfloat16 or int32)");
  BOOST_TEST(parse_error(kHeader) == "m.toml: the model has no layers (add [[layer]] tables)");
  BOOST_TEST(parse_error(kHeader + "[[layer]]\nin_features = 3\n") == "m.toml:5: layer 0: missing 'type'");
  BOOST_TEST(parse_error(kHeader + "[[layer]]\ntype = \"ReLU\"\nrepeat = 0\n") ==
             "m.toml:7: layer 0 (ReLU): 'repeat' must be an integer of at least 1");
  // At most 10^5 layers: 10^5 parse, one more is refused before anything is allocated.
  BOOST_TEST(parse_error(kHeader + "[[layer]]\ntype = \"ReLU\"\nrepeat = 100000\n") == "(no error)");
  BOOST_TEST(parse_error(kHeader + "[[layer]]\ntype = \"ReLU\"\nrepeat = 100000\n[[layer]]\ntype = \"ReLU\"\n") ==
             "m.toml:8: layer 100000 (ReLU): the model would have more than 100000 layers");
  BOOST_TEST(parse_error(kHeader + "[[layer]]\ntype = \"ReLU\"\ntie = 3\n") ==
             "m.toml:7: layer 0 (ReLU): 'tie' must be a non-empty string");
  BOOST_TEST(parse_error(kHeader + "[[layer]]\ntype = \"ReLU\"\n[[layer]]\ntype = \"X\"\nsub = { a = 1 }\n") ==
             "m.toml:9: layer 1 (X): argument 'sub' cannot be a table");
  BOOST_TEST(parse_error(kHeader + "[extra]\na = 1\n") ==
             "m.toml:5: unknown top-level key 'extra' (a model file has [model] and [[layer]])");
  BOOST_TEST(error_of([] { libpipe::load_model_file("/no/such/model.toml"); }) ==
             "cannot open model file '/no/such/model.toml'");
}

BOOST_AUTO_TEST_CASE(layer_indices_count_repeats) {
  BOOST_TEST(parse_error(kHeader + "[[layer]]\ntype = \"ReLU\"\nrepeat = 3\n[[layer]]\nrepeat = 2\n") ==
             "m.toml:8: layer 3: missing 'type'");
}

BOOST_AUTO_TEST_CASE(unknown_type_and_argument_errors) {
  BOOST_TEST(describe_error(kHeader + "[[layer]]\ntype = \"ReLU\"\n[[layer]]\ntype = \"Linaer\"\n") ==
             "m.toml:7: layer 1: unknown layer type 'Linaer' (did you mean 'Linear'?)");
  BOOST_TEST(describe_error(kHeader + "[[layer]]\ntype = \"Linear\"\nin_features = 16\n") ==
             "m.toml:5: layer 0 (Linear): missing argument 'out_features' (an integer)");
  BOOST_TEST(describe_error(kHeader + "[[layer]]\ntype = \"Linear\"\nin_features = 16\nout_features = \"8\"\n") ==
             "m.toml:8: layer 0 (Linear): argument 'out_features' must be an integer, not string");
  BOOST_TEST(describe_error(kHeader +
                            "[[layer]]\ntype = \"Linear\"\nin_features = 16\nout_features = 8\nout_feature = 8\n") ==
             "m.toml:9: layer 0 (Linear): unknown argument 'out_feature' (did you mean 'out_features'?)");
  BOOST_TEST(describe_error(kHeader + "[[layer]]\ntype = \"Linear\"\nin_features = 16\nout_feature = 8\n") ==
             "m.toml:5: layer 0 (Linear): missing argument 'out_features' (an integer) (line 8 sets 'out_feature': "
             "a misspelling of it?)");
  BOOST_TEST(describe_error(kHeader + "[[layer]]\ntype = \"ReLU\"\nslope = 0.1\n") ==
             "m.toml:7: layer 0 (ReLU): unknown argument 'slope'");
}

BOOST_AUTO_TEST_CASE(broken_shape_chain_names_both_layers_and_shapes) {
  std::string e = describe_error(kHeader +
                                 "[[layer]]\ntype = \"Linear\"\nin_features = 16\nout_features = 8\n"
                                 "[[layer]]\ntype = \"ReLU\"\n"
                                 "[[layer]]\ntype = \"Linear\"\nin_features = 32\nout_features = 4\n");
  BOOST_TEST(e.rfind("m.toml:11: layer 2 (Linear) expects input float32[", 0) == 0u, e);
  BOOST_TEST(e.find("32] but layer 1 (ReLU) outputs float32[8]") != std::string::npos, e);

  std::string first = describe_error(
      "[model]\ninput_shape = [64]\ninput_dtype = \"int32\"\n[[layer]]\ntype = \"Linear\"\nin_features = 64\n"
      "out_features = 8\n");
  BOOST_TEST(first.rfind("m.toml:4: layer 0 (Linear) expects input float32[", 0) == 0u, first);
  BOOST_TEST(first.find("but the model input is int32[64]") != std::string::npos, first);
}

// The engine gives labels to the last layer only: a loss anywhere else would fail mid-step.
BOOST_AUTO_TEST_CASE(a_loss_must_be_the_last_layer) {
  BOOST_TEST(describe_error(kHeader + "[[layer]]\ntype = \"MSELoss\"\n[[layer]]\ntype = \"MSELoss\"\n") ==
             "m.toml:7: layer 1 (MSELoss) follows layer 0 (MSELoss), a loss: a loss must be the model's last layer");
  BOOST_TEST(describe_error(kHeader + "[[layer]]\ntype = \"MSELoss\"\n[[layer]]\ntype = \"ReLU\"\n") ==
             "m.toml:7: layer 1 (ReLU) follows layer 0 (MSELoss), a loss: a loss must be the model's last layer");
}

BOOST_AUTO_TEST_CASE(tie_errors) {
  BOOST_TEST(describe_error(kHeader + "[[layer]]\ntype = \"ReLU\"\ntie = \"w\"\n") ==
             "m.toml:5: layer 0 (ReLU) has tie = 'w' but no parameter it can share");
  const std::string gpt = "[model]\ninput_shape = [8]\ninput_dtype = \"int32\"\n"
                          "[[layer]]\ntype = \"Embedding\"\nvocab = 32\ndim = 16\npositions = 8\ntie = \"e\"\n"  // 4-9
                          "[[layer]]\ntype = \"LMHead\"\nvocab = 31\ndim = 16\ntie = \"e\"\n";                   // 10
  BOOST_TEST(describe_error(gpt) ==
             "m.toml:10: layer 1 (LMHead) shares 'e' with shape [31, 16] but layer 0 (Embedding) shares it with "
             "shape [32, 16]");
}

BOOST_AUTO_TEST_CASE(gpt_tiny_matches_the_baseline_model) {
  auto d = describe_shipped("gpt-tiny");
  BOOST_TEST(d.params == 834304);
  BOOST_TEST(d.input.shape == libpipe::Shape{64});
  BOOST_TEST(d.input.dtype == libpipe::DType::int32);
  BOOST_TEST(d.output.shape.empty());  // the loss: a scalar per sample
  BOOST_REQUIRE(d.ties.size() == 1u);
  BOOST_TEST(d.ties[0].layers == (std::vector<int>{0, 6}));
  BOOST_TEST(d.layers.front().type == "Embedding");
  BOOST_TEST(d.layers[6].type == "LMHead");
  BOOST_TEST(d.layers[6].unique_params == 0);  // its weight is the embedding's
  std::int64_t flops = 0;
  for (const auto& l : d.layers) flops += l.description.flops;
  BOOST_TEST(flops == d.flops);
  BOOST_TEST(d.flops > 6 * 834304 * 64 / 2);  // at least the GEMM work of 6 * params * tokens, roughly
}

BOOST_AUTO_TEST_CASE(gpt2_124m_has_the_published_count) {
  auto d = describe_shipped("gpt2-124m");
  BOOST_TEST(d.params == 124439808);
  BOOST_TEST(d.layers.size() == 16u);  // embedding, 12 blocks, final norm, head, loss
}

// Attention's saved bytes per device: GPT-2's blocks (12 heads of 64, 1024 tokens) keep flash attention's state on
// the CPU (from 1024 tokens) and the T x T probabilities on a GPU (from 2048); gpt-tiny's 64 tokens keep the
// probabilities on both. (Run without PIPE_ATTENTION, which would force one path everywhere.)
BOOST_AUTO_TEST_CASE(attention_is_accounted_per_device) {
  const auto described = describe_shipped("gpt2-124m");
  std::int64_t blocks = 0;
  for (const auto& layer : described.layers)
    if (layer.description.attention_heads > 0) {
      ++blocks;
      BOOST_TEST(layer.description.attention_heads == 12);
      BOOST_TEST(layer.description.attention_seq == 1024);
      BOOST_TEST(layer.description.attention_head_dim == 64);
    }
  BOOST_TEST(blocks == 12);
  auto cpu = described, cuda = described;
  libpipe::account_attention(cpu, libpipe::Device::cpu);
  libpipe::account_attention(cuda, libpipe::Device::cuda);
  const std::int64_t per_block = 12 * 1024 * (1024 - (64 + 1)) * 4;  // probabilities out, each row's O and lse in
  BOOST_TEST(cuda.activation_bytes == described.activation_bytes);
  BOOST_TEST(cpu.activation_bytes == described.activation_bytes - 12 * per_block);
  std::int64_t sum = 0;
  for (const auto& layer : cpu.layers) sum += layer.description.activation_bytes;
  BOOST_TEST(sum == cpu.activation_bytes);

  const auto tiny = describe_shipped("gpt-tiny");
  auto tiny_cpu = tiny;
  libpipe::account_attention(tiny_cpu, libpipe::Device::cpu);
  BOOST_TEST(tiny_cpu.activation_bytes == tiny.activation_bytes);
}

BOOST_AUTO_TEST_CASE(gpt2_tiny_has_gpt2s_vocabulary_and_its_stated_count) {
  auto d = describe_shipped("gpt2-tiny");
  BOOST_TEST(d.params == 3320640);  // as its file says: 50,257 x 64 + 64 x 64 + 2 blocks of 12 C^2 + 13 C + 2 C
  BOOST_TEST(d.layers.front().description.params.front().shape.front() == 50257);
}

BOOST_AUTO_TEST_CASE(every_shipped_model_describes) {
  auto names = libpipe::builtin_model_names();
  BOOST_TEST(names == (std::vector<std::string>{"gpt-small", "gpt-tiny", "gpt2-124m", "gpt2-tiny", "llama-3.2-1b",
                                                "llama-tiny", "mlp"}));
  for (const auto& name : names) {
    auto d = describe_shipped(name);
    BOOST_TEST(d.params > 0, name);
    BOOST_TEST(d.output.shape.empty(), name);
  }
  auto small = describe_shipped("gpt-small");
  BOOST_TEST(small.params >= 10'000'000);
  BOOST_TEST(small.params < 100'000'000);
}

BOOST_AUTO_TEST_CASE(model_names_resolve_to_shipped_files) {
  BOOST_TEST(libpipe::resolve_model_path("gpt-tiny") == libpipe::builtin_model_dir() + "/gpt-tiny.toml");
  BOOST_TEST(libpipe::resolve_model_path("gpt-tiny.toml") == libpipe::builtin_model_dir() + "/gpt-tiny.toml");
  BOOST_TEST(error_of([] { libpipe::resolve_model_path("gpt-huge"); }) ==
             "model 'gpt-huge' is neither a file nor a shipped model (shipped: gpt-small, gpt-tiny, gpt2-124m, "
             "gpt2-tiny, llama-3.2-1b, llama-tiny, mlp)");
}

// The loss contract: a loss declares the labels it takes, and model_loss reads it (never a type name).
BOOST_AUTO_TEST_CASE(losses_declare_their_labels) {
  auto tiny = describe_shipped("gpt-tiny");  // tokens [64] -> logits [64, 256] -> SoftmaxCrossEntropy
  const libpipe::LossLabels& ce = libpipe::model_loss(tiny);
  BOOST_TEST(libpipe::type_str(ce.type) == "int32[64]");
  BOOST_TEST(ce.classes == 256);
  for (std::size_t i = 0; i + 1 < tiny.layers.size(); ++i) BOOST_TEST(!tiny.layers[i].description.loss, i);

  static Builtins builtins;
  auto mse = libpipe::describe_model(
      libpipe::parse_model(kHeader + "[[layer]]\ntype = \"Linear\"\nin_features = 16\nout_features = 3\n"
                                     "[[layer]]\ntype = \"MSELoss\"\n",
                           "m.toml"),
      builtins.registry);
  BOOST_TEST(libpipe::type_str(libpipe::model_loss(mse).type) == "float32[3]");
  BOOST_TEST(libpipe::model_loss(mse).classes == 0);

  auto no_loss = libpipe::describe_model(
      libpipe::parse_model(kHeader + "[[layer]]\ntype = \"Linear\"\nin_features = 16\nout_features = 3\n", "m.toml"),
      builtins.registry);
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::model_loss(no_loss); }),
                    "training needs a model that ends in a loss layer; its last layer, 0 (Linear), is not one (a "
                    "loss declares its labels in LayerDescription::loss)");
}

// Layers list their GEMMs per sample: gpt-tiny's blocks have qkv, attention, proj, fc and proj.
BOOST_AUTO_TEST_CASE(layers_list_their_gemms) {
  auto tiny = describe_shipped("gpt-tiny");
  const auto& block = tiny.layers[1].description.gemms;  // TransformerBlock, T = 64, C = 128, 4 heads
  BOOST_TEST(block.size() == 3u * 4 + 6);
  BOOST_TEST(block[0].layer == "attn.qkv");
  BOOST_TEST((block[0].m == 64 && block[0].n == 384 && block[0].k == 128 && block[0].per_sample == 'm'));
  BOOST_TEST(block[2].pass == "weight grad");
  BOOST_TEST((block[2].accumulate && block[2].per_sample == 'k' && block[2].k == 64));
  BOOST_TEST((block[3].batch == 4 && block[3].m == 64 && block[3].n == 64 && block[3].k == 32));
  BOOST_TEST(tiny.layers.back().description.gemms.empty());  // the loss has none
}
