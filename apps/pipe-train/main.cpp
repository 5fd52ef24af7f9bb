// pipe-train: the pipeline-parallel training job, launched with mpirun.
//
// Every phase runs on all ranks and ends with an agreement on success (see
// pipe/collective.hpp), so a bad flag, model or topology ends every rank with
// one clear line instead of leaving some of them waiting.
#include <cctype>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mpi.h>
#include <nlohmann/json.hpp>

#include "device_choice.hpp"
#include "job_topology.hpp"
#include "memory_floor.hpp"
#include "options.hpp"
#include "pipe/backend.hpp"
#include "pipe/checkpoint.hpp"
#include "pipe/cpu_info.hpp"
#include "pipe/data.hpp"
#include "pipe/engine.hpp"
#include "plan_rate.hpp"
#include "progress.hpp"
#include "report.hpp"
#include "pipe/collective.hpp"
#include "pipe/watchdog.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/grid.hpp"
#include "pipe/model.hpp"
#include "pipe/auto_plan.hpp"
#include "pipe/memory_partition.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/pipeline_module.hpp"
#include "pipe/profile.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"
#include "pipe/topology.hpp"

namespace {

constexpr const char* kProgram = "pipe-train";

// Exit statuses (documented in --help and the README).
constexpr int kExitStopped = 3;    // SIGTERM/SIGINT: stopped at a step boundary
constexpr int kExitNonFinite = 4;  // a non-finite loss or gradient

// Set by SIGTERM/SIGINT; the ranks agree on it at every step boundary, so a
// signal to any rank stops them all after the same step.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int signal) { g_stop_signal = signal; }
constexpr const char* kVersion = "0.1.0";

// One rank's place in the grid and what it built, as a JSON line.
std::string rank_json(const libpipe::PipelineParallelGrid& grid, const libpipe::PipelineModule& module,
                      std::size_t allocated_bytes, const pipe_train::DeviceChoice& where) {
  const auto& topo = grid.topology();
  nlohmann::json coord = nlohmann::json::object();
  for (const auto& axis : topo.axes()) coord[axis] = topo.get_coord(grid.global_rank(), axis);
  nlohmann::json chunks = nlohmann::json::array();  // each chunk (virtual stage) and its layers
  for (const auto& c : module.chunks()) chunks.push_back({{"chunk", c.chunk}, {"layer_range", {c.begin, c.end}}});
  nlohmann::json j = {
      {"rank", grid.global_rank()},
      {"stage", grid.stage_id()},
      {"data", grid.data_parallel_id()},
      {"model", grid.model_parallel_id()},
      {"coord", coord},
      {"prev", grid.prev_stage_rank()},
      {"next", grid.next_stage_rank()},
      {"pipe_group", grid.pipe_group()},
      {"data_parallel_group", grid.data_parallel_group()},
      {"model_group", grid.model_group()},
      {"layer_range", {module.begin(), module.end()}},
      {"parameter_bytes", allocated_bytes},
      {"device", where.description},
      {"comm", libpipe::comm_kind_name(where.comm)},
  };
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : module.layers()) layers.push_back({{"index", l.index}, {"type", l.type}});
  j["layers"] = layers;
  // With virtual stages the rank's layers are not one range: each chunk's instead.
  if (module.virtual_stages() > 1) {
    j.erase("layer_range");
    j["chunks"] = chunks;
  }
  nlohmann::json ties = nlohmann::json::array();
  for (const auto& t : module.tie_groups())
    ties.push_back({{"key", t.key}, {"layers", t.layers}, {"stages", t.stages}, {"ranks", t.ranks}});
  j["tie_groups"] = ties;
  return j.dump();
}

// " into 8 chunks (2 per stage, looped)" where there are virtual stages.
std::string chunk_note(const pipe_train::Options& options) {
  std::string note;
  if (options.virtual_stages > 1)
    note = " into " + std::to_string(options.virtual_stages) + " chunks per stage (" +
           libpipe::placement_name(options.placement) + ")";
  if (!options.memory_limit.empty())
    note += " within --memory-limit " + libpipe::byte_size_str(libpipe::parse_byte_size(options.memory_limit)) +
            " per rank";
  return note;
}

// --plan auto: rank 0 calibrates the rate (a GEMM measured here, or --plan-profile files) and searches the plans;
// every rank then takes the best one's layout. False when rank 0 failed (`result` says why).
bool choose_plan(MPI_Comm world, pipe_train::Options& options, const libpipe::ModelDescription& description,
                 libpipe::PhaseResult& result) {
  int rank = 0, size = 1;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  libpipe::AutoPlanRequest request = pipe_train::plan_request(options, size);
  libpipe::AutoPlan best;
  auto search = [&] {
    if (rank != 0) return;
    libpipe::ModelDescription planned = description;  // counting what the device's attention keeps
    libpipe::account_attention(planned, pipe_train::planned_device(options));
    const std::string rate = pipe_apps::calibrate_rate(planned, options.plan_profiles, 0, request, "--plan-profile");
    const libpipe::AutoPlanResult found = libpipe::search_plans(planned, request);
    if (found.plans.empty())
      throw libpipe::Error("--plan auto: none of the " + std::to_string(found.considered) + " plans for " +
                           description.name + " on " + std::to_string(size) + " ranks fits --memory-limit " +
                           options.memory_limit + "; the smallest predicted peak is " +
                           libpipe::byte_size_str(found.smallest_peak));
    best = found.plans.front();
    std::fprintf(stderr, "%s: --plan auto: %s (of %d plans; predicted %.1f samples/s, peak %s per rank; device rate "
                 "%s)\n", kProgram, libpipe::plan_flags(best, request).c_str(), found.considered, best.samples_per_s,
                 libpipe::byte_size_str(best.peak_bytes).c_str(), rate.c_str());
  };
  if (!libpipe::run_phase_on_all(world, search, result, "planning the job (--plan auto)")) return false;
  // The layout as integers from rank 0 (nothing here can fail on one rank alone).
  int schedule = 0;
  for (std::size_t i = 0; i < request.schedules.size(); ++i)
    if (request.schedules[i] == best.schedule) schedule = static_cast<int>(i);
  auto from_0 = [&](int value) { return libpipe::broadcast_int(world, value, 0, "the plan"); };
  best.stages = from_0(best.stages);
  best.data_parallel = from_0(best.data_parallel);
  best.schedule = request.schedules.at(static_cast<std::size_t>(from_0(schedule)));
  best.virtual_stages = from_0(best.virtual_stages);
  best.micro_batches = from_0(best.micro_batches);
  best.micro_batch_size = from_0(static_cast<int>(best.micro_batch_size));
  best.checkpoint_interval = from_0(best.checkpoint_interval);
  best.zero = from_0(best.zero);
  best.memory_capped = from_0(best.memory_capped ? 1 : 0) != 0;
  pipe_train::apply_plan(options, best);
  return true;
}

// The ranks of `world` on this rank's node (collective).
int ranks_on_node(MPI_Comm world) {
  MPI_Comm node = libpipe::node_comm(world);
  int size = 1;
  MPI_Comm_size(node, &size);
  MPI_Comm_free(&node);
  return size;
}

void print_layer_list(const libpipe::LayerRegistry& registry) {
  for (const auto& name : registry.names())
    std::printf("%-22s %s\n%-22s   from %s\n", name.c_str(), registry.get(name).summary().c_str(), "",
                registry.source_of(name).c_str());
}

// The training loop. Set-up errors are collective like every phase; an error
// in the middle of a step may have left peers inside a transfer, so it aborts
// the whole job with one line naming the rank and stage.
int train(MPI_Comm world, const pipe_train::Options& options, const libpipe::LayerRegistry& registry,
          const libpipe::ModelDescription& description, const libpipe::PipelineParallelGrid& grid,
          libpipe::PipelineModule& module, const libpipe::PartitionPlan& plan, const pipe_train::DeviceChoice& where,
          double rss_before_model) {
  const int rank = grid.global_rank();
  libpipe::PhaseResult result;
  std::unique_ptr<libpipe::DataSource> data;
  std::unique_ptr<libpipe::PipelineEngine> engine;
  std::unique_ptr<pipe_train::Progress> progress;
  std::shared_ptr<void> save_lock;  // rank 0's hold on --save's directory
  const std::int64_t tokens_per_sample =
      description.input.dtype == libpipe::DType::int32 ? libpipe::numel(description.input.shape) : 1;
  // Local set-up first (each rank alone: data, files), then the engine, whose
  // constructor is collective; each phase ends with every rank agreeing.
  auto set_up_local = [&] {
    libpipe::set_cpu_threads(options.threads);
    for (const auto& type : options.train.checkpointable_types)
      if (!registry.find(type))
        throw libpipe::Error("--checkpointable-layers: unknown layer type '" + type + "'" +
                             (registry.closest(type).empty() ? "" : " (did you mean '" + registry.closest(type) + "'?)"));
    data = options.data.empty()
               ? libpipe::make_synthetic_data(description, options.seed)
               : libpipe::make_file_data(options.data, options.val_data,
                                         libpipe::parse_data_format(options.data_format), description, options.seed);
    using pipe_train::Output;
    if (rank == 0 && !options.trace.empty()) pipe_train::check_writable(options.trace, "--trace", Output::renamed);
    if (rank == 0 && !options.profile_out.empty())
      pipe_train::check_writable(options.profile_out, "--profile-out", Output::renamed);
    if (rank == 0 && !options.metrics.empty())
      pipe_train::check_writable(options.metrics, "--metrics", Output::streamed);
    if (rank == 0 && !options.save.empty()) {
      libpipe::check_checkpoint_dir(options.save);  // makes the folder, or says why it cannot
      save_lock = libpipe::lock_checkpoint_dir(options.save);  // held until training ends
    }
  };
  auto set_up_engine = [&] {
    engine = std::make_unique<libpipe::PipelineEngine>(module, grid, description, options.train);
    if (rank == 0)
      progress = std::make_unique<pipe_train::Progress>(options.steps, engine->global_batch() * tokens_per_sample,
                                                        options.metrics, !options.load.empty());
  };
  std::int64_t first_step = 0;
  auto resume = [&] {
    if (!options.load.empty())
      first_step = libpipe::load_checkpoint(options.load, module, engine->optimizer(), description);
  };
  if (!libpipe::run_phase_on_all(world, set_up_local, result, "setting up the data and the outputs") ||
      !libpipe::run_phase_on_all(world, set_up_engine, result, "building the engine") ||
      !libpipe::run_phase_on_all(world, resume, result, "loading the checkpoint")) {
    libpipe::report_phase_failure(world, kProgram, result);
    return 1;
  }
  // One line when the CPU backend will run below this machine's speed (oversubscribed cores, oneDNN's GEMMs on
  // a generic kernel); rank 0 speaks for its node.
  if (where.device == libpipe::Device::cpu) {
    const int on_node = ranks_on_node(world);
    if (rank == 0) {
      const std::string slow = libpipe::cpu_slow_warning(on_node, options.threads);
      if (!slow.empty()) std::fprintf(stderr, "%s: warning: %s\n", kProgram, slow.c_str());
    }
  }
  if (rank == 0 && !options.load.empty())
    std::fprintf(stderr, "%s: resumed from %s at step %lld\n", kProgram, options.load.c_str(),
                 static_cast<long long>(first_step));
  if (first_step >= options.steps) {  // every rank loaded the same step
    if (rank == 0)
      std::fprintf(stderr, "%s: the checkpoint is at step %lld and --steps is %d: nothing to do\n", kProgram,
                   static_cast<long long>(first_step), options.steps);
    return 0;
  }
  const std::string settings =
      nlohmann::json{{"schedule", options.train.schedule}, {"micro_batches", options.train.micro_batches},
                     {"micro_batch_size", options.train.micro_batch_size}, {"optimizer", options.train.optimizer.kind},
                     {"lr", options.train.lr}, {"seed", options.seed}, {"steps", options.steps},
                     {"data", options.data}}
          .dump();
  auto checkpoint = [&](std::int64_t next_step) {
    const double start = engine->clock();
    std::string where = libpipe::save_checkpoint(options.save, next_step, module, engine->optimizer(), grid,
                                                 description, settings, options.keep_checkpoints);
    engine->record(libpipe::WorkKind::Checkpoint, start, engine->clock());
    if (rank == 0) std::fprintf(stderr, "%s: checkpoint saved to %s\n", kProgram, where.c_str());
  };
  if (rank == 0)
    std::fprintf(stderr,
                 "%s: training %s (%zu layers, %s parameters) on %s; partition %s%s %s; schedule %s, %d micro-batches "
                 "x %d samples x %d replicas = %lld samples per step; data: %s\n",
                 kProgram, description.name.c_str(), description.layers.size(),
                 libpipe::with_commas(description.params).c_str(), grid.topology().str().c_str(), plan.method.c_str(),
                 chunk_note(options).c_str(), nlohmann::json(plan.parts).dump().c_str(), options.train.schedule.c_str(),
                 options.train.micro_batches, options.train.micro_batch_size, grid.data_parallel_size(),
                 static_cast<long long>(engine->global_batch()), data->describe().c_str());
  if (options.train.zero == 1 && rank == 0) {
    const libpipe::Optimizer& optimizer = engine->optimizer();
    const std::string masters = optimizer.unsharded_master_bytes() == 0
                                    ? ""
                                    : " and " + libpipe::with_commas(optimizer.master_bytes()) + " of its " +
                                          libpipe::with_commas(optimizer.unsharded_master_bytes()) +
                                          " bytes of float32 masters";
    std::fprintf(stderr, "%s: --zero 1: rank 0 (stage %d) keeps %s of its stage's %s bytes of optimizer state%s (%d "
                 "replicas)\n", kProgram, grid.stage_id(), libpipe::with_commas(optimizer.state_bytes()).c_str(),
                 libpipe::with_commas(optimizer.unsharded_state_bytes()).c_str(), masters.c_str(),
                 grid.data_parallel_size());
  }
  if (engine->checkpoint_saved_bytes() > 0)
    std::fprintf(stderr, "%s: rank %d (stage %d): activation checkpointing saves %s bytes per micro-batch\n",
                 kProgram, rank, grid.stage_id(), libpipe::with_commas(engine->checkpoint_saved_bytes()).c_str());
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  // mpirun forwards SIGUSR1 to every rank and leaves the job to end by itself (SIGTERM to mpirun kills the ranks a
  // second later, before a long save could finish, and makes its own exit status 1).
  sigaction(SIGUSR1, &action, nullptr);
  int status = 0;
  try {
    if (!options.trace.empty()) engine->start_trace();
    for (std::int64_t step = first_step; step < options.steps; ++step) {
      libpipe::StepStats stats = engine->train_step(*data, step);
      if (rank == 0) progress->step(stats);
      if (rank == 0 && stats.skipped)
        std::fprintf(stderr, "%s: step %lld: non-finite loss or gradient, update skipped\n", kProgram,
                     static_cast<long long>(step + 1));
      const bool last = step + 1 == options.steps;
      const bool stop = engine->any_rank(g_stop_signal != 0);
      const bool save_now =
          !options.save.empty() && (last || stop || (options.save_every > 0 && (step + 1) % options.save_every == 0));
      if (save_now) checkpoint(step + 1);
      if (stop) {
        if (rank == 0)
          std::fprintf(stderr, "%s: stopped by SIGTERM, SIGINT or SIGUSR1 after step %lld%s\n", kProgram,
                       static_cast<long long>(step + 1), options.save.empty() ? " (no --save: nothing saved)" : "");
        status = kExitStopped;
        break;
      }
      if (options.eval_every > 0 && ((step + 1) % options.eval_every == 0 || last)) {
        double loss = engine->evaluate(*data, libpipe::Split::validation, 0, options.eval_batches);
        if (rank == 0) progress->validation(step, loss);
      }
    }
  } catch (const libpipe::NonFiniteError& e) {
    // Every rank took the same decision on the same global figures.
    if (rank == 0) std::fprintf(stderr, "%s: error: %s\n", kProgram, e.what());
    status = kExitNonFinite;
  } catch (const libpipe::JobError& e) {
    // Every rank is here, at the same point: the cause is printed once, by its rank, and the job ends normally.
    if (!e.cause_elsewhere())
      std::fprintf(stderr, "%s: rank %d (stage %d): error: %s\n", kProgram, rank, grid.stage_id(), e.what());
    return 1;
  } catch (const std::exception& e) {
    // This rank alone knows: the others may be waiting on it anywhere, so the job is ended from here.
    std::fprintf(stderr, "%s: rank %d (stage %d): error: %s\n", kProgram, rank, grid.stage_id(), e.what());
    std::fflush(stderr);
    MPI_Abort(world, 1);
  }
  if (rank == 0 && engine->totals().skipped_steps > 0)
    std::fprintf(stderr, "%s: %lld non-finite steps skipped\n", kProgram,
                 static_cast<long long>(engine->totals().skipped_steps));
  if (rank == 0) progress->finish();
  // The report and the trace: gathered to rank 0 (collective, so every rank
  // takes part; a failure to write is rank 0's alone and reported by it).
  auto summaries =
      libpipe::gather_strings(world, pipe_train::rank_summary_json(grid, *engine, where, !options.trace.empty(),
                                                                   rss_before_model));
  if (rank == 0) {
    try {
      progress->summary(pipe_train::print_report(summaries, options.train.schedule, grid.num_stages(),
                                                 options.virtual_stages, options.train.micro_batches,
                                                 progress->mean_tokens_per_s(),
                                                 libpipe::comm_kind_name(where.comm), options.train.custom_schedules,
                                                 pipe_train::predicted_memory(description, plan.parts, options,
                                                                              grid.num_stages(),
                                                                              grid.data_parallel_size(), where.device)));
      if (!options.trace.empty()) {
        pipe_train::write_trace(options.trace, summaries);
        std::fprintf(stderr, "%s: trace written to %s\n", kProgram, options.trace.c_str());
      }
      if (!options.profile_out.empty()) {
        pipe_train::write_profile(options.profile_out, summaries,
                                  {description.name, options.train.schedule, grid.num_stages(), options.virtual_stages,
                                   options.train.micro_batches, options.train.micro_batch_size});
        std::fprintf(stderr, "%s: profile written to %s (pipe-sim --profile %s)\n", kProgram,
                     options.profile_out.c_str(), options.profile_out.c_str());
      }
      progress->close_metrics();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: error: %s\n", kProgram, e.what());
      status = 1;
    }
  }
  // Rank 0 alone may have failed to write the metrics' summary or the trace.
  status = libpipe::broadcast_int(world, status, 0, "the exit status");
  return status;
}

int run(MPI_Comm world, int argc, char** argv) {
  int rank = 0, size = 1;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  libpipe::PhaseResult result;
  auto failed = [&] {
    libpipe::report_phase_failure(world, kProgram, result);
    return 1;
  };

  pipe_train::Options options;
  if (!libpipe::run_phase_on_all(world, [&] { options = pipe_train::parse_options(argc, argv); }, result,
                                 "reading the flags"))
    return failed();
  if (options.help || options.version) {
    if (rank == 0) std::cout << (options.help ? pipe_train::help_text() : std::string(kProgram) + " " + kVersion + "\n");
    return 0;
  }
  // From here on no collective waits longer than --comm-timeout (setup, checkpoint saves, the final report).
  libpipe::set_collective_timeout(options.train.comm_timeout);

  libpipe::LayerRegistry registry;
  auto load = [&] {
    libpipe::load_plugins(registry, libpipe::PluginSearch{options.builtin_plugins, true, options.plugin_dirs});
  };
  if (!libpipe::run_phase_on_all(world, load, result, "loading the plugins and the model")) return failed();
  // Every rank must run the same job: the same flags and the same layer types
  // from the same plugin files (compared by name, so install paths may differ).
  auto same_job = [&] {
    std::string text;
    for (int i = 1; i < argc; ++i) text += std::string(argv[i]) + '\0';
    for (const auto& name : registry.names())
      text += name + "@" + std::filesystem::path(registry.source_of(name)).filename().string() + '\0';
    std::uint64_t h = 1469598103934665603ULL;
    for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
    const long long mine = static_cast<long long>(h >> 1);
    std::vector<long long> all(size);
    libpipe::allgather(world, &mine, all.data(), 1, MPI_LONG_LONG, "the hash of its flags and plugins");
    for (int r = 1; r < size; ++r)
      if (all[r] != all[0])
        throw libpipe::Error("rank " + std::to_string(r) +
                             " was started with other flags or other layer plugins than rank 0; every rank must "
                             "run the same command with the same plugins");
  };
  if (!libpipe::run_phase_on_all(world, same_job, result, "checking that every rank runs the same job"))
    return failed();
  if (options.list_layers) {
    if (rank == 0) print_layer_list(registry);
    return 0;
  }

  libpipe::ModelSpec model;
  libpipe::ModelDescription description;
  auto check_model = [&] {
    model = libpipe::load_model_file(libpipe::resolve_model_path(options.model));
    description = libpipe::describe_model(model, registry);
  };
  if (!libpipe::run_phase_on_all(world, check_model, result, "checking the model")) return failed();
  if (options.describe) {
    if (rank == 0) std::cout << libpipe::format_description(description);
    return 0;
  }

  if (options.plan_auto && !choose_plan(world, options, description, result)) return failed();

  // Before anything is made on a device: each rank binds its GPU here.
  pipe_train::DeviceChoice where;
  if (!libpipe::run_phase_on_all(world, [&] { where = pipe_train::choose_device(world, options); }, result,
                                 "choosing the device"))
    return failed();
  options.train.comm = where.comm;
  options.train.dtype = options.dtype == "bf16" ? libpipe::DType::bfloat16 : libpipe::DType::float32;
  // What attention keeps on this device (flash attention's state for long sequences), for the memory checks,
  // --memory-limit and the report below (--plan auto, above, counted it for the device it will be).
  libpipe::account_attention(description, where.device);

  std::unique_ptr<libpipe::PipelineParallelGrid> grid;
  auto build_grid = [&] {
    grid = std::make_unique<libpipe::PipelineParallelGrid>(world, pipe_train::job_topology(options, size));
  };
  if (!libpipe::run_phase_on_all(world, build_grid, result, "building the process grid")) return failed();

  // Every rank plans the partition from descriptions alone; the module then
  // checks that all ranks agree and builds only this stage's layers.
  libpipe::PartitionPlan plan;
  std::unique_ptr<libpipe::PipelineModule> module;
  std::size_t allocated = 0;
  auto plan_parts = [&] {
    // A measured method ('profile') times every layer on the real shapes
    // first, spread over the ranks; the all-reduce inside gives every rank
    // the same times, which it hands in like any other weights.
    std::vector<double> times;
    if (options.partition.needs_measurement())
      times = libpipe::profile_layer_times(model, description, registry, world, options.train.micro_batch_size,
                                           where.device);
    // With virtual stages the model is cut into stages x V chunks by the same exact partitioner.
    const int chunks = grid->num_stages() * options.virtual_stages;
    try {
      // A V-shaped placement (zb-v) balances the sum of each stage's two chunks, its work per micro-batch.
      if (!options.memory_limit.empty()) {
        const libpipe::MemoryLimitRequest request{options.train.schedule, options.train.micro_batches,
                                                  memory_model_options(options, grid->data_parallel_size(), where.device),
                                                  libpipe::parse_byte_size(options.memory_limit),
                                                  grid->data_parallel_size(), options.virtual_stages};
        plan = libpipe::plan_partition_memory(description, options.partition, grid->num_stages(), request,
                                              times.empty() ? nullptr : &times);
      } else {
        plan = libpipe::plan_chunk_partition(description, options.partition, grid->num_stages(),
                                             options.virtual_stages, options.placement,
                                             times.empty() ? nullptr : &times);
      }
    } catch (const libpipe::Error& e) {
      if (options.virtual_stages == 1 || !options.memory_limit.empty()) throw;  // a limit's error says the chunks
      throw libpipe::Error("--virtual-stages " + std::to_string(options.virtual_stages) + ": the model is split into " +
                           std::to_string(grid->num_stages()) + " x " + std::to_string(options.virtual_stages) +
                           " = " + std::to_string(chunks) + " chunks (the partitioner's stages): " + e.what());
    }
    if (!times.empty() && rank == 0) {
      std::string list;
      for (double t : times) list += (list.empty() ? "" : ", ") + std::to_string(std::lround(t * 1e6));
      std::fprintf(stderr, "%s: profile: forward + backward per layer (microseconds per micro-batch): %s\n",
                   kProgram, list.c_str());
    }
  };
  if (!libpipe::run_phase_on_all(world, plan_parts, result, "partitioning the model")) return failed();
  auto check_memory = [&] {
    const pipe_train::MemoryFloor floor =
        pipe_train::memory_floor(description, plan.parts, grid->stage_id(), grid->num_stages(),
                                 grid->data_parallel_size(), options);
    pipe_train::refuse_beyond_node_memory(world, floor, options, where.device == libpipe::Device::cpu);
  };
  if (!libpipe::run_phase_on_all(world, check_memory, result, "checking the memory the job needs")) return failed();
  // What the process holds before the model (program, libraries, MPI): the report sets the memory model's
  // prediction beside what the run added to it.
  const double rss_before_model = pipe_train::current_rss_bytes();
  auto build_module = [&] {
    const std::size_t before = libpipe::allocated_bytes(where.device);
    module = std::make_unique<libpipe::PipelineModule>(model, description, registry, *grid, plan.parts,
                                                       libpipe::ModuleOptions{options.seed, where.device,
                                                                              options.virtual_stages,
                                                                              options.placement});
    allocated = libpipe::allocated_bytes(where.device) - before;
  };
  if (!libpipe::run_phase_on_all(world, build_module, result, "building this stage's layers")) return failed();

  if (!options.dry_run)
    return train(world, options, registry, description, *grid, *module, plan, where, rss_before_model);
  auto lines = libpipe::gather_strings(world, rank_json(*grid, *module, allocated, where));
  if (rank == 0) {
    std::fprintf(stderr, "%s: dry run: model %s (%zu layers, %s parameters) on %s, %d ranks; partition %s%s: %s\n",
                 kProgram, description.name.c_str(), description.layers.size(),
                 libpipe::with_commas(description.params).c_str(), grid->topology().str().c_str(), size,
                 plan.method.c_str(), chunk_note(options).c_str(), nlohmann::json(plan.parts).dump().c_str());
    for (const auto& line : lines) std::cout << line << "\n";
    std::cout.flush();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) would kill the rank mid-write with no word; ignored, the write fails with EFBIG
  // and the checkpoint, metrics or trace error names the file (latest never moves to a half-written checkpoint).
  std::signal(SIGXFSZ, SIG_IGN);
  {
    // Every rank must start: a rank that never reaches MPI_Init leaves the others waiting in it.
    const libpipe::Watch watch("MPI_Init (the start of every rank)",
                               pipe_train::comm_timeout_before_init(argc, argv));
    MPI_Init(&argc, &argv);
  }
  // MPI failures come back as codes that libpipe turns into one-line errors
  // (file:line, rank, host) instead of aborting inside MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rc = 1;
  try {
    rc = run(MPI_COMM_WORLD, argc, argv);
  } catch (const std::exception& e) {
    // A collective timed out (or failed) outside a phase: the other ranks may be anywhere, so end them all.
    std::fprintf(stderr, "%s: error: %s\n", kProgram, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  {
    // Every rank must reach the end: one stopped before MPI_Finalize leaves the others waiting in it.
    const libpipe::Watch watch("MPI_Finalize (the end of every rank)", libpipe::collective_timeout());
    MPI_Finalize();
  }
  return rc;
}
