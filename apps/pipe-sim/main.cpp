// pipe-sim: a pipeline step predicted before anything runs. It simulates a
// schedule (any of schedule_kinds(), with V chunks per stage where the kind
// has them) on S stages and M micro-batches with per-stage costs (uniform, listed, or from a model's FLOPs through the same
// partition as pipe-plan) and prints the step x stage grid, the makespan and
// the bubble beside the closed form; --svg draws the timeline, --trace writes
// it as a Chrome trace. --from-trace draws a real run's Chrome trace with the
// same renderer, so prediction and measurement can be put side by side.
#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "parse_flags.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/model.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/schedule.hpp"
#include "pipe/simulate.hpp"
#include "pipe/timeline.hpp"
#include "pipe/work_kind.hpp"
#include "profile_file.hpp"
#include "svg.hpp"
#include "text_file.hpp"

namespace po = boost::program_options;
using nlohmann::json;

namespace {

struct Options {
  int stages = 4;
  int micro_batches = 8;
  std::string schedule = "1f1b";
  int virtual_stages = 0;  // 0: the schedule's default
  bool builtin_plugins = true;
  double forward = 1, backward = 2, weight = 0;
  std::string costs;  // --costs F1:B1[:W1],... or F,B,W
  std::string profile;  // --profile FILE: costs measured by pipe-train --profile-out
  std::string model;  // --model: costs from FLOPs
  std::string method = "parameters";
  double gflops = 100;
  int micro_batch_size = 16;
  std::string device = "cpu";  // --device: what attention keeps for backward (flash or the T x T probabilities)
  long long max_slots = 1LL << 24;  // --max-slots: stages x chunks per stage x micro-batches simulated at most
  double latency = 0;
  std::vector<std::string> plugin_dirs;
  std::string svg, trace, from_trace, title;
  bool json = false, grid = false, compare = false, print = false;
  std::string schedule_file;
  std::vector<libpipe::Schedule> custom;  // read from --schedule-file
};

po::options_description flags(Options& o) {
  po::options_description d("Options");
  // clang-format off
  d.add_options()
    ("stages", po::value(&o.stages)->value_name("S")->default_value(o.stages),
     "pipeline stages (with --costs and no --stages: one per entry)")
    ("max-slots", po::value(&o.max_slots)->value_name("N")->default_value(o.max_slots),
     "simulate at most N = stages x chunks per stage x micro-batches (default 2^24); memory and time grow with N")
    ("micro-batches", po::value(&o.micro_batches)->value_name("M")->default_value(o.micro_batches),
     "micro-batches per step")
    ("schedule", po::value(&o.schedule)->value_name("KIND")->default_value(o.schedule),
     "the schedule (the list below says what each needs)")
    ("virtual-stages", po::value(&o.virtual_stages)->value_name("V"),
     "chunks per stage for interleaved-1f1b (default 2); zb-v always runs 2. Costs stay per stage: a chunk costs "
     "1/V of its stage's (with --model, the model is split into S x V chunks instead)")
    ("forward", po::value(&o.forward)->value_name("F")->default_value(o.forward), "forward time per micro-batch, every stage")
    ("backward", po::value(&o.backward)->value_name("B")->default_value(o.backward),
     "backward (input gradient) time per micro-batch, every stage")
    ("weight", po::value(&o.weight)->value_name("W")->default_value(o.weight),
     "weight-gradient time per micro-batch, every stage (0: included in --backward)")
    ("costs", po::value(&o.costs)->value_name("F,B,W | F:B[:W],..."),
     "F,B,W: relative times of one micro-batch on every stage (W = 0: included in B); or per-stage times, one "
     "F:B[:W] entry per stage")
    ("profile", po::value(&o.profile)->value_name("FILE"),
     "per-stage times measured by pipe-train --profile-out FILE (in seconds; --stages defaults to the run's)")
    ("model", po::value(&o.model)->value_name("FILE|NAME"),
     "times from this model's FLOPs, split as pipe-plan splits it: forward, backward-input and backward-weight a "
     "third each of a stage's "
     "FLOPs x --micro-batch-size / --gflops, in seconds")
    ("partition-method", po::value(&o.method)->value_name("METHOD")->default_value(o.method),
     "with --model: how layers are split (as pipe-plan and pipe-train)")
    ("gflops", po::value(&o.gflops)->value_name("R")->default_value(o.gflops), "with --model: assumed GFLOP/s per stage")
    ("micro-batch-size", po::value(&o.micro_batch_size)->value_name("B")->default_value(o.micro_batch_size),
     "with --model: samples per micro-batch")
    ("device", po::value(&o.device)->value_name("cpu|cuda")->default_value(o.device),
     "with --model: the device whose attention the activation memory counts (each row's output and log-sum-exp "
     "where it runs flash attention: cpu from 1024 tokens, cuda from 2048; the T x T probabilities below)")
    ("plugin-dir", po::value(&o.plugin_dirs)->value_name("DIR")->composing(), "with --model: load layer plugins from DIR")
    ("no-builtin-plugins", po::bool_switch(), "with --model: do not load the project's own layer plugins")
    ("latency", po::value(&o.latency)->value_name("T")->default_value(o.latency),
     "point-to-point latency added to every message, in the unit of the costs")
    ("svg", po::value(&o.svg)->value_name("FILE"), "draw the timeline into FILE (SVG)")
    ("trace", po::value(&o.trace)->value_name("FILE"), "write the simulated timeline as a Chrome trace (JSON)")
    ("from-trace", po::value(&o.from_trace)->value_name("FILE"),
     "instead of simulating, read a Chrome trace (e.g. a real run's) and report and draw it")
    ("title", po::value(&o.title)->value_name("TEXT"), "title of the SVG")
    ("grid", po::bool_switch(&o.grid), "print the step x stage grid (printed anyway when it is small)")
    ("print", po::bool_switch(&o.print),
     "print the schedules of every stage in their text form (one line per stage, steps apart by '|'), which "
     "--schedule-file here and in pipe-train reads back: a start for writing one by hand")
    ("schedule-file", po::value(&o.schedule_file)->value_name("FILE"),
     "simulate the schedule written in FILE (the text form of --print) once the checker has proven it; its stage "
     "lines give --stages and its micro-batches --micro-batches")
    ("compare", po::bool_switch(&o.compare),
     "simulate every training schedule with the same stages, micro-batches and costs, and print one table "
     "(makespan, bubble, theory, most activations held by a stage); with --json, one object per schedule")
    ("json", po::bool_switch(&o.json), "print one JSON object instead of text")
    ("help,h", "show this help");
  // clang-format on
  return d;
}

bool given(const po::variables_map& vm, const char* name) { return vm.count(name) && !vm[name].defaulted(); }

// "1.5" -> 1.5; anything else is an error naming the flag and item.
double parse_number(const std::string& text, const std::string& what) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != text.size()) throw libpipe::Error(what + ": '" + text + "' is not a number");
  return v;
}

std::vector<libpipe::StageCosts> parse_costs(const std::string& text) {
  std::vector<libpipe::StageCosts> out;
  if (text.empty()) throw libpipe::Error("--costs: the list is empty");
  const bool plain = text.find(':') == std::string::npos;  // numbers only: "F,B,W" (or "F,B") for every stage
  const auto commas = std::count(text.begin(), text.end(), ',');
  if (plain && commas > 2)
    throw libpipe::Error("--costs '" + text + "': give F,B[,W] for every stage, or one F:B[:W] entry per stage");
  if (plain && commas >= 1) {
    std::vector<std::string> fields;
    std::stringstream items(text);
    for (std::string f; std::getline(items, f, ',');) fields.push_back(f);
    const std::string what = "--costs '" + text + "' (F,B,W)";
    if (fields.size() < 2) throw libpipe::Error(what + " needs F and B");
    libpipe::StageCosts c;
    c.forward = parse_number(fields[0], what);
    c.backward_input = parse_number(fields[1], what);
    c.backward_weight = fields.size() == 3 ? parse_number(fields[2], what) : 0;
    return {c};
  }
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    const std::string what = "--costs entry " + std::to_string(out.size()) + " ('" + item + "')";
    std::vector<std::string> parts;
    std::stringstream fields(item);
    std::string f;
    while (std::getline(fields, f, ':')) parts.push_back(f);
    if (parts.size() < 2 || parts.size() > 3) throw libpipe::Error(what + " is not F:B or F:B:W");
    libpipe::StageCosts c;
    c.forward = parse_number(parts[0], what);
    c.backward_input = parse_number(parts[1], what);
    c.backward_weight = parts.size() == 3 ? parse_number(parts[2], what) : 0;
    out.push_back(c);
  }
  if (out.empty()) throw libpipe::Error("--costs: the list is empty");
  return out;
}

// `what` names the file in errors, flag and path ("--profile FILE"). Only a regular file is read: a FIFO or a
// device would read for ever.
// A time with its unit: seconds as s/ms/us by magnitude, abstract units as
// they are.
std::string time_text(double v, const std::string& unit) {
  char b[48];
  if (unit == "units") {
    std::snprintf(b, sizeof b, "%.6g unit%s", v, v == 1 ? "" : "s");
  } else if (unit != "s") {
    std::snprintf(b, sizeof b, "%.6g %s", v, unit.c_str());
  } else if (v != 0 && std::fabs(v) < 1e-3) {
    std::snprintf(b, sizeof b, "%.4g us", v * 1e6);
  } else if (v != 0 && std::fabs(v) < 1) {
    std::snprintf(b, sizeof b, "%.4g ms", v * 1e3);
  } else {
    std::snprintf(b, sizeof b, "%.4g s", v);
  }
  return b;
}

std::string percent(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%%", 100 * v);
  return b;
}

// Where the costs come from, for the report and the JSON.
struct CostSource {
  std::vector<libpipe::StageCosts> costs;
  std::string unit = "units";
  std::string text;  // one line
  json extra = json::object();
  bool model_based = false;  // per chunk from the model's split (no scaling by V)
  std::vector<double> activation_bytes;  // with a model: what one micro-batch keeps on each chunk, in bytes
  std::vector<double> gradient_bytes;    // ... and the gradients its layers receive, kept from its B to its W
};

// Costs per chunk of the model split into `chunks` parts (one per stage without virtual stages).
// --profile: a pipe-train run's measured per-stage costs.
CostSource costs_from_profile(const std::string& path) {
  const pipe_apps::ProfileFile profile = pipe_apps::read_profile_file(path);
  CostSource c;
  c.unit = "s";
  c.costs = profile.costs;
  c.text = "costs per stage measured by pipe-train (" + profile.model + ", " + profile.schedule +
           ", micro-batch size " + std::to_string(profile.micro_batch_size) + ") from " + path;
  c.extra = {{"profile", path}};
  return c;
}

CostSource costs_from_model(const Options& o, int virtual_stages, libpipe::ChunkPlacement placement) {
  if (!(o.gflops > 0) || !std::isfinite(o.gflops))
    throw libpipe::Error("--gflops must be a positive number, not " + std::to_string(o.gflops));
  if (o.micro_batch_size < 1)
    throw libpipe::Error("--micro-batch-size must be at least 1, not " + std::to_string(o.micro_batch_size));
  libpipe::LayerRegistry registry;
  libpipe::load_plugins(registry, libpipe::PluginSearch{o.builtin_plugins, true, o.plugin_dirs});
  auto model = libpipe::load_model_file(libpipe::resolve_model_path(o.model));
  auto d = libpipe::describe_model(model, registry);
  libpipe::account_attention(d, libpipe::parse_device(o.device));  // as pipe-train does once it has its device
  // As pipe-train cuts it: a V-shaped placement balances each stage's two chunks together.
  const int chunks = o.stages * virtual_stages;
  auto plan = libpipe::plan_chunk_partition(d, libpipe::PartitionMethod::parse(o.method), o.stages, virtual_stages,
                                            placement);
  CostSource c;
  c.unit = "s";
  char gflops[32];
  std::snprintf(gflops, sizeof gflops, "%g", o.gflops);
  json stage_flops = json::array();
  for (int s = 0; s < chunks; ++s) {
    std::int64_t flops = 0;  // forward + backward, per sample
    for (int i = plan.parts[s]; i < plan.parts[s + 1]; ++i) flops += d.layers[i].description.flops;
    stage_flops.push_back(flops);
    const double seconds = static_cast<double>(flops) * o.micro_batch_size / (o.gflops * 1e9);
    // A layer's backward does about twice its forward's FLOPs, half for the input's gradient (B) and half for
    // the weights' (W): F = B = W, a third each.
    c.costs.push_back({seconds / 3, seconds / 3, seconds / 3});
    double bytes = 0;  // activations kept for backward, per micro-batch
    for (int i = plan.parts[s]; i < plan.parts[s + 1]; ++i)
      bytes += static_cast<double>(d.layers[i].description.activation_bytes) * o.micro_batch_size;
    c.activation_bytes.push_back(bytes);
    double gradients = 0;
    for (int i = plan.parts[s]; i < plan.parts[s + 1]; ++i)
      gradients += static_cast<double>(libpipe::numel(d.layers[i].description.output.shape) *
                                       libpipe::dtype_size(d.layers[i].description.output.dtype)) *
                   o.micro_batch_size;
    c.gradient_bytes.push_back(gradients);
  }
  c.model_based = true;
  c.text = "costs from model " + d.name + " (" + libpipe::with_commas(d.params) + " parameters) split by " +
           plan.method + (chunks != o.stages ? " into " + std::to_string(chunks) + " chunks" : "") + ", micro-batch size " +
           std::to_string(o.micro_batch_size) + ", at " + gflops + " GFLOP/s, attention's memory as on " + o.device;
  c.extra = {{"model", d.name},    {"partition_method", plan.method},        {"parts", plan.parts},
             {"gflops", o.gflops}, {"micro_batch_size", o.micro_batch_size}, {"stage_flops_per_sample", stage_flops},
             {"device", o.device}};
  return c;
}

// The costs per chunk simulate() takes for `kind` with V chunks per stage (and, with a model, each chunk's
// activation bytes): a model is split into S x V chunks; stage costs (uniform or --costs) are shared by the
// stage's chunks, 1/V each.
CostSource chunk_costs(const Options& o, const CostSource& src, const std::string& kind, int V) {
  if (V == 1) return src;
  if (src.model_based) return costs_from_model(o, V, libpipe::schedule_placement(kind));
  CostSource out = src;
  out.costs = libpipe::chunk_costs_from_stages(src.costs, o.stages, V, libpipe::schedule_placement(kind));
  return out;
}

// With a model: the most activation bytes each stage holds at once under `schedules` (a chunk's micro-batch
// from its F to its W, and the gradients its layers received from its B to its W: libpipe::peak_activation_bytes,
// as the memory model counts them), given each global chunk's bytes per micro-batch.
std::vector<double> peak_activation_bytes(const std::vector<libpipe::Schedule>& schedules,
                                          const std::vector<double>& chunk_bytes,
                                          const std::vector<double>& gradient_bytes) {
  std::vector<double> peaks;
  for (const libpipe::Schedule& sch : schedules)
    peaks.push_back(libpipe::peak_activation_bytes(sch, chunk_bytes, nullptr, &gradient_bytes));
  return peaks;
}

std::string bytes_text(double b) {
  char t[32];
  if (b >= 1e9)
    std::snprintf(t, sizeof t, "%.2f GB", b / 1e9);
  else if (b >= 1e6)
    std::snprintf(t, sizeof t, "%.1f MB", b / 1e6);
  else
    std::snprintf(t, sizeof t, "%.0f kB", b / 1e3);
  return t;
}

std::string join_ints(const std::vector<int>& v) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? " " : "") + std::to_string(v[i]);
  return out;
}

// --compare: every training schedule on the same S, M and costs, side by side. A schedule that cannot run
// this S and M (zb-h1 needs M >= S) gets its reason in the table instead of numbers.
int compare_schedules(const Options& o, const CostSource& src) {
  if (!o.svg.empty() || !o.trace.empty() || o.grid)
    throw libpipe::Error("--compare prints one table; --svg, --trace and --grid are for one schedule");
  json rows = json::array();
  if (!o.json)
    std::printf("pipe-sim: %d stages, %d micro-batches; %s\n%-17s %3s %14s %9s %9s %16s\n", o.stages,
                o.micro_batches, src.text.c_str(), "schedule", "V", "makespan", "bubble", "theory",
                "peak activations");
  for (const std::string& kind : libpipe::schedule_kinds()) {
    if (!libpipe::is_training_schedule(kind)) continue;
    try {
      // --virtual-stages goes to the kinds that take any V; the others run their own.
      int V = libpipe::schedule_virtual_stages(kind, 0);
      if (o.virtual_stages > 0) {
        try {
          V = libpipe::schedule_virtual_stages(kind, o.virtual_stages);
        } catch (const libpipe::Error&) {
        }
      }
      const libpipe::SimResult r = libpipe::simulate(kind, o.stages, o.micro_batches, chunk_costs(o, src, kind, V).costs,
                                                       o.latency, /*with_timeline=*/false, V);
      const int peak = *std::max_element(r.peak_activations.begin(), r.peak_activations.end());
      rows.push_back({{"schedule", kind},
                      {"virtual_stages", V},
                      {"makespan", r.makespan},
                      {"bubble", r.bubble},
                      {"theoretical_bubble", std::isfinite(r.theoretical_bubble) ? json(r.theoretical_bubble) : json()},
                      {"peak_activations", r.peak_activations}});
      if (!o.json)
        std::printf("%-17s %3d %14s %9s %9s %16s\n", kind.c_str(), V, time_text(r.makespan, src.unit).c_str(),
                    percent(r.bubble).c_str(),
                    std::isfinite(r.theoretical_bubble) ? percent(r.theoretical_bubble).c_str() : "-",
                    (std::to_string(peak) + (V > 1 ? " /" + std::to_string(V) : "")).c_str());
    } catch (const libpipe::Error& e) {
      rows.push_back({{"schedule", kind}, {"error", e.what()}});
      if (!o.json) std::printf("%-17s %s\n", kind.c_str(), e.what());
    }
  }
  if (o.json) {
    std::cout << json{{"stages", o.stages}, {"micro_batches", o.micro_batches}, {"time_unit", src.unit},
                      {"schedules", rows}}
                     .dump()
              << "\n";
  } else {
    std::printf(
        "peak activations: the most micro-batches whose activations one stage holds at once (\"/V\": chunk "
        "micro-batches, each 1/V of a stage's)\n");
  }
  return 0;
}

// --schedule-file: the file's schedules, proven, set the schedule, stages and micro-batches.
void read_schedule_file(Options& o, const po::variables_map& vm) {
  if (given(vm, "schedule")) throw libpipe::Error("--schedule and --schedule-file both choose the schedule; use one");
  if (o.compare) throw libpipe::Error("--compare simulates the built-in schedules; it cannot go with --schedule-file");
  o.custom =
      libpipe::parse_schedules(pipe_apps::read_text_file(o.schedule_file, "--schedule-file " + o.schedule_file),
                               o.schedule_file);
  libpipe::check_schedules(o.custom);
  const int S = o.custom[0].stages, M = o.custom[0].micro_batches;
  if (given(vm, "stages") && o.stages != S)
    throw libpipe::Error("--stages " + std::to_string(o.stages) + " but " + o.schedule_file + " has " +
                         std::to_string(S) + " stage lines");
  if (given(vm, "micro-batches") && o.micro_batches != M)
    throw libpipe::Error("--micro-batches " + std::to_string(o.micro_batches) + " but " + o.schedule_file + " runs " +
                         std::to_string(M));
  if (given(vm, "virtual-stages") && o.virtual_stages != o.custom[0].virtual_stages)
    throw libpipe::Error("--virtual-stages " + std::to_string(o.virtual_stages) + " but " + o.schedule_file +
                         " runs " + std::to_string(o.custom[0].virtual_stages) + " chunks per stage");
  o.stages = S;
  o.micro_batches = M;
  o.virtual_stages = o.custom[0].virtual_stages;
  o.schedule = "custom";
}

int run_simulation(Options& o, const po::variables_map& vm) {
  if (!o.schedule_file.empty()) read_schedule_file(o, vm);
  if (o.micro_batches < 1)
    throw libpipe::Error("--micro-batches must be at least 1, not " + std::to_string(o.micro_batches));
  (void)libpipe::is_training_schedule(o.schedule);  // an unknown kind fails here, before any model is loaded
  if (given(vm, "virtual-stages") && o.virtual_stages < 1)
    throw libpipe::Error("--virtual-stages must be at least 1, not " + std::to_string(o.virtual_stages));
  if (!o.compare) o.virtual_stages = libpipe::schedule_virtual_stages(o.schedule, o.virtual_stages);
  const bool uniform_flags = given(vm, "forward") || given(vm, "backward") || given(vm, "weight");
  if (int(!o.costs.empty()) + int(!o.model.empty()) + int(!o.profile.empty()) > 1)
    throw libpipe::Error("--costs, --model and --profile each give the costs; use one");
  if (uniform_flags && (!o.costs.empty() || !o.model.empty() || !o.profile.empty()))
    throw libpipe::Error(std::string("--forward, --backward and --weight set uniform costs; they cannot go with ") +
                         (!o.costs.empty() ? "--costs" : !o.model.empty() ? "--model" : "--profile"));
  if (o.json && o.grid) throw libpipe::Error("--grid prints text; it cannot go with --json");
  if (o.max_slots < 1) throw libpipe::Error("--max-slots must be at least 1, not " + std::to_string(o.max_slots));
  (void)libpipe::parse_device(o.device);  // an unknown name fails here, before any model is loaded
  if (given(vm, "device") && o.model.empty()) throw libpipe::Error("--device applies with --model only");

  CostSource src;
  if (given(vm, "costs")) {
    src.costs = parse_costs(o.costs);
    const bool uniform = o.costs.find(':') == std::string::npos && src.costs.size() == 1 &&
                         o.costs.find(',') != std::string::npos;
    if (!uniform) {
      if (!given(vm, "stages")) o.stages = static_cast<int>(src.costs.size());
      if (static_cast<int>(src.costs.size()) != o.stages)
        throw libpipe::Error("--costs has " + std::to_string(src.costs.size()) + " entries for " +
                             std::to_string(o.stages) + " stages (one F:B[:W] entry per stage)");
    }
    char b[160];
    std::snprintf(b, sizeof b, "relative costs per micro-batch on every stage: forward %g, backward %g, weight %g",
                  src.costs[0].forward, src.costs[0].backward_input, src.costs[0].backward_weight);
    src.text = uniform ? b : "costs per stage from --costs";
  }
  if (!o.profile.empty()) {
    src = costs_from_profile(o.profile);
    if (!given(vm, "stages")) o.stages = static_cast<int>(src.costs.size());
    if (static_cast<int>(src.costs.size()) != o.stages)
      throw libpipe::Error("--profile " + o.profile + " measured " + std::to_string(src.costs.size()) +
                           " stages, not --stages " + std::to_string(o.stages));
  }
  if (o.stages < 1) throw libpipe::Error("--stages must be at least 1, not " + std::to_string(o.stages));
  // A cap on the work (memory and time grow with the slots), with the flag that lifts it.
  const long long chunks_per_stage = o.compare ? 2 : std::max(1, o.virtual_stages);
  const long long slots = static_cast<long long>(o.stages) * chunks_per_stage * o.micro_batches;
  if (slots > o.max_slots)
    throw libpipe::Error("--stages " + libpipe::with_commas(o.stages) + " x " + std::to_string(chunks_per_stage) +
                         " chunk(s) per stage x --micro-batches " + libpipe::with_commas(o.micro_batches) + " = " +
                         libpipe::with_commas(slots) + " slots, over the cap of " + libpipe::with_commas(o.max_slots) +
                         " (raise --max-slots to simulate it: memory and time grow with the slots)");
  if (!o.model.empty()) {
    o.builtin_plugins = !vm["no-builtin-plugins"].as<bool>();
    src = costs_from_model(o, 1, libpipe::ChunkPlacement::looped);
  } else if (o.costs.empty() && o.profile.empty()) {
    src.costs = {{o.forward, o.backward, o.weight}};
    char b[160];
    if (libpipe::is_training_schedule(o.schedule))
      std::snprintf(b, sizeof b, "uniform costs per micro-batch: forward %g, backward %g, weight %g", o.forward,
                    o.backward, o.weight);
    else
      std::snprintf(b, sizeof b, "uniform cost per micro-batch: forward %g", o.forward);
    src.text = b;
  }

  double total_cost = 0;
  for (const libpipe::StageCosts& c : src.costs) total_cost += c.forward + c.backward_input + c.backward_weight;
  if (!(total_cost > 0))
    throw libpipe::Error("every cost is 0: nothing takes time to simulate (set --forward/--backward or --costs)");

  if (o.compare) return compare_schedules(o, src);
  auto all_schedules = [&] {
    if (!o.custom.empty()) return o.custom;
    std::vector<libpipe::Schedule> all;
    for (int s = 0; s < o.stages; ++s)
      all.push_back(libpipe::make_schedule(o.schedule, o.stages, o.micro_batches, s, o.virtual_stages));
    return all;
  };
  if (o.print) {
    std::vector<libpipe::Schedule> all = all_schedules();
    libpipe::check_schedules(all);
    std::cout << libpipe::format_schedules(all);
    return 0;
  }

  // The timeline is drawn or written only with --svg or --trace.
  const bool with_timeline = !o.svg.empty() || !o.trace.empty();
  const int V = o.virtual_stages;
  const CostSource chunked = chunk_costs(o, src, o.schedule, V);
  const std::vector<libpipe::StageCosts>& costs = chunked.costs;
  // With a model, training schedules of a size worth listing: the peak activation bytes per stage too.
  std::vector<double> peak_bytes;
  if (src.model_based && libpipe::is_training_schedule(o.schedule) &&
      static_cast<long long>(o.stages) * V * o.micro_batches <= (1LL << 20))
    peak_bytes = peak_activation_bytes(all_schedules(), chunked.activation_bytes, chunked.gradient_bytes);
  libpipe::SimResult r = o.custom.empty() ? libpipe::simulate(o.schedule, o.stages, o.micro_batches, costs, o.latency,
                                                              with_timeline, V)
                                          : libpipe::simulate(o.custom, costs, o.latency, with_timeline);
  r.timeline.time_unit = src.unit;
  const std::string& unit = src.unit;

  char head[200];
  std::snprintf(head, sizeof head, "%s, %d stage%s%s, %d micro-batch%s", o.schedule.c_str(), o.stages,
                o.stages == 1 ? "" : "s", V > 1 ? (" x " + std::to_string(V) + " chunks").c_str() : "",
                o.micro_batches, o.micro_batches == 1 ? "" : "es");
  if (!o.svg.empty()) {
    pipe_sim::SvgOptions svg;
    const std::string theory = std::isfinite(r.theoretical_bubble) ? "theory " + percent(r.theoretical_bubble)
                                                                    : "no closed form";
    svg.title = o.title.empty() ? std::string(head) + ": makespan " + time_text(r.makespan, unit) + ", bubble " +
                                      percent(r.bubble) + " (" + theory + ")"
                                : o.title;
    pipe_apps::write_text_file(o.svg, pipe_sim::render_svg(r.timeline, svg));
  }
  if (!o.trace.empty()) pipe_apps::write_text_file(o.trace, libpipe::to_chrome_trace(r.timeline));

  if (o.json) {
    json costs_json = json::array();
    for (const auto& c : costs)
      costs_json.push_back(
          {{"forward", c.forward}, {"backward_input", c.backward_input}, {"backward_weight", c.backward_weight}});
    json j = {{"schedule", o.schedule}, {"stages", o.stages}, {"micro_batches", o.micro_batches},
              {"virtual_stages", V},
              {"makespan", r.makespan}, {"bubble", r.bubble}, {"theoretical_bubble", r.theoretical_bubble},
              {"busy", r.busy},         {"costs", costs_json}, {"latency", o.latency},
              {"time_unit", unit},      {"peak_activations", r.peak_activations}};
    if (!peak_bytes.empty()) j["peak_activation_bytes"] = peak_bytes;
    j.update(src.extra);
    if (!o.svg.empty()) j["svg"] = o.svg;
    if (!o.trace.empty()) j["trace"] = o.trace;
    std::cout << j.dump() << "\n";
    return 0;
  }

  const int steps = 2 * (o.micro_batches * V + o.stages - 1);
  if (o.grid || (o.stages <= 8 && steps <= 64)) {
    std::cout << libpipe::format_grid(all_schedules()) << "\n";
  }
  std::cout << "pipe-sim: " << head << "; " << src.text << "\n";
  if (src.costs.size() > 1 && o.stages <= 32) {
    // Abstract units go in the header, seconds in each cell (as s, ms or us).
    const bool abstract = unit == "units";
    auto cell = [&](double v) {
      char b[32];
      std::snprintf(b, sizeof b, "%.6g", v);
      return abstract ? std::string(b) : time_text(v, unit);
    };
    std::printf("%-6s %12s %12s %12s %12s%s\n", "stage", "forward", "backward", "weight", "busy",
                abstract ? "  (time units)" : "");
    for (int s = 0; s < o.stages; ++s) {
      const auto& c = src.costs[s];
      std::printf("%-6d %12s %12s %12s %12s\n", s, cell(c.forward).c_str(), cell(c.backward_input).c_str(),
                  cell(c.backward_weight).c_str(), cell(r.busy[s]).c_str());
    }
  }
  if (src.costs.size() > 1) {
    int slow = 0;
    auto slot = [&](int s) {
      return src.costs[s].forward + src.costs[s].backward_input + src.costs[s].backward_weight;
    };
    for (int s = 1; s < o.stages; ++s)
      if (slot(s) > slot(slow)) slow = s;
    std::cout << "slowest stage: " << slow << ", " << time_text(slot(slow), unit)
              << " per micro-batch (the makespan is at least M times that)\n";
  }
  std::cout << "makespan: " << time_text(r.makespan, unit) << "\n";
  std::cout << "bubble: " << percent(r.bubble);
  if (r.kind == "custom")
    std::cout << " (a schedule from a file has no closed form)\n";
  else if (!std::isfinite(r.theoretical_bubble))
    std::cout << " (" << r.kind << " has no closed form)\n";
  else
    std::cout << " (theoretical " << libpipe::theoretical_bubble_formula(r.kind)
              << " for equal stages: " << percent(r.theoretical_bubble) << ")\n";
  std::cout << "activations held at most (" << (V > 1 ? "chunk micro-batches, 1/" + std::to_string(V) + " of a stage's each" : "micro-batches")
            << ", per stage): " << join_ints(r.peak_activations) << "\n";
  if (!peak_bytes.empty()) {
    std::cout << "activation memory at most, per stage (bytes kept for backward, from describe):";
    for (double b : peak_bytes) std::cout << " " << bytes_text(b);
    std::cout << "\n";
  }
  if (!o.svg.empty()) std::cout << "wrote " << o.svg << "\n";
  if (!o.trace.empty()) std::cout << "wrote " << o.trace << "\n";
  return 0;
}

// Per row, the time spent in F, B or W (overlapping events counted once).
double compute_time(const libpipe::TimelineRow& row) {
  std::vector<std::pair<double, double>> spans;
  for (const auto& b : row.blocks)
    if (libpipe::is_compute(b.kind)) spans.emplace_back(b.start, b.end);
  std::sort(spans.begin(), spans.end());
  double total = 0, lo = 0, hi = -1;
  for (const auto& [a, z] : spans) {
    if (a > hi) {
      if (hi > lo) total += hi - lo;
      lo = a;
      hi = z;
    } else {
      hi = std::max(hi, z);
    }
  }
  if (hi > lo) total += hi - lo;
  return total;
}

int run_from_trace(const Options& o, const po::variables_map& vm) {
  for (const char* flag : {"costs", "model", "forward", "backward", "weight", "latency", "trace", "grid"})
    if (given(vm, flag))
      throw libpipe::Error(std::string("--from-trace draws a recorded run; --") + flag + " is for simulations");
  const std::string text = pipe_apps::read_text_file(o.from_trace, "--from-trace " + o.from_trace);
  libpipe::Timeline tl;
  try {
    tl = libpipe::timeline_from_chrome_trace(text);
  } catch (const libpipe::Error& e) {
    throw libpipe::Error("--from-trace " + o.from_trace + ": " + e.what());
  }
  if (tl.block_count() == 0)
    throw libpipe::Error("--from-trace " + o.from_trace +
                         ": no work to draw (no complete \"X\" events, nor \"B\"/\"E\" pairs)");
  const double span = tl.end() - tl.start();
  double busy = 0;
  json rows = json::array();
  for (const auto& row : tl.rows) {
    const double c = compute_time(row);
    busy += c;
    rows.push_back({{"name", row.name}, {"blocks", row.blocks.size()}, {"compute", c}});
  }
  const double bubble = span > 0 && !tl.rows.empty() ? 1 - busy / (span * static_cast<double>(tl.rows.size())) : 0;
  // Blocks whose category is no work kind's name (another tool's events, or a
  // trace written before the kinds had one name each).
  std::size_t unknown = 0;
  for (const auto& row : tl.rows)
    for (const auto& b : row.blocks) unknown += b.kind == libpipe::WorkKind::Other;
  if (!o.svg.empty()) {
    pipe_sim::SvgOptions svg;
    svg.title = o.title.empty() ? "trace " + o.from_trace : o.title;
    pipe_apps::write_text_file(o.svg, pipe_sim::render_svg(tl, svg));
  }
  if (o.json) {
    json j = {{"trace", o.from_trace}, {"rows", rows},     {"blocks", tl.block_count()},
              {"span", span},          {"bubble", bubble}, {"time_unit", tl.time_unit},
              {"other_blocks", unknown}};
    if (!o.svg.empty()) j["svg"] = o.svg;
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::cout << "trace " << o.from_trace << ": " << tl.rows.size() << " rows, " << tl.block_count() << " blocks over "
            << time_text(span, tl.time_unit) << "\n";
  std::cout << "bubble: " << percent(bubble) << " (share of rows x span not in forward or backward)\n";
  if (unknown > 0)
    std::cout << "note: " << unknown << " of " << tl.block_count()
              << " blocks are of no known work kind (drawn as other): their categories are not the names of "
                 "pipe/work_kind.hpp, which pipe-train and pipe-sim write\n";
  if (!o.svg.empty()) std::cout << "wrote " << o.svg << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    po::variables_map vm;
    if (!pipe_apps::parse_flags(argc, argv, flags(o),
                                "usage: pipe-sim --stages S --micro-batches M [--schedule KIND] [--virtual-stages V]\n"
                                "                [--forward F --backward B --weight W | --costs F,B,W | --costs "
                                "F:B,F:B,... | --model M | --profile FILE]\n"
                                "                [--svg FILE] [--trace FILE] [--grid] [--compare] [--print] [--json]\n"
                                "       pipe-sim --schedule-file FILE [costs as above] [--svg FILE] [--json]\n"
                                "       pipe-sim --from-trace TRACE.json [--svg FILE] [--json]\n\n"
                                "Simulates a pipeline schedule and reports the makespan and the bubble (or draws a "
                                "recorded\nChrome trace). Schedules (--schedule):\n" +
                                    libpipe::describe_schedule_kinds(),
                                vm))
      return 0;
    return o.from_trace.empty() ? run_simulation(o, vm) : run_from_trace(o, vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipe-sim: error: %s\n", e.what());
    return 1;
  }
}
