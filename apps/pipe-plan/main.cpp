// pipe-plan: how a model would be split across pipeline stages, without MPI
// and without allocating a single parameter. Prints a table per stage (layer
// range, types, parameters, FLOPs, activation bytes, partition weight), the
// bottleneck and the imbalance; --json prints the same as one JSON object.
// --weights partitions a raw list of numbers instead of a model. Given a
// model it also prints the memory each rank needs under a schedule
// (pipe/memory_model.hpp): parameters, gradients, optimizer state, the
// activations the schedule holds at its peak, and communication buffers.
#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pipe/describe.hpp"
#include "auto.hpp"
#include "plan_rate.hpp"
#include "parse_flags.hpp"
#include "pipe/error.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/memory_partition.hpp"
#include "pipe/model.hpp"
#include "pipe/partition.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/schedule.hpp"

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
  // The memory model: the run pipe-train would make (its defaults).
  std::string schedule = "1f1b";
  int virtual_stages = 0;  // 0: the schedule's default
  int micro_batches = 8;
  std::int64_t micro_batch_size = 16;
  std::string optimizer = "adamw";
  std::string dtype = "fp32";
  std::string device = "cpu";  // --device: the CPU adds its libraries' own memory per rank
  int checkpoint_interval = 0;
  int zero = 0;                  // --zero 1: the optimizer's state split over the data-parallel replicas
  std::string memory_limit;      // --memory-limit, as given ("" when none)
  // --auto: the planner
  bool auto_plan = false;
  int world_size = 0;
  std::int64_t global_batch = 0;
  double gflops = 0;
  std::vector<std::string> profiles;
  int top = 5;
};

po::options_description flags(Options& o) {
  po::options_description d("Options");
  d.add_options()
    ("model", po::value(&o.model)->value_name("FILE|NAME")->default_value(o.model),
     ("model file (TOML) or shipped model name: " + pipe_apps::shipped_models_text()).c_str())
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
    ("schedule", po::value(&o.schedule)->value_name("NAME")->default_value(o.schedule),
     "memory per rank: the training schedule (as pipe-train's --schedule)")
    ("virtual-stages", po::value(&o.virtual_stages)->value_name("V"),
     "memory per rank: chunks per stage (default: the schedule's)")
    ("micro-batches", po::value(&o.micro_batches)->value_name("M")->default_value(o.micro_batches),
     "memory per rank: micro-batches per step")
    ("micro-batch-size", po::value(&o.micro_batch_size)->value_name("B")->default_value(o.micro_batch_size),
     "memory per rank: samples per micro-batch")
    ("optimizer", po::value(&o.optimizer)->value_name("adamw|sgd")->default_value(o.optimizer),
     "memory per rank: the optimizer's state")
    ("dtype", po::value(&o.dtype)->value_name("fp32|bf16")->default_value(o.dtype),
     "memory per rank: bf16 adds bfloat16 copies of the parameters")
    ("device", po::value(&o.device)->value_name("cpu|cuda")->default_value(o.device),
     "memory per rank: cpu adds what the CPU backend's libraries hold beside the tensors (10 MiB, measured), to "
     "predict the resident memory; cuda counts the tensors, what the GPU's allocator holds. Attention keeps each "
     "row's output and log-sum-exp instead of the T x T probabilities where the device runs flash attention "
     "(cpu from 1024 tokens, cuda from 2048)")
    ("activation-checkpoint-interval", po::value(&o.checkpoint_interval)->value_name("K")->default_value(0),
     "memory per rank: keep only every K layers' input (0: off)")
    ("zero", po::value(&o.zero)->value_name("0|1")->default_value(0),
     "memory per rank: 1 splits the optimizer's state (and bf16's float32 masters) over the data-parallel "
     "replicas (ZeRO stage 1)")
    ("memory-limit", po::value(&o.memory_limit)->value_name("SIZE"),
     "bytes per rank (8GiB, 512MiB, ...): the cut with the smallest bottleneck among those whose predicted peak "
     "fits (with virtual stages the method's cut, checked against it)")
    ("auto", po::bool_switch(&o.auto_plan),
     "search the plans for --world-size ranks and --global-batch samples per step (within --memory-limit): the "
     "pipe x data split, schedule, micro-batches, activation checkpointing, --zero and the partition; prints the "
     "fastest with their pipe-train commands")
    ("world-size", po::value(&o.world_size)->value_name("N"), "--auto: ranks in the job")
    ("global-batch", po::value(&o.global_batch)->value_name("G"), "--auto: samples per optimizer step, all replicas")
    ("gflops", po::value(&o.gflops)->value_name("R"),
     "the device rate per rank in GFLOP/s: --auto's (default: a GEMM measured here), or, without --auto, a "
     "predicted step time for the run described")
    ("profile", po::value(&o.profiles)->value_name("FILE")->composing(),
     "calibrate the rate (--auto's, or a predicted step time without it) and the F:B:W shares from pipe-train --profile-out FILE of this model; repeat it "
     "with runs at other --micro-batch-size values to fit a fixed cost per layer and micro-batch as well")
    ("top", po::value(&o.top)->value_name("K")->default_value(o.top), "--auto: how many plans to print")
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
  for (std::size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i]) || out[i] < 0)
      throw libpipe::Error("--weights: item " + std::to_string(i) + " is " + std::to_string(out[i]) +
                           ": weights are finite and not negative");
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
  for (std::size_t s = 0; s < sw.size(); ++s)
    if (!std::isfinite(sw[s]))
      throw libpipe::Error("--weights: stage " + std::to_string(s) + "'s weights sum past the largest double; scale "
                           "them down");
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
  libpipe::account_attention(d, libpipe::parse_device(o.device));  // as pipe-train does once it has its device
  libpipe::MemoryModelOptions mo;
  mo.micro_batch_size = o.micro_batch_size;
  mo.optimizer = o.optimizer;
  mo.bf16 = o.dtype == "bf16";
  mo.checkpoint_interval = o.checkpoint_interval;
  mo.optimizer_shards = o.zero == 1 ? o.data_parallel : 1;
  mo.runtime_bytes = libpipe::runtime_bytes(libpipe::parse_device(o.device));
  const int V = libpipe::schedule_virtual_stages(o.schedule, o.virtual_stages);
  libpipe::PartitionPlan plan;
  double limit = 0;
  if (!o.memory_limit.empty()) {
    limit = libpipe::parse_byte_size(o.memory_limit);
    libpipe::MemoryLimitRequest request{o.schedule, o.micro_batches, mo, limit, o.data_parallel, V};
    plan = libpipe::plan_partition_memory(d, o.partition, o.stages, request);  // V > 1: the chunk cut, checked
    if (V > 1) plan = libpipe::plan_partition(d, o.partition, o.stages);  // the stage table below: S stages
  } else {
    plan = libpipe::plan_partition(d, o.partition, o.stages);
  }
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
  // Memory per rank under the schedule: the model cut into S x V chunks as pipe-train cuts it.
  const libpipe::ChunkPlacement placement = libpipe::schedule_placement(o.schedule);
  const libpipe::Parts chunk_parts =
      V == 1 ? plan.parts : libpipe::plan_chunk_partition(d, o.partition, o.stages, V, placement).parts;
  std::vector<libpipe::Schedule> schedules;
  for (int s = 0; s < o.stages; ++s)
    schedules.push_back(libpipe::make_schedule(o.schedule, o.stages, o.micro_batches, s, V));
  const std::vector<libpipe::RankMemory> memory = libpipe::predict_memory(d, chunk_parts, schedules, mo);
  // With a device rate (--gflops, or --profile files), the step this run would take (the planner's prediction).
  double step_seconds = 0, step_bubble = 0;
  std::string rate_source;
  if (o.gflops > 0 || !o.profiles.empty()) {
    libpipe::AutoPlanRequest rate;
    rate_source = pipe_apps::calibrate_rate(d, o.profiles, o.gflops, rate);
    const libpipe::SimResult sim = libpipe::predict_step(d, chunk_parts, o.schedule, o.stages, V, o.micro_batches,
                                                         o.micro_batch_size, o.checkpoint_interval, rate);
    step_seconds = sim.makespan;
    step_bubble = sim.bubble;
  }
  json memory_json = json::array();
  for (const auto& m : memory)
    memory_json.push_back({{"stage", m.stage}, {"parameters", m.parameters}, {"bf16_copies", m.bf16_copies},
                           {"gradients", m.gradients}, {"optimizer", m.optimizer}, {"activations", m.activations},
                           {"peak_in_flight", m.peak_in_flight}, {"workspace", m.workspace}, {"buffers", m.buffers},
                           {"runtime", m.runtime}, {"total", m.total()}});
  if (o.json) {
    json j = {{"model", d.name}, {"layers", d.layers.size()}, {"params", d.params}, {"method", plan.method},
              {"stages", o.stages}, {"data_parallel", o.data_parallel}, {"world_size", o.stages * o.data_parallel},
              {"parts", plan.parts}, {"stage_weights", sw}, {"bottleneck", sw[b]}, {"bottleneck_stage", b},
              {"imbalance", plan.imbalance()}, {"stage_details", stages},
              {"memory", {{"schedule", o.schedule}, {"virtual_stages", V}, {"micro_batches", o.micro_batches},
                          {"micro_batch_size", o.micro_batch_size}, {"optimizer", o.optimizer},
                          {"dtype", o.dtype}, {"activation_checkpoint_interval", o.checkpoint_interval},
                          {"zero", o.zero}, {"memory_limit", limit}, {"per_rank", memory_json}}}};
    if (step_seconds > 0) j["predicted_step_seconds"] = step_seconds, j["predicted_bubble"] = step_bubble;
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
  std::string settings = o.optimizer + ", " + o.dtype;
  if (o.checkpoint_interval > 0) settings += ", activation checkpointing every " + std::to_string(o.checkpoint_interval);
  if (o.zero == 1) settings += ", optimizer state split over " + std::to_string(o.data_parallel) + " replicas (--zero 1)";
  std::printf("memory per rank (MB), %s%s, %d micro-batches of %lld, %s:\n", o.schedule.c_str(),
              V > 1 ? (" with " + std::to_string(V) + " chunks per stage").c_str() : "", o.micro_batches,
              static_cast<long long>(o.micro_batch_size), settings.c_str());
  std::printf("%-6s %11s %11s %11s %11s %14s %9s %10s %9s %9s %11s\n", "stage", "parameters", "bf16 copy",
              "gradients", "optimizer", "activations", "(held)", "workspace", "buffers", "runtime", "total");
  for (const auto& m : memory)
    std::printf("%-6d %11.1f %11.1f %11.1f %11.1f %14.1f %9d %10.1f %9.1f %9.1f %11.1f\n", m.stage, m.parameters / 1e6,
                m.bf16_copies / 1e6, m.gradients / 1e6, m.optimizer / 1e6, m.activations / 1e6, m.peak_in_flight,
                m.workspace / 1e6, m.buffers / 1e6, m.runtime / 1e6, m.total() / 1e6);
  std::printf("(held: chunk micro-batches of activations at the schedule's peak; runtime: the %s libraries' own "
              "memory (--device); the process before the model is built is not counted)\n", o.device.c_str());
  if (step_seconds > 0)
    std::printf("predicted step: %.4f s, %.1f samples/s, bubble %.1f%% (device rate: %s)\n", step_seconds,
                static_cast<double>(o.micro_batches) * static_cast<double>(o.micro_batch_size) * o.data_parallel /
                    step_seconds,
                100 * step_bubble, rate_source.c_str());
  if (limit > 0 && V > 1)
    std::printf("memory limit %s per rank: the method's cut into %d x %d chunks fits every rank (with virtual "
                "stages it is checked, not moved)\n", libpipe::byte_size_str(limit).c_str(), o.stages, V);
  else if (limit > 0)
    std::printf("memory limit %s per rank: the cut above is the most balanced one that fits%s\n",
                libpipe::byte_size_str(limit).c_str(),
                plan.parts == libpipe::plan_partition(d, o.partition, o.stages).parts
                    ? " (the method's own)"
                    : " (the method's own cut does not)");
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
                                "       pipe-plan --weights 3,1,4,1,5 --stages 2 [--json]\n"
                                "       pipe-plan --auto --model M --world-size N --global-batch G "
                                "[--memory-limit SIZE] [--profile FILE]\n\n"
                                "Plans a pipeline partition without MPI and without allocating parameters.",
                                vm))
      return 0;
    o.builtin_plugins = !vm["no-builtin-plugins"].as<bool>();
    if (vm.count("weights") && o.weights.empty()) throw libpipe::Error("--weights: the list is empty");
    if (vm.count("virtual-stages") && o.virtual_stages < 1)
      throw libpipe::Error("--virtual-stages must be at least 1, not " + std::to_string(o.virtual_stages));
    if (o.top < 1) throw libpipe::Error("--top must be at least 1, not " + std::to_string(o.top));
    if (o.stages < 1) throw libpipe::Error("--stages must be at least 1, not " + std::to_string(o.stages));
    if (o.data_parallel < 1)
      throw libpipe::Error("--data-parallel must be at least 1, not " + std::to_string(o.data_parallel));
    if (o.micro_batches < 1)
      throw libpipe::Error("--micro-batches must be at least 1, not " + std::to_string(o.micro_batches));
    if (o.micro_batch_size < 1)
      throw libpipe::Error("--micro-batch-size must be at least 1, not " + std::to_string(o.micro_batch_size));
    if (o.optimizer != "adamw" && o.optimizer != "sgd")
      throw libpipe::Error("--optimizer '" + o.optimizer + "': expected adamw or sgd");
    if (o.dtype != "fp32" && o.dtype != "bf16")
      throw libpipe::Error("--dtype '" + o.dtype + "': expected fp32 or bf16");
    if (o.zero != 0 && o.zero != 1) throw libpipe::Error("--zero " + std::to_string(o.zero) + ": expected 0 or 1");
    if (o.device != "cpu" && o.device != "cuda")
      throw libpipe::Error("--device '" + o.device + "': expected cpu or cuda");
    if (o.checkpoint_interval < 0)
      throw libpipe::Error("--activation-checkpoint-interval must be 0 or more, not " +
                           std::to_string(o.checkpoint_interval));
    o.partition = libpipe::PartitionMethod::parse(!o.weights.empty() && o.method == "balanced" ? "parameters" : o.method);
    if (vm.count("gflops") && !(o.gflops > 0)) throw libpipe::Error("--gflops must be positive");
    if (vm.count("gflops") && !o.profiles.empty()) throw libpipe::Error("--gflops and --profile both give the rate");
    if (o.auto_plan) {
      if (!o.weights.empty()) throw libpipe::Error("--auto plans a model, not --weights");
      if (o.world_size < 1) throw libpipe::Error("--auto needs --world-size N (the job's ranks)");
      if (o.global_batch < 1) throw libpipe::Error("--auto needs --global-batch G (samples per optimizer step)");
      libpipe::LayerRegistry registry;
      libpipe::load_plugins(registry, libpipe::PluginSearch{o.builtin_plugins, true, o.plugin_dirs});
      auto d = libpipe::describe_model(libpipe::load_model_file(libpipe::resolve_model_path(o.model)), registry);
      libpipe::account_attention(d, libpipe::parse_device(o.device));  // as pipe-train --plan auto does
      pipe_plan::AutoFlags f;
      f.model = o.model;
      f.world_size = o.world_size;
      f.global_batch = o.global_batch;
      f.memory_limit = o.memory_limit.empty() ? 0 : libpipe::parse_byte_size(o.memory_limit);
      f.gflops = o.gflops;
      f.profiles = o.profiles;
      f.top = o.top;
      f.optimizer = o.optimizer;
      f.bf16 = o.dtype == "bf16";
      f.runtime_bytes = libpipe::runtime_bytes(libpipe::parse_device(o.device));
      // Time is what the planner balances: FLOPs, unless a method is asked for.
      f.method = libpipe::PartitionMethod::parse(vm["partition-method"].defaulted() ? "flops" : o.method);
      f.json = o.json;
      return pipe_plan::plan_auto(d, f);
    }
    return o.weights.empty() ? plan_model(o) : plan_weights(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipe-plan: error: %s\n", e.what());
    return 1;
  }
}
