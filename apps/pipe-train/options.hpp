// pipe-train's command line: every flag, its default and its help text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pipe/engine.hpp"
#include "pipe/auto_plan.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/partition_method.hpp"

namespace pipe_train {

struct Options {
  bool help = false;
  bool version = false;
  std::string model = "gpt-tiny";
  std::optional<int> stages;          // --stages
  std::optional<int> data_parallel;   // --data-parallel
  std::string topology;               // --topology, "" when not given
  std::string partition_method = "parameters";  // --partition-method, as given
  libpipe::PartitionMethod partition;           // ... parsed once, when the flags are read
  std::string memory_limit;                     // --memory-limit SIZE, "" when none
  bool plan_auto = false;                       // --plan auto: the planner picks the layout (apply_plan)
  std::int64_t global_batch = 0;                // --global-batch G (with --plan auto)
  std::vector<std::string> plan_profiles;       // --plan-profile FILE (with --plan auto)
  bool partition_method_given = false;          // --partition-method on the command line
  std::vector<std::string> plugin_dirs;
  bool builtin_plugins = true;
  std::uint64_t seed = 1234;
  bool describe = false;
  bool list_layers = false;
  bool dry_run = false;

  // Device (device_choice.hpp resolves them against the machine)
  std::string device;          // --device cpu|cuda, "" = cuda when a GPU is visible, else cpu
  std::string comm = "auto";   // --comm auto|nccl|mpi
  std::string dtype = "fp32";  // --dtype fp32|tf32|bf16: storage and GEMM math

  // Training
  libpipe::TrainOptions train;  // schedule, micro-batches, optimizer, lr schedule, clipping, checkpointing
  int virtual_stages = 1;        // --virtual-stages V (resolved against the schedule: zb-v runs 2)
  libpipe::ChunkPlacement placement = libpipe::ChunkPlacement::looped;  // the schedule's
  int steps = 100;
  std::string data;              // --data PATH, "" = the built-in synthetic data
  std::string val_data;          // --val-data PATH
  std::string data_format = "auto";
  int eval_every = 0;            // validation loss every N steps (0: off)
  int eval_batches = 4;          // micro-batches per replica for a validation pass
  int threads = 1;               // CPU backend threads per rank
  std::string metrics;           // --metrics FILE (JSON lines), "" = none
  std::string trace;             // --trace FILE (Chrome trace-event JSON), "" = none
  std::string profile_out;       // --profile-out FILE (measured F, B, W per stage for pipe-sim), "" = none
  std::string save;              // --save DIR, "" = no checkpoints
  int save_every = 0;            // checkpoint every N steps (0: only at the end)
  int keep_checkpoints = 2;      // complete checkpoints kept in --save (0: all)
  std::string load;              // --load DIR, "" = start fresh
  std::string config;            // --config FILE
  std::string schedule_file;     // --schedule-file FILE, "" = the --schedule kind
};

// Parses argv; throws libpipe::Error with a one-line message on bad or conflicting flags.
Options parse_options(int argc, char** argv);
// --comm-timeout's value from the command line alone (--comm-timeout S or --comm-timeout=S), for the wait in
// MPI_Init, before the flags can be parsed in full; 0 when absent or not a number (the full parse reports it).
double comm_timeout_before_init(int argc, char** argv);
std::string help_text();
// --plan auto: the plan's layout (pipe-plan --auto's flags) becomes the options' own, as if given.
void apply_plan(Options& o, const libpipe::AutoPlan& plan);
// The planner's request for this job on `world_size` ranks (rate left to pipe_apps::calibrate_rate).
libpipe::AutoPlanRequest plan_request(const Options& o, int world_size);

// The memory model's view of the run (pipe/memory_model.hpp): micro-batch size, optimizer, dtype, checkpointing,
// and the optimizer state split over `data_parallel` replicas under --zero 1; on the CPU (`device`) the compute
// libraries' own memory.
libpipe::MemoryModelOptions memory_model_options(const Options& o, int data_parallel, libpipe::Device device);

}  // namespace pipe_train
