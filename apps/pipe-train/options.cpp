// pipe-train's flags, parsed with Boost.Program_options.
#include "options.hpp"

#include <boost/program_options.hpp>
#include <boost/regex.hpp>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <map>
#include <sstream>

#include "parse_flags.hpp"
#include "pipe/data.hpp"
#include "pipe/error.hpp"
#include "pipe/schedule.hpp"
#include "pipe/describe.hpp"
#include "pipe/paths.hpp"
#include "pipe/memory_partition.hpp"
#include "pipe/partition_method.hpp"

namespace po = boost::program_options;

namespace pipe_train {
namespace {

po::options_description describe_flags(Options& o) {
  po::options_description model("Model");
  model.add_options()
    ("model", po::value(&o.model)->value_name("FILE|NAME")->default_value(o.model),
     ("model file (TOML), or the name of a shipped model: " + pipe_apps::shipped_models_text()).c_str())
    ("plugin-dir", po::value(&o.plugin_dirs)->value_name("DIR")->composing(),
     "load every *.so in DIR as a layer plugin (repeatable; PIPE_PLUGIN_PATH adds more, colon-separated)")
    ("no-builtin-plugins", po::bool_switch(), "do not load the project's own layer plugins")
    ("seed", po::value(&o.seed)->value_name("N")->default_value(o.seed),
     "seed for the initial weights (each layer is seeded by its index) and for the data: which windows of "
     "--data (or which synthetic samples) each step draws");

  po::options_description parallel("Parallelism (world size = product of the axes)");
  parallel.add_options()
    ("stages", po::value<int>()->value_name("S"), "pipeline stages (default 1)")
    ("data-parallel", po::value<int>()->value_name("D"),
     "data-parallel replicas (default: world size / stages); data is the innermost axis, as in DeepSpeed")
    ("topology", po::value(&o.topology)->value_name("AXES"),
     "custom axis order and sizes instead of --stages/--data-parallel, outermost first, "
     "e.g. data=2,pipe=4 or pipe=2,data=2,model=2 (axes: pipe, data, model)")
    ("partition-method", po::value(&o.partition_method)->value_name("METHOD")->default_value(o.partition_method),
     libpipe::partition_methods_help().c_str())
    ("plan", po::value<std::string>()->value_name("auto"),
     "auto: the planner (pipe-plan --auto) picks the pipe x data split, schedule, micro-batches, activation "
     "checkpointing, --zero and the partition for the world size, --global-batch and --memory-limit; those flags "
     "are then not given")
    ("global-batch", po::value(&o.global_batch)->value_name("G"), "with --plan auto: samples per optimizer step")
    ("plan-profile", po::value(&o.plan_profiles)->value_name("FILE")->composing(),
     "with --plan auto: calibrate the planner's times from pipe-train --profile-out FILE of this model (repeatable, "
     "at several micro-batch sizes); default: a GEMM measured on rank 0")
    ("memory-limit", po::value(&o.memory_limit)->value_name("SIZE"),
     "bytes per rank (8GiB, 512MiB, ...): cut the model with the smallest bottleneck among the cuts whose predicted "
     "peak memory fits every rank (pipe-plan prints the prediction); with virtual stages the method's cut is "
     "checked against it, not moved");

  po::options_description device("Device");
  device.add_options()
    ("device", po::value(&o.device)->value_name("cpu|cuda"),
     "where each rank computes (default: cuda when this machine has a GPU, else cpu); on cuda each rank takes "
     "one GPU, chosen by its rank on the node")
    ("comm", po::value(&o.comm)->value_name("auto|nccl|mpi")->default_value(o.comm),
     "how activations, gradients and tied weights move between ranks: nccl (GPU to GPU), mpi (host memory; GPU "
     "tensors are staged through it), auto (nccl on cuda unless ranks on a node share a GPU, which NCCL refuses; "
     "mpi on cpu)")
    ("dtype", po::value(&o.dtype)->value_name("fp32|tf32|bf16")->default_value(o.dtype),
     "precision: fp32; tf32 (fp32 storage, TF32 tensor-core GEMMs, GPU only); bf16 (mixed precision: bf16 "
     "parameters and activations, fp32 master weights, gradients, optimizer state and loss; on the CPU it is "
     "emulated, with the GPU's rounding)");

  po::options_description training("Training");
  libpipe::TrainOptions& t = o.train;
  training.add_options()
    ("steps", po::value(&o.steps)->value_name("N")->default_value(o.steps), "optimizer steps to run (1 or more)")
    ("schedule", po::value(&t.schedule)->value_name("KIND")->default_value(t.schedule),
     "pipeline schedule for training: 1f1b (DeepSpeed's TrainSchedule), gpipe (fill-drain), zb-h1 "
     "(zero-bubble: weight gradients deferred into the bubble, at 1F1B's peak memory; needs micro-batches >= "
     "stages), interleaved-1f1b (Megatron's: V looped chunks per stage, the bubble shrinks V times; needs "
     "micro-batches a multiple of stages) or zb-v (zero-bubble over 2 chunks per stage in a V, at 1F1B's peak "
     "memory; needs micro-batches >= stages). All but 1f1b, gpipe and a file whose messages stay within their "
     "steps need --comm mpi")
    ("virtual-stages", po::value(&o.virtual_stages)->value_name("V"),
     "chunks per stage: the model is split into stages x V chunks with the partition method (none empty); "
     "interleaved-1f1b takes any V (default 2), zb-v runs 2, the others 1")
    ("schedule-file", po::value(&o.schedule_file)->value_name("FILE"),
     "run the schedule written in FILE (the text form of pipe-sim --print: one line per stage, steps apart by '|'), "
     "once the checker has proven it (pairing, order, no deadlock, buffers, W after B, reductions after the last W); "
     "its stage lines must match the stages, and --micro-batches defaults to its micro-batches; needs --comm mpi "
     "unless every message is received in the step it is sent")
    ("micro-batches", po::value(&t.micro_batches)->value_name("M")->default_value(t.micro_batches),
     "micro-batches per step and replica (gradient accumulation; 1 to 1,000,000)")
    ("micro-batch-size", po::value(&t.micro_batch_size)->value_name("B")->default_value(t.micro_batch_size),
     "samples per micro-batch (1 to 1,000,000); the global batch is B x M x data-parallel")
    ("optimizer", po::value(&t.optimizer.kind)->value_name("NAME")->default_value(t.optimizer.kind),
     "adamw (betas 0.9/0.95, decoupled weight decay) or sgd (momentum)")
    ("lr", po::value(&t.lr)->value_name("LR")->default_value(t.lr, "0.003"), "peak learning rate")
    ("warmup-steps", po::value(&t.warmup_steps)->value_name("N")->default_value(t.warmup_steps),
     "linear learning-rate warm-up over N steps (0 or more): step k (from 0) runs at lr x (k+1)/N, so the first at "
     "lr/N, never 0")
    ("lr-decay-steps", po::value(&t.decay_steps)->value_name("N"),
     "cosine decay to --min-lr over N steps after warm-up (default: the remaining steps; 0 = constant)")
    ("min-lr", po::value(&t.min_lr)->value_name("LR")->default_value(t.min_lr, "0"), "learning rate at the end of the decay")
    ("weight-decay", po::value(&t.optimizer.weight_decay)->value_name("W")->default_value(t.optimizer.weight_decay, "0.1"),
     "weight decay on weights and embeddings (not biases or norms)")
    ("momentum", po::value(&t.optimizer.momentum)->value_name("M")->default_value(t.optimizer.momentum, "0.9"),
     "sgd momentum")
    ("clip-grad-norm", po::value(&t.clip_grad_norm)->value_name("X")->default_value(t.clip_grad_norm, "1"),
     "clip the global gradient norm (over all stages) to X; 0 disables")
    ("zero", po::value(&t.zero)->value_name("0|1")->default_value(0),
     "1: ZeRO stage 1, the optimizer state (and bf16's float32 masters) split over the data-parallel replicas "
     "(gradients reduce-scattered, parameters all-gathered after the step; checkpoints hold the whole state and "
     "load with or without it)")
    ("activation-checkpoint-interval", po::value(&t.checkpoint_interval)->value_name("K")->default_value(0),
     "keep only the input of every K layers and recompute them in backward (0: off); groups without "
     "trainable parameters are not checkpointed, as in DeepSpeed")
    ("checkpointable-layers", po::value<std::string>()->value_name("TYPE,..."),
     "checkpoint groups made only of these layer types, whatever their parameters")
    ("data", po::value(&o.data)->value_name("PATH"),
     "train on files instead of the built-in synthetic data: a file, a directory (its .bin files) or a glob "
     "('shards/*.bin'); "
     "llm.c token shards, nanoGPT uint16 .bin files (memory-mapped) or byte-level text (see --data-format)")
    ("val-data", po::value(&o.val_data)->value_name("PATH"),
     "validation token files (default: a --data directory's llm.c _val_ shards, else the last 10% of each file)")
    ("data-format", po::value(&o.data_format)->value_name("F")->default_value(o.data_format),
     "auto (the llm.c header, else a .bin name for nanoGPT, else text), llmc, nanogpt or bytes")
    ("eval-every", po::value(&o.eval_every)->value_name("N")->default_value(o.eval_every),
     "validation loss every N steps (0: off; 0 or more)")
    ("eval-batches", po::value(&o.eval_batches)->value_name("M")->default_value(o.eval_batches),
     "micro-batches per replica in a validation pass (1 to 1,000,000); the validation set is the first D x M x B "
     "validation samples (D data-parallel replicas, M this value, B --micro-batch-size), so it grows with D")
    ("threads", po::value(&o.threads)->value_name("N")->default_value(o.threads),
     "CPU backend threads per rank (1 to 4,096; default 1: ranks share the cores)")
    ("metrics", po::value(&o.metrics)->value_name("FILE"),
     "write one JSON object per step (step, loss, lr, grad_norm, tokens_per_s, step_time_s) to FILE (rank 0)")
    ("profile-out", po::value(&o.profile_out)->value_name("FILE"),
     "write this run's measured forward, backward-input and backward-weight time per stage and micro-batch (JSON) "
     "to FILE, for pipe-sim --profile: predict other schedules, stage counts and micro-batches from a real run")
    ("save", po::value(&o.save)->value_name("DIR"),
     "save checkpoints to DIR (one safetensors file per layer plus optimizer state, a manifest with checksums; "
     "DIR/latest names the newest complete one)")
    ("save-every", po::value(&o.save_every)->value_name("N")->default_value(o.save_every),
     "checkpoint every N steps (0: only at the end; 0 or more); needs --save")
    ("keep-checkpoints", po::value(&o.keep_checkpoints)->value_name("K")->default_value(o.keep_checkpoints),
     "keep the K newest complete checkpoints in --save, removing older ones only once a new one is complete "
     "(0: keep all; 0 or more)")
    ("load", po::value(&o.load)->value_name("DIR"),
     "resume from the checkpoint in DIR (its latest, or DIR itself), under any stage count or data-parallel "
     "degree; --steps stays the total")
    ("comm-timeout", po::value(&t.comm_timeout)->value_name("SECONDS")->default_value(0.0, "0"),
     "abort the job when a receive or collective waits longer than this, naming the peer stage or group "
     "it waited on (0: wait forever; else 0.001 to 1000000)")
    ("skip-nonfinite", po::bool_switch(&t.skip_nonfinite),
     "skip (and count) steps whose loss or gradient is not finite instead of stopping with exit status 4")
    ("trace", po::value(&o.trace)->value_name("FILE"),
     "write a Chrome trace-event timeline of every rank (forward, backward, waits, reductions, optimizer) to FILE; "
     "open it in Perfetto or chrome://tracing, or draw it with pipe-sim --from-trace")
    ("config", po::value(&o.config)->value_name("FILE"),
     "read flags from FILE (lines 'name = value'); the command line wins");

  po::options_description actions("Actions");
  actions.add_options()
    ("describe", po::bool_switch(&o.describe), "print every layer's output, parameters, FLOPs and activation bytes, then exit")
    ("list-layers", po::bool_switch(&o.list_layers), "list the registered layer types and the plugins they came from, then exit")
    ("dry-run", po::bool_switch(&o.dry_run),
     "check the model, build the process grid and this rank's layers, print one JSON line per rank, then exit")
    ("help,h", po::bool_switch(&o.help), "show this help")
    ("version", po::bool_switch(&o.version), "print the version");

  po::options_description all;
  all.add(model).add(parallel).add(device).add(training).add(actions);
  return all;
}

}  // namespace

void apply_plan(Options& o, const libpipe::AutoPlan& p) {
  o.stages = p.stages;
  o.data_parallel = p.data_parallel;
  o.train.schedule = p.schedule;
  o.virtual_stages = p.virtual_stages;
  o.placement = libpipe::schedule_placement(p.schedule);
  o.train.micro_batches = p.micro_batches;
  o.train.micro_batch_size = static_cast<int>(p.micro_batch_size);
  o.train.checkpoint_interval = p.checkpoint_interval;
  o.train.zero = p.zero;
  if (!p.memory_capped) o.memory_limit.clear();  // the method's own cut fits: no cap to apply
}

libpipe::AutoPlanRequest plan_request(const Options& o, int world_size) {
  libpipe::AutoPlanRequest r;
  r.world_size = world_size;
  r.global_batch = o.global_batch;
  r.memory_limit = o.memory_limit.empty() ? 0 : libpipe::parse_byte_size(o.memory_limit);
  r.optimizer = o.train.optimizer.kind;
  r.bf16 = o.dtype == "bf16";
  r.method = o.partition;
  return r;
}

libpipe::MemoryModelOptions memory_model_options(const Options& o, int data_parallel, libpipe::Device device) {
  libpipe::MemoryModelOptions mo;
  mo.micro_batch_size = o.train.micro_batch_size;
  mo.optimizer = o.train.optimizer.kind;
  mo.bf16 = o.dtype == "bf16";
  mo.checkpoint_interval = o.train.checkpoint_interval;
  mo.optimizer_shards = o.train.zero == 1 ? data_parallel : 1;
  mo.runtime_bytes = libpipe::runtime_bytes(device);
  return mo;
}

std::string help_text() {
  Options o;
  std::ostringstream s;
  s << "usage: mpirun -np N pipe-train [--model M] [--stages S] [--data-parallel D | --topology AXES] [options]\n\n"
       "Pipeline-parallel training: each rank builds only its stage's layers, micro-batches\n"
       "stream through the stages on a 1F1B schedule, gradients of data-parallel replicas and\n"
       "tied weights are reduced, and the optimizer steps. Loss falls on the built-in data.\n\n"
       "Exit status: 0 done; 1 error (one line says what and where); 3 stopped by SIGTERM, SIGINT or SIGUSR1\n"
       "at a step boundary (a checkpoint is saved first when --save is set); 4 a non-finite loss\n"
       "or gradient (see --skip-nonfinite).\n"
    << describe_flags(o) << "\nExamples:\n  mpirun -np 4 pipe-train --model gpt-tiny --stages 2 --data-parallel 2 --partition-method type:block\n"
       "  mpirun -np 4 pipe-train --model gpt-tiny --stages 2 --data-parallel 2 --dry-run\n"
       "  pipe-plan --model gpt-tiny --stages 2      (the same partition, without MPI)\n";
  return s.str();
}

namespace {

// Boost.Program_options 1.74 formats its errors by substituting placeholders
// such as %value% until none is left, so a user's word that contains one makes
// it loop forever (found by fuzzing). Such words are refused first.
void refuse_placeholders(const std::string& text, const std::string& where) {
  static const boost::regex placeholder("%[A-Za-z_]+%");
  if (boost::regex_search(text, placeholder))
    throw libpipe::Error(where + ": '" + text + "' contains a %name% placeholder, which is not allowed");
}

}  // namespace

// --comm-timeout's range: from a millisecond (the watchdog's resolution) to 11.6 days (a clock's nanoseconds
// overflow near 9.2e9 seconds).
constexpr double kMinCommTimeout = 1e-3, kMaxCommTimeout = 1e6;

double comm_timeout_before_init(int argc, char** argv) {
  const std::string flag = "--comm-timeout";
  std::string value;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == flag && i + 1 < argc) value = argv[i + 1];
    if (arg.rfind(flag + "=", 0) == 0) value = arg.substr(flag.size() + 1);
  }
  try {
    std::size_t used = 0;
    const double seconds = std::stod(value, &used);
    // Out of range: MPI_Init goes unwatched, and the flag's check refuses the value right after it.
    return used == value.size() && seconds >= kMinCommTimeout && seconds <= kMaxCommTimeout ? seconds : 0.0;
  } catch (const std::exception&) {
    return 0.0;
  }
}

Options parse_options(int argc, char** argv) {
  Options o;
  po::variables_map vm;
  try {
    auto flags = describe_flags(o);
    for (int i = 1; i < argc; ++i) refuse_placeholders(argv[i], "argument " + std::to_string(i));
    po::store(po::command_line_parser(argc, argv).options(flags).run(), vm);
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      if (path.empty()) throw libpipe::Error("--config needs a file, not an empty path");
      libpipe::require_regular_file(path, "--config " + path);
      std::ifstream file(path);
      if (!file) throw libpipe::Error("--config " + path + ": cannot open the file");
      std::stringstream text;
      text << file.rdbuf();
      // Line by line, so that every error names its file:line.
      po::parsed_options from_file(&flags);
      std::map<std::string, int> first_line;  // each flag's line, to refuse a second setting
      std::string line;
      for (int number = 1; std::getline(text, line); ++number) {
        const std::string where = path + ":" + std::to_string(number);
        if (line.find('\0') != std::string::npos) throw libpipe::Error(where + ": the line holds a NUL byte");
        refuse_placeholders(line, where);
        const std::size_t first = line.find_first_not_of(" \t");
        if (first != std::string::npos && line[first] == '[')
          throw libpipe::Error(where + ": a --config file has no sections: one 'name = value' per line");
        std::stringstream one(line);
        po::parsed_options parsed(&flags);
        try {
          parsed = po::parse_config_file(one, flags);
          po::variables_map trial;  // converts the values here, so that a bad one is reported at its line
          po::store(parsed, trial);
        } catch (const po::error& e) {
          throw libpipe::Error(where + ": " + e.what() + " (see --help)");
        }
        for (const po::option& option : parsed.options) {
          if (option.string_key == "config")
            throw libpipe::Error(where + ": a --config file cannot name another one");
          const bool composing = flags.find(option.string_key, false).semantic()->is_composing();
          auto [it, fresh] = first_line.emplace(option.string_key, number);
          if (!fresh && !composing)
            throw libpipe::Error(where + ": '" + option.string_key + "' is set again (first on line " +
                                 std::to_string(it->second) + ")");
          from_file.options.push_back(option);
        }
      }
      po::store(from_file, vm);
    }
    po::notify(vm);
    pipe_apps::refuse_empty_paths(flags, vm);
  } catch (const po::error& e) {
    throw libpipe::Error(std::string(e.what()) + " (see --help)");
  }
  if (vm.count("stages")) o.stages = vm["stages"].as<int>();
  if (vm.count("data-parallel")) o.data_parallel = vm["data-parallel"].as<int>();
  o.builtin_plugins = !vm["no-builtin-plugins"].as<bool>();
  o.train.decay_steps = vm.count("lr-decay-steps") ? vm["lr-decay-steps"].as<int>()
                                                   : std::max(0, o.steps - o.train.warmup_steps);
  o.train.checkpoint_interval = vm["activation-checkpoint-interval"].as<int>();
  if (vm.count("checkpointable-layers")) {
    std::stringstream list(vm["checkpointable-layers"].as<std::string>());
    for (std::string type; std::getline(list, type, ',');)
      if (!type.empty()) o.train.checkpointable_types.push_back(type);
  }

  if (!o.schedule_file.empty()) {
    if (!vm["schedule"].defaulted())
      throw libpipe::Error("--schedule and --schedule-file both choose the schedule; use one");
    libpipe::require_regular_file(o.schedule_file, "--schedule-file " + o.schedule_file);
    std::ifstream file(o.schedule_file);
    std::stringstream text;
    text << file.rdbuf();
    if (!file) throw libpipe::Error("--schedule-file " + o.schedule_file + ": cannot read the file");
    o.train.custom_schedules = libpipe::parse_schedules(text.str(), o.schedule_file);
    o.train.schedule = "custom";
    const int file_m = o.train.custom_schedules[0].micro_batches;
    if (vm["micro-batches"].defaulted())
      o.train.micro_batches = file_m;
    else if (o.train.micro_batches != file_m)
      throw libpipe::Error("--micro-batches " + std::to_string(o.train.micro_batches) + " but --schedule-file " +
                           o.schedule_file + " runs " + std::to_string(file_m) + " micro-batches");
  } else if (o.train.schedule == "custom") {
    throw libpipe::Error("--schedule custom needs --schedule-file FILE");
  }
  // Chunks per stage: the schedule file's, or what the kind runs (an error when it cannot run the V asked for).
  const int asked_v = vm.count("virtual-stages") ? o.virtual_stages : 0;
  if (vm.count("virtual-stages") && o.virtual_stages < 1)
    throw libpipe::Error("--virtual-stages must be at least 1, not " + std::to_string(o.virtual_stages));
  if (o.train.schedule == "custom") {
    const libpipe::Schedule& first = o.train.custom_schedules[0];
    if (asked_v && asked_v != first.virtual_stages)
      throw libpipe::Error("--virtual-stages " + std::to_string(asked_v) + " but --schedule-file " + o.schedule_file +
                           " runs " + std::to_string(first.virtual_stages) + " chunks per stage");
    o.virtual_stages = first.virtual_stages;
    o.placement = first.placement;
  } else {
    o.virtual_stages = libpipe::schedule_virtual_stages(o.train.schedule, asked_v);
    o.placement = libpipe::schedule_placement(o.train.schedule);
  }

  if (!o.topology.empty() && (o.stages || o.data_parallel))
    throw libpipe::Error("--topology cannot be combined with --stages or --data-parallel (the topology names every axis)");
  if (o.stages && *o.stages < 1) throw libpipe::Error("--stages must be at least 1, not " + std::to_string(*o.stages));
  libpipe::parse_data_format(o.data_format);  // an unknown format fails here, before MPI work
  if (!o.val_data.empty() && o.data.empty())
    throw libpipe::Error("--val-data needs --data (the built-in synthetic data makes its own validation set)");
  if (o.data_parallel && *o.data_parallel < 1)
    throw libpipe::Error("--data-parallel must be at least 1, not " + std::to_string(*o.data_parallel));
  auto at_least = [](int value, int min, const char* flag) {
    if (value < min)
      throw libpipe::Error(std::string(flag) + " must be at least " + std::to_string(min) + ", not " +
                           std::to_string(value));
  };
  // Counts that size allocations have a ceiling, so that a typo is a line naming the flag, not bad_alloc.
  auto at_most = [](int value, int max, const char* flag) {
    if (value > max)
      throw libpipe::Error(std::string(flag) + " must be at most " + libpipe::with_commas(max) + ", not " +
                           libpipe::with_commas(value));
  };
  at_least(o.steps, 1, "--steps");
  at_least(o.train.micro_batches, 1, "--micro-batches");
  at_most(o.train.micro_batches, 1'000'000, "--micro-batches");
  at_least(o.train.micro_batch_size, 1, "--micro-batch-size");
  at_most(o.train.micro_batch_size, 1'000'000, "--micro-batch-size");
  at_most(o.eval_batches, 1'000'000, "--eval-batches");
  at_most(o.threads, 4096, "--threads");
  at_least(o.train.warmup_steps, 0, "--warmup-steps");
  at_least(o.train.checkpoint_interval, 0, "--activation-checkpoint-interval");
  at_least(o.eval_every, 0, "--eval-every");
  at_least(o.keep_checkpoints, 0, "--keep-checkpoints");
  at_least(o.eval_batches, 1, "--eval-batches");
  at_least(o.threads, 1, "--threads");
  const auto& t = o.train;
  if (!(t.lr > 0) || !std::isfinite(t.lr)) throw libpipe::Error("--lr must be a positive number");
  if (!(t.min_lr >= 0 && t.min_lr <= t.lr)) throw libpipe::Error("--min-lr must be between 0 and --lr");
  at_least(t.decay_steps, 0, "--lr-decay-steps");
  if (!(t.optimizer.weight_decay >= 0) || !std::isfinite(t.optimizer.weight_decay))
    throw libpipe::Error("--weight-decay must be 0 or positive");
  if (!(t.optimizer.momentum >= 0 && t.optimizer.momentum < 1))
    throw libpipe::Error("--momentum must be in [0, 1)");
  if (!(t.clip_grad_norm >= 0) || !std::isfinite(t.clip_grad_norm))
    throw libpipe::Error("--clip-grad-norm must be 0 (off) or a positive number");
  if (!t.checkpointable_types.empty() && t.checkpoint_interval == 0)
    throw libpipe::Error("--checkpointable-layers needs --activation-checkpoint-interval");
  at_least(o.save_every, 0, "--save-every");
  if (!(t.comm_timeout >= 0) || !std::isfinite(t.comm_timeout) ||
      (t.comm_timeout != 0 && (t.comm_timeout < kMinCommTimeout || t.comm_timeout > kMaxCommTimeout))) {
    char given[32];
    std::snprintf(given, sizeof given, "%g", t.comm_timeout);
    throw libpipe::Error(std::string("--comm-timeout must be 0 (off) or from 0.001 to 1000000 seconds, not ") + given);
  }
  if (o.save_every > 0 && o.save.empty()) throw libpipe::Error("--save-every needs --save");
  if (vm.count("eval-batches") && !vm["eval-batches"].defaulted() && o.eval_every == 0)
    throw libpipe::Error("--eval-batches needs --eval-every");
  if (o.train.optimizer.kind != "adamw" && o.train.optimizer.kind != "sgd")
    throw libpipe::Error("unknown --optimizer '" + o.train.optimizer.kind + "' (expected adamw or sgd)");
  auto one_of = [](const std::string& value, std::initializer_list<const char*> known, const char* flag,
                   const char* expected) {
    for (const char* k : known)
      if (value == k) return;
    throw libpipe::Error(std::string("unknown ") + flag + " '" + value + "' (expected " + expected + ")");
  };
  if (vm.count("device")) one_of(o.device, {"cpu", "cuda"}, "--device", "cpu or cuda");
  one_of(o.comm, {"auto", "nccl", "mpi"}, "--comm", "auto, nccl or mpi");
  one_of(o.dtype, {"fp32", "tf32", "bf16"}, "--dtype", "fp32, tf32 or bf16");
  int actions = int(o.describe) + int(o.list_layers) + int(o.dry_run);
  if (actions > 1) throw libpipe::Error("choose one of --describe, --list-layers and --dry-run");
  o.partition_method_given = !vm["partition-method"].defaulted();
  if (vm.count("plan")) {
    if (vm["plan"].as<std::string>() != "auto")
      throw libpipe::Error("--plan " + vm["plan"].as<std::string>() + ": the only plan is 'auto'");
    o.plan_auto = true;
    for (const char* chosen : {"stages", "data-parallel", "topology", "schedule", "schedule-file", "virtual-stages",
                               "micro-batches", "micro-batch-size", "activation-checkpoint-interval", "zero"})
      if (vm.count(chosen) && !vm[chosen].defaulted())
        throw libpipe::Error(std::string("--plan auto chooses --") + chosen + ": leave it out");
    if (o.global_batch < 1) throw libpipe::Error("--plan auto needs --global-batch G (samples per optimizer step)");
  } else if (vm.count("global-batch") || !o.plan_profiles.empty()) {
    throw libpipe::Error(std::string(vm.count("global-batch") ? "--global-batch" : "--plan-profile") +
                         " goes with --plan auto");
  }
  if (!o.partition_method_given && o.plan_auto) o.partition_method = "flops";  // time is what the planner balances
  o.partition = libpipe::PartitionMethod::parse(o.partition_method);
  if (o.train.zero != 0 && o.train.zero != 1)
    throw libpipe::Error("--zero " + std::to_string(o.train.zero) + ": expected 0 or 1");
  if (!o.memory_limit.empty()) {
    libpipe::parse_byte_size(o.memory_limit);  // the size's error now, before MPI and the model
    if (!o.train.custom_schedules.empty())
      throw libpipe::Error("--memory-limit needs a named --schedule, not --schedule-file");
  }
  return o;
}

}  // namespace pipe_train
