// pipe-plan: how a model would be split across pipeline stages, without MPI
// and without allocating a single parameter. Prints a table per stage (layer
// range, types, parameters, FLOPs, activation bytes, partition weight), the
// bottleneck and the imbalance; --json prints the same as one JSON object.
// --weights partitions a raw list of numbers instead of a model.
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pipe/describe.hpp"
#include "parse_flags.hpp"
#include "pipe/error.hpp"
#include "pipe/model.hpp"
#include "pipe/partition.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"

namespace po = boost::program_options;
using nlohmann::json;

namespace {

struct Options {
  std::string model = "gpt-tiny";
  int stages = 1;
  int data_parallel = 1;
  std::string method = "parameters";  // --partition-method, as given
  libpipe::PartitionMethod partition;  // ... parsed once (with --weights, 'balanced' is 'parameters')
  std::string weights;  // --weights, "" when planning a model
  std::vector<std::string> plugin_dirs;
  bool builtin_plugins = true;
  bool json = false;
};

po::options_description flags(Options& o) {
  po::options_description d("Options");
  d.add_options()
    ("model", po::value(&o.model)->value_name("FILE|NAME")->default_value(o.model),
     "model file (TOML) or shipped model name: mlp, gpt-tiny, gpt-small, gpt2-124m")
    ("stages", po::value(&o.stages)->value_name("S")->default_value(o.stages), "pipeline stages")
    ("data-parallel", po::value(&o.data_parallel)->value_name("D")->default_value(o.data_parallel),
     "data-parallel replicas of each stage (for the rank count and per-rank figures)")
    ("partition-method", po::value(&o.method)->value_name("METHOD")->default_value(o.method),
     libpipe::partition_methods_help().c_str())
    ("weights", po::value(&o.weights)->value_name("W1,W2,..."),
     "partition this list of weights instead of a model (balanced, or uniform with --partition-method uniform)")
    ("plugin-dir", po::value(&o.plugin_dirs)->value_name("DIR")->composing(), "load layer plugins from DIR (repeatable)")
    ("no-builtin-plugins", po::bool_switch(), "do not load the project's own layer plugins")
    ("json", po::bool_switch(&o.json), "print the plan as JSON")
    ("help,h", "show this help");
  return d;
}

std::vector<double> parse_weights(const std::string& text) {
  std::vector<double> out;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used == 0 || used != item.size())
      throw libpipe::Error("--weights: '" + item + "' (item " + std::to_string(out.size()) + ") is not a number");
    out.push_back(v);
  }
  if (out.empty()) throw libpipe::Error("--weights: the list is empty");
  return out;
}

// Integers print with thousands separators, anything else with 6 digits.
std::string number(double v) {
  if (std::fabs(v) < 9e15 && v == std::floor(v)) return libpipe::with_commas(static_cast<std::int64_t>(v));
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6g", v);
  return buffer;
}

// "Embedding, TransformerBlock x2": consecutive layers of one type are counted.
std::vector<std::pair<std::string, int>> type_runs(const libpipe::ModelDescription& d, int begin, int end) {
  std::vector<std::pair<std::string, int>> runs;
  for (int i = begin; i < end; ++i) {
    if (!runs.empty() && runs.back().first == d.layers[i].type)
      ++runs.back().second;
    else
      runs.emplace_back(d.layers[i].type, 1);
  }
  return runs;
}

std::string runs_str(const std::vector<std::pair<std::string, int>>& runs) {
  std::string s;
  for (const auto& [type, count] : runs)
    s += (s.empty() ? "" : ", ") + type + (count > 1 ? " x" + std::to_string(count) : "");
  return s;
}

int bottleneck_stage(const std::vector<double>& stage_weights) {
  return static_cast<int>(std::max_element(stage_weights.begin(), stage_weights.end()) - stage_weights.begin());
}

double imbalance(const std::vector<double>& stage_weights) {
  double mean = 0;  // summed as w / S, so that huge weights cannot overflow the total
  for (double w : stage_weights) mean += w / static_cast<double>(stage_weights.size());
  return mean > 0 ? *std::max_element(stage_weights.begin(), stage_weights.end()) / mean - 1 : 0;
}

int plan_weights(const Options& o) {
  auto weights = parse_weights(o.weights);
  libpipe::Parts parts;
  if (o.partition.name() == "uniform")
    parts = libpipe::partition_uniform(static_cast<std::int64_t>(weights.size()), o.stages);
  else if (o.partition.name() == "parameters")
    parts = libpipe::partition_balanced(weights, o.stages);
  else
    throw libpipe::Error("--weights partitions with 'balanced' (the default) or 'uniform', not '" + o.method + "'");
  auto sw = libpipe::stage_weights(weights, parts);
  int b = bottleneck_stage(sw);
  if (o.json) {
    json j = {{"method", o.partition.name() == "uniform" ? "uniform" : "balanced"}, {"stages", o.stages}, {"parts", parts},
              {"stage_weights", sw}, {"bottleneck", sw[b]}, {"bottleneck_stage", b}, {"imbalance", imbalance(sw)}};
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf("%-6s %-12s %14s\n", "stage", "items", "weight");
  for (int s = 0; s < o.stages; ++s) {
    std::string range = std::to_string(parts[s]) + "-" + std::to_string(parts[s + 1] - 1);
    std::printf("%-6d %-12s %14s\n", s, range.c_str(), number(sw[s]).c_str());
  }
  std::printf("bottleneck: stage %d, weight %s; imbalance %.1f%% (bottleneck / mean - 1)\n", b, number(sw[b]).c_str(),
              100 * imbalance(sw));
  return 0;
}

int plan_model(const Options& o) {
  libpipe::LayerRegistry registry;
  libpipe::load_plugins(registry, libpipe::PluginSearch{o.builtin_plugins, true, o.plugin_dirs});
  auto model = libpipe::load_model_file(libpipe::resolve_model_path(o.model));
  auto d = libpipe::describe_model(model, registry);
  auto plan = libpipe::plan_partition(d, o.partition, o.stages);
  auto sw = plan.stage_weights();
  int b = bottleneck_stage(sw);

  json stages = json::array();
  for (int s = 0; s < o.stages; ++s) {
    std::int64_t params = 0, flops = 0, activations = 0;
    for (int i = plan.parts[s]; i < plan.parts[s + 1]; ++i) {
      params += d.layers[i].description.param_count();
      flops += d.layers[i].description.flops;
      activations += d.layers[i].description.activation_bytes;
    }
    json types = json::array();
    for (const auto& [type, count] : type_runs(d, plan.parts[s], plan.parts[s + 1]))
      types.push_back({{"type", type}, {"count", count}});
    stages.push_back({{"stage", s}, {"first_layer", plan.parts[s]}, {"end_layer", plan.parts[s + 1]},
                      {"types", types}, {"params", params}, {"flops", flops}, {"activation_bytes", activations},
                      {"weight", sw[s]}});
  }
  if (o.json) {
    json j = {{"model", d.name}, {"layers", d.layers.size()}, {"params", d.params}, {"method", plan.method},
              {"stages", o.stages}, {"data_parallel", o.data_parallel}, {"world_size", o.stages * o.data_parallel},
              {"parts", plan.parts}, {"stage_weights", sw}, {"bottleneck", sw[b]}, {"bottleneck_stage", b},
              {"imbalance", plan.imbalance()}, {"stage_details", stages}};
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf("model %s: %zu layers, %s parameters; %d stages x %d data-parallel = %d ranks; method %s\n",
              d.name.c_str(), d.layers.size(), libpipe::with_commas(d.params).c_str(), o.stages, o.data_parallel,
              o.stages * o.data_parallel, plan.method.c_str());
  std::printf("%-6s %-9s %14s %18s %16s %14s  %s\n", "stage", "layers", "params", "flops/sample", "act.bytes/smp",
              "weight", "types");
  for (const auto& st : stages) {
    int s = st["stage"];
    std::string range = std::to_string(plan.parts[s]) + "-" + std::to_string(plan.parts[s + 1] - 1);
    std::printf("%-6d %-9s %14s %18s %16s %14s  %s\n", s, range.c_str(),
                libpipe::with_commas(st["params"]).c_str(), libpipe::with_commas(st["flops"]).c_str(),
                libpipe::with_commas(st["activation_bytes"]).c_str(), number(sw[s]).c_str(),
                runs_str(type_runs(d, plan.parts[s], plan.parts[s + 1])).c_str());
  }
  std::printf("bottleneck: stage %d, weight %s; imbalance %.1f%% (bottleneck / mean - 1)\n", b, number(sw[b]).c_str(),
              100 * plan.imbalance());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    po::variables_map vm;
    if (!pipe_apps::parse_flags(argc, argv, flags(o),
                                "usage: pipe-plan --model M --stages S [--data-parallel D] [--partition-method X] "
                                "[--json]\n"
                                "       pipe-plan --weights 3,1,4,1,5 --stages 2 [--json]\n\n"
                                "Plans a pipeline partition without MPI and without allocating parameters.",
                                vm))
      return 0;
    o.builtin_plugins = !vm["no-builtin-plugins"].as<bool>();
    if (o.stages < 1) throw libpipe::Error("--stages must be at least 1, not " + std::to_string(o.stages));
    if (o.data_parallel < 1)
      throw libpipe::Error("--data-parallel must be at least 1, not " + std::to_string(o.data_parallel));
    o.partition = libpipe::PartitionMethod::parse(!o.weights.empty() && o.method == "balanced" ? "parameters" : o.method);
    return o.weights.empty() ? plan_model(o) : plan_weights(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipe-plan: error: %s\n", e.what());
    return 1;
  }
}
