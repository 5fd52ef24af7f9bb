// Partition methods on the shipped models, described through the real
// plugins: the splits DeepSpeed makes (FACTS.md), weighted types, manual
// boundaries, FLOPs, and the exact text of every error a user can meet.
#define BOOST_TEST_MODULE partition_method
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/model.hpp"
#include "pipe/partition.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/profile.hpp"
#include "pipe/registry.hpp"
#include "shipped_model.hpp"
#include "test_util.hpp"

using libpipe::PartitionPlan;
using libpipe::Parts;

namespace {

using pipe_test::error_of;

// The shipped models, described once with the built-in plugins.
const libpipe::ModelDescription& model(const std::string& name) { return pipe_test::shipped_model(name); }

PartitionPlan plan(const std::string& name, const std::string& method, int stages) {
  return libpipe::plan_partition(model(name), method, stages);
}

std::vector<std::string> types_of(const std::string& name) {
  std::vector<std::string> types;
  for (const auto& layer : model(name).layers) types.push_back(layer.type);
  return types;
}

// The smallest bottleneck over every partition whose stages all have weight.
double brute_force_bottleneck(const std::vector<double>& w, int stages) {
  const int n = static_cast<int>(w.size());
  double best = std::numeric_limits<double>::infinity();
  Parts parts(static_cast<std::size_t>(stages) + 1, 0);
  parts.back() = n;
  std::function<void(int, int)> place = [&](int s, int from) {
    if (s == stages) {
      auto sums = libpipe::stage_weights(w, parts);
      if (std::all_of(sums.begin(), sums.end(), [](double x) { return x > 0; }))
        best = std::min(best, *std::max_element(sums.begin(), sums.end()));
      return;
    }
    for (int b = from; b <= n - (stages - s); ++b) {
      parts[static_cast<std::size_t>(s)] = b;
      place(s + 1, b + 1);
    }
  };
  place(1, 1);
  return best;
}

const std::string kTinyTypes = "Embedding, TransformerBlock, LayerNorm, LMHead, SoftmaxCrossEntropy";

}  // namespace

BOOST_AUTO_TEST_CASE(shipped_models_are_as_expected) {
  BOOST_TEST(types_of("gpt-tiny") ==
                 std::vector<std::string>({"Embedding", "TransformerBlock", "TransformerBlock", "TransformerBlock",
                                           "TransformerBlock", "LayerNorm", "LMHead", "SoftmaxCrossEntropy"}),
             boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(model("gpt2-124m").layers.size(), 16u);
  BOOST_CHECK_EQUAL(model("mlp").layers.size(), 16u);
}

BOOST_AUTO_TEST_CASE(uniform) {
  PartitionPlan p = plan("gpt-tiny", "uniform", 2);
  BOOST_TEST(p.parts == Parts({0, 4, 8}), boost::test_tools::per_element());
  BOOST_TEST(p.weights == std::vector<double>(8, 1.0), boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(p.method, "uniform");
  BOOST_CHECK_EQUAL(p.bottleneck(), 4.0);
  BOOST_CHECK_EQUAL(p.imbalance(), 0.0);
  // DeepSpeed's rule: the first n mod S stages get one more.
  BOOST_TEST(plan("gpt2-124m", "uniform", 3).parts == Parts({0, 6, 11, 16}), boost::test_tools::per_element());
  BOOST_TEST(plan("gpt-tiny", "UNIFORM", 8).parts == Parts({0, 1, 2, 3, 4, 5, 6, 7, 8}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(parameters_counts_tied_weights_on_every_holder) {
  const auto& tiny = model("gpt-tiny");
  PartitionPlan p = plan("gpt-tiny", "parameters", 2);
  for (std::size_t i = 0; i < tiny.layers.size(); ++i)
    BOOST_CHECK_EQUAL(p.weights[i], static_cast<double>(tiny.layers[i].description.param_count()));
  // The LM head holds the tied token table (256 x 128) although the model's
  // total counts it on the embedding only.
  BOOST_CHECK_EQUAL(tiny.layers[6].unique_params, 0);
  BOOST_CHECK_EQUAL(p.weights[6], 256.0 * 128.0);
  // DeepSpeed's split for this model (FACTS.md): embedding + 2 blocks | 2 blocks + norm + head + loss.
  BOOST_TEST(p.parts == Parts({0, 3, 8}), boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(p.bottleneck(), brute_force_bottleneck(p.weights, 2));
  BOOST_CHECK_GT(p.imbalance(), 0.0);
  BOOST_CHECK_LT(p.imbalance(), 0.01);
  // "Parameters" (any case) is the same method.
  BOOST_TEST(plan("gpt-tiny", "Parameters", 2).parts == p.parts, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(parameters_is_optimal_on_shipped_models) {
  for (const std::string name : {"gpt-tiny", "gpt2-124m", "mlp"})
    for (int stages = 1; stages <= 4; ++stages) {
      BOOST_TEST_CONTEXT(name << " on " << stages << " stages") {
        PartitionPlan p = plan(name, "parameters", stages);
        BOOST_REQUIRE_NO_THROW(libpipe::validate_parts(p.parts, static_cast<std::int64_t>(model(name).layers.size())));
        BOOST_CHECK_EQUAL(p.bottleneck(), brute_force_bottleneck(p.weights, stages));
      }
    }
  // gpt2-124m on 2 stages: the embedding (39.4 M) and the head holding the
  // tied table (38.6 M) weigh about the same, so the 12 blocks split 6 | 6.
  BOOST_TEST(plan("gpt2-124m", "parameters", 2).parts == Parts({0, 7, 16}), boost::test_tools::per_element());
  // mlp: ReLUs and the loss have no parameters; every stage after the first
  // starts with a Linear, and trailing parameter-free layers join the last stage.
  PartitionPlan mlp = plan("mlp", "parameters", 4);
  for (std::size_t s = 1; s + 1 < mlp.parts.size(); ++s)
    BOOST_CHECK_EQUAL(model("mlp").layers[static_cast<std::size_t>(mlp.parts[s])].type, "Linear");
  BOOST_CHECK_EQUAL(mlp.parts.back(), 16);
}

BOOST_AUTO_TEST_CASE(flops) {
  const auto& tiny = model("gpt-tiny");
  for (int stages = 1; stages <= 4; ++stages) {
    PartitionPlan p = plan("gpt-tiny", "flops", stages);
    for (std::size_t i = 0; i < tiny.layers.size(); ++i)
      BOOST_CHECK_EQUAL(p.weights[i], static_cast<double>(tiny.layers[i].description.flops));
    BOOST_CHECK_EQUAL(p.bottleneck(), brute_force_bottleneck(p.weights, stages));
  }
  PartitionPlan gpt2 = plan("gpt2-124m", "flops", 4);
  BOOST_CHECK_EQUAL(gpt2.bottleneck(), brute_force_bottleneck(gpt2.weights, 4));
}

BOOST_AUTO_TEST_CASE(type_regex) {
  PartitionPlan p = plan("gpt-tiny", "type:TransformerBlock", 2);
  BOOST_TEST(p.weights == std::vector<double>({0, 1, 1, 1, 1, 0, 0, 0}), boost::test_tools::per_element());
  // DeepSpeed's split (FACTS.md): embedding + 2 blocks | 2 blocks + norm + head + loss.
  BOOST_TEST(p.parts == Parts({0, 3, 8}), boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(p.imbalance(), 0.0);
  // Case-insensitive search, like re.search(..., re.IGNORECASE).
  BOOST_TEST(plan("gpt-tiny", "type:block", 2).parts == Parts({0, 3, 8}), boost::test_tools::per_element());
  BOOST_TEST(plan("gpt-tiny", "TYPE:transformerblock", 4).parts == Parts({0, 2, 3, 4, 8}),
             boost::test_tools::per_element());
  BOOST_TEST(plan("gpt-tiny", "type:^(embedding|lmhead)$", 2).weights == std::vector<double>({1, 0, 0, 0, 0, 0, 1, 0}),
             boost::test_tools::per_element());
  BOOST_TEST(plan("gpt-tiny", "type:^(embedding|lmhead)$", 2).parts == Parts({0, 6, 8}),
             boost::test_tools::per_element());
  // gpt2-124m: 12 blocks on 4 stages, 3 each.
  BOOST_TEST(plan("gpt2-124m", "type:TransformerBlock", 4).parts == Parts({0, 4, 7, 10, 16}),
             boost::test_tools::per_element());
  // mlp: one Linear per stage on 8 stages, each with the ReLU after it.
  BOOST_TEST(plan("mlp", "type:linear", 8).parts == Parts({0, 2, 4, 6, 8, 10, 12, 14, 16}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(weighted_types) {
  PartitionPlan p = plan("gpt-tiny", "type:embed:2|block:1", 2);
  BOOST_TEST(p.weights == std::vector<double>({2, 1, 1, 1, 1, 0, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(p.parts == Parts({0, 2, 8}), boost::test_tools::per_element());  // 3 | 3
  BOOST_TEST(plan("gpt-tiny", "type:embed:2|block:1", 3).parts == Parts({0, 1, 3, 8}),
             boost::test_tools::per_element());
  // The first alternative that matches decides; fractions and exponents are numbers.
  BOOST_TEST(plan("gpt-tiny", "type:block:0.5|transformer:9|Norm:1e0|head:3", 2).weights ==
                 std::vector<double>({0, 0.5, 0.5, 0.5, 0.5, 1, 3, 0}),
             boost::test_tools::per_element());
  // Not every alternative ends in ':NUMBER': the whole text is one plain
  // regex, "embed:2" or "block", so the blocks weigh 1 and the rest 0.
  BOOST_TEST(plan("gpt-tiny", "type:embed:2|block", 2).weights == std::vector<double>({0, 1, 1, 1, 1, 0, 0, 0}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(manual) {
  PartitionPlan p = plan("gpt-tiny", "manual:3", 2);
  BOOST_TEST(p.parts == Parts({0, 3, 8}), boost::test_tools::per_element());
  BOOST_TEST(p.weights == plan("gpt-tiny", "parameters", 2).weights, boost::test_tools::per_element());
  BOOST_TEST(plan("gpt-tiny", "manual:0,3,8", 2).parts == Parts({0, 3, 8}), boost::test_tools::per_element());
  BOOST_TEST(plan("gpt-tiny", "manual:2, 4, 6", 4).parts == Parts({0, 2, 4, 6, 8}), boost::test_tools::per_element());
  BOOST_TEST(plan("gpt-tiny", "manual:1,2,3,4,5,6,7", 8).parts == Parts({0, 1, 2, 3, 4, 5, 6, 7, 8}),
             boost::test_tools::per_element());
  BOOST_TEST(plan("gpt-tiny", "manual:", 1).parts == Parts({0, 8}), boost::test_tools::per_element());
  // A stage without parameters is the user's call under manual.
  BOOST_TEST(plan("gpt-tiny", "manual:7", 2).stage_weights().back() == 0.0);
}

BOOST_AUTO_TEST_CASE(methods_help) {
  BOOST_CHECK_EQUAL(libpipe::partition_methods_help(),
                    "uniform, parameters, flops, type:REGEX, type:REGEX:WEIGHT|..., manual:B1,B2,..., profile");
}

// A method's text is parsed once, without a model: what needs no model is checked there, and the parsed
// value then plans any model (pipe-train and pipe-plan parse where they read the flag).
BOOST_AUTO_TEST_CASE(method_parsed_once) {
  using libpipe::PartitionMethod;
  BOOST_CHECK_EQUAL(PartitionMethod().text(), "parameters");
  BOOST_CHECK_EQUAL(PartitionMethod::parse("TYPE:block").name(), "type:");
  BOOST_CHECK_EQUAL(PartitionMethod::parse("manual:3").name(), "manual:");
  BOOST_TEST(PartitionMethod::parse("Profile").needs_measurement());
  BOOST_TEST(!PartitionMethod::parse("flops").needs_measurement());
  BOOST_CHECK_EQUAL(error_of([] { PartitionMethod::parse("type:("); }),
                    "partition method 'type:(': invalid regex '(': Unmatched marking parenthesis ( or \\( at position 1");
  BOOST_CHECK_EQUAL(error_of([] { PartitionMethod::parse("manual:1,x"); }),
                    "partition method 'manual:1,x': 'x' is not a layer index");
  BOOST_CHECK_EQUAL(error_of([] { PartitionMethod::parse("type:a:-1|b:1"); }),
                    "partition method 'type:a:-1|b:1': weight '-1' of 'a' must be a finite number >= 0");
  const PartitionMethod blocks = PartitionMethod::parse("type:block");
  BOOST_TEST(libpipe::plan_partition(model("gpt-tiny"), blocks, 2).parts == plan("gpt-tiny", "type:block", 2).parts,
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::plan_partition(model("gpt-small"), blocks, 2).parts.size() == 3u);
}

BOOST_AUTO_TEST_CASE(method_errors) {
  auto err = [](const std::string& name, const std::string& method, int stages) {
    return error_of([&] { plan(name, method, stages); });
  };
  BOOST_CHECK_EQUAL(err("gpt-tiny", "foo", 2),
                    "unknown partition method 'foo' (methods: uniform, parameters, flops, type:REGEX, "
                    "type:REGEX:WEIGHT|..., manual:B1,B2,..., profile)");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual", 2),
                    "unknown partition method 'manual' (methods: uniform, parameters, flops, type:REGEX, "
                    "type:REGEX:WEIGHT|..., manual:B1,B2,..., profile)");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "profile", 2),
                    "partition method 'profile' needs measured per-layer times (pipe-train measures them; pipe-plan "
                    "cannot: use parameters, flops or type:REGEX there)");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "parameters", 0), "the number of pipeline stages must be at least 1, got 0");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "uniform", 9),
                    "cannot split gpt-tiny's 8 layers into 9 stages: every stage needs at least one layer");
  BOOST_CHECK_EQUAL(err("mlp", "parameters", 9),
                    "partition method 'parameters': only 8 layers have trainable parameters but there are 9 stages: "
                    "every stage needs at least one");
  BOOST_CHECK_NO_THROW(plan("gpt-tiny", "flops", 8));  // every gpt-tiny layer has FLOPs, even the loss

  // type:REGEX
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:Block(", 2),
                    "partition method 'type:Block(': invalid regex 'Block(': Unmatched marking parenthesis ( or \\( "
                    "at position 6");
  BOOST_CHECK_EQUAL(
      err("gpt-tiny", "type:Conv", 2),
      "partition method 'type:Conv': regex 'Conv' matches no layer (layer types in gpt-tiny: " + kTinyTypes + ")");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:TransformerBlock", 5),
                    "type:TransformerBlock matches 4 layers but there are 5 stages: every stage needs at least one");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:Embedding", 2),
                    "type:Embedding matches 1 layer but there are 2 stages: every stage needs at least one");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:", 2),
                    "partition method 'type:': the regex is empty (type:REGEX matches layer type names, e.g. "
                    "type:TransformerBlock)");

  // weighted types
  BOOST_CHECK_EQUAL(
      err("gpt-tiny", "type:embed:2|block:0", 2),
      "type:embed:2|block:0 gives weight to 1 layer but there are 2 stages: every stage needs at least one");
  BOOST_CHECK_EQUAL(
      err("gpt-tiny", "type:embed:0|block:0", 2),
      "type:embed:0|block:0 gives weight to no layer but there are 2 stages: every stage needs at least one");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:embed:-1|block:1", 2),
                    "partition method 'type:embed:-1|block:1': weight '-1' of 'embed' must be a finite number >= 0");
  BOOST_CHECK_EQUAL(
      err("gpt-tiny", "type:embed:1e999|block:1", 2),
      "partition method 'type:embed:1e999|block:1': weight '1e999' of 'embed' must be a finite number >= 0");
  // A negative number in a text that is not the weighted form is just part of the regex.
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:embed:-1|LayerNorm", 2),
                    "type:embed:-1|LayerNorm matches 1 layer but there are 2 stages: every stage needs at least one");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:embed:2|conv:1", 2),
                    "partition method 'type:embed:2|conv:1': regex 'conv' matches no layer (layer types in gpt-tiny: " +
                        kTinyTypes + ")");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:embed:2|[x:1", 2),
                    "partition method 'type:embed:2|[x:1': invalid regex '[x': Unmatched [ or [^ in character class "
                    "declaration at position 2");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "type:embed:2|:1", 2),
                    "partition method 'type:embed:2|:1': an alternative has an empty regex (type:REGEX matches layer "
                    "type names, e.g. type:TransformerBlock)");

  // manual
  BOOST_CHECK_EQUAL(
      err("gpt-tiny", "manual:3,5", 2),
      "partition method 'manual:3,5': 2 boundaries do not fit 2 stages: give 1 (the first layer of stage 1) "
      "or 3 (0, ..., 8)");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:3", 4),
                    "partition method 'manual:3': 1 boundary does not fit 4 stages: give 3 (the first layers of stages "
                    "1..3) or 5 (0, ..., 8)");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:5,3", 3),
                    "partition method 'manual:5,3': boundaries must increase, but 5 is followed by 3");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:3,3", 3),
                    "partition method 'manual:3,3': boundary 3 appears twice, which would leave stage 1 empty");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:8", 2),
                    "partition method 'manual:8': boundary 8 is out of range: the first layer of stage 1 must be "
                    "between 1 and 7 (the model has 8 layers)");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:0", 2),
                    "partition method 'manual:0': boundary 0 is out of range: the first layer of stage 1 must be "
                    "between 1 and 7 (the model has 8 layers)");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:1,3,8", 2),
                    "partition method 'manual:1,3,8': a full boundary list must start at 0, but it starts at 1");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:0,3,7", 2),
                    "partition method 'manual:0,3,7': a full boundary list must end at 8 (the number of layers), but "
                    "it ends at 7");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:3,x", 3), "partition method 'manual:3,x': 'x' is not a layer index");
  BOOST_CHECK_EQUAL(err("gpt-tiny", "manual:3,,5", 3), "partition method 'manual:3,,5': '' is not a layer index");
}

BOOST_AUTO_TEST_CASE(a_model_without_a_name) {
  // Model files may omit [model] name; messages then say "the model".
  libpipe::ModelDescription m;
  for (const char* type : {"Linear", "ReLU", "Linear"}) {
    libpipe::LayerInfo layer;
    layer.index = static_cast<int>(m.layers.size());
    layer.type = type;
    m.layers.push_back(layer);
  }
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::plan_partition(m, "uniform", 4); }),
                    "cannot split the model's 3 layers into 4 stages: every stage needs at least one layer");
  BOOST_CHECK_EQUAL(
      error_of([&] { libpipe::plan_partition(m, "type:Conv", 2); }),
      "partition method 'type:Conv': regex 'Conv' matches no layer (layer types in the model: Linear, ReLU)");
  BOOST_TEST(libpipe::plan_partition(m, "type:linear", 2).parts == Parts({0, 2, 3}), boost::test_tools::per_element());
  // No layer has parameters here (the descriptions are empty).
  BOOST_CHECK_EQUAL(
      error_of([&] { libpipe::plan_partition(m, "parameters", 1); }),
      "partition method 'parameters': no layer has trainable parameters but there is 1 stage: every stage "
      "needs at least one");
}

// 'profile' times one layer of each group of identical layers and gives all of them its time: gpt-tiny's four
// blocks are one group; a block with another argument is a group of its own, and so is a layer of another type.
BOOST_AUTO_TEST_CASE(profile_times_identical_layers_once) {
  libpipe::LayerRegistry registry;
  libpipe::load_plugins(registry, libpipe::PluginSearch{true, false, {}});
  libpipe::ModelSpec spec = libpipe::load_model_file(libpipe::resolve_model_path("gpt-tiny"));
  auto groups = [&] { return libpipe::same_cost_layers(spec, libpipe::describe_model(spec, registry)); };
  BOOST_TEST(groups() == (std::vector<int>{0, 1, 1, 1, 1, 5, 6, 7}), boost::test_tools::per_element());
  spec.layers[3].args.set("heads", std::int64_t{8});
  BOOST_TEST(groups() == (std::vector<int>{0, 1, 1, 3, 1, 5, 6, 7}), boost::test_tools::per_element());
  spec.layers[2].args.set("heads", std::int64_t{8});
  BOOST_TEST(groups() == (std::vector<int>{0, 1, 2, 2, 1, 5, 6, 7}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(profile_balances_measured_times) {
  const auto& d = model("gpt-tiny");
  // Made-up times: the head and loss are slow, so the last stage takes fewer blocks.
  std::vector<double> times = {1, 2, 2, 2, 2, 0.1, 5, 1};
  auto plan = libpipe::plan_partition(d, "profile", 2, &times);
  BOOST_TEST(plan.parts == (libpipe::Parts{0, 4, 8}));
  BOOST_TEST(plan.weights == times);
  std::vector<double> wrong_size = {1, 2};
  BOOST_CHECK_THROW(libpipe::plan_partition(d, "profile", 2, &wrong_size), libpipe::Error);
}
