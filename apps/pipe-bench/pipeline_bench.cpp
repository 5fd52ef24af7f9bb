// pipe-bench pipeline (under mpirun, e.g. -np 4): the real engine training a
// shipped model on 1, 2 and 4 stages (the first S ranks; the others wait) for
// 1 to 32 micro-batches: step time, tokens/s and the measured bubble (the share
// of each rank's step not spent computing, averaged over the stages) beside
// the schedule's theoretical (S-1)/(M+S-1). Ranks beyond the machine's cores
// are oversubscribed, and the table says so. The loss is checked finite and
// equal on all ranks in the same loop.
#include <mpi.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench.hpp"
#include "pipe/data.hpp"
#include "pipe/engine.hpp"
#include "pipe/error.hpp"
#include "pipe/grid.hpp"
#include "pipe/model.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/pipeline_module.hpp"
#include "pipe/plugin_loader.hpp"

namespace po = boost::program_options;

namespace pipe_bench {

int run_pipeline(const std::vector<std::string>& args, const std::string& command_line) {
  std::string model_name = "gpt-tiny", method = "type:TransformerBlock";
  int micro_batch_size = 16, steps = 3;  // 16: the batch of FACTS.md's DeepSpeed figures
  bool json = false;
  po::options_description d("pipe-bench pipeline options (run with mpirun -np 4)");
  // clang-format off
  d.add_options()
    ("model", po::value(&model_name)->default_value(model_name), "model file or shipped model name")
    ("partition-method", po::value(&method)->default_value(method), "how to split the layers")
    ("micro-batch-size", po::value(&micro_batch_size)->default_value(micro_batch_size), "samples per micro-batch")
    ("steps", po::value(&steps)->default_value(steps), "timed steps per configuration (after one warm-up step)")
    ("json", po::bool_switch(&json), "print one JSON object")
    ("help,h", "show this help");
  // clang-format on
  po::variables_map vm;
  if (!parse_flags(args, d, "usage: mpirun -np 4 pipe-bench pipeline [--json]", vm)) return 0;
  if (steps < 1 || micro_batch_size < 1)
    throw libpipe::Error("--steps and --micro-batch-size must be at least 1, not " + std::to_string(steps) + " and " +
                         std::to_string(micro_batch_size));
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) MPI_Init(nullptr, nullptr);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());

  libpipe::LayerRegistry registry;
  libpipe::load_plugins(registry, libpipe::PluginSearch{true, true, {}});
  auto model = libpipe::load_model_file(libpipe::resolve_model_path(model_name));
  auto description = libpipe::describe_model(model, registry);
  const std::int64_t tokens_per_sample =
      description.input.dtype == libpipe::DType::int32 ? libpipe::numel(description.input.shape) : 1;

  nlohmann::json rows = nlohmann::json::array();
  int wrong = 0;
  if (rank == 0 && !json) {
    std::printf("# %s\n# %s, micro-batch %d, 1f1b, %d cores, %d ranks\n", command_line.c_str(),
                description.name.c_str(), micro_batch_size, cores, world);
    std::printf("# %6s %6s %12s %12s %10s %10s %10s %7s\n", "stages", "micro", "step(ms)", "tokens/s", "bubble",
                "theory", "note", "check");
  }
  for (int stages : {1, 2, 4}) {
    if (stages > world || stages > static_cast<int>(description.layers.size())) continue;
    MPI_Comm sub = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, rank < stages ? 0 : MPI_UNDEFINED, rank, &sub);
    for (int micro : {1, 2, 4, 8, 16, 32}) {
      double step_s = 0, bubble = 0, loss = 0;
      bool ok = true;
      if (sub != MPI_COMM_NULL) {
        libpipe::PipelineParallelGrid grid(sub, libpipe::PipeDataParallelTopology(stages, 1));
        auto plan = libpipe::plan_partition(description, method, stages);
        libpipe::PipelineModule module(model, description, registry, grid, plan.parts);
        libpipe::TrainOptions options;
        options.micro_batches = micro;
        options.micro_batch_size = micro_batch_size;
        libpipe::PipelineEngine engine(module, grid, description, options);
        auto data = libpipe::make_synthetic_data(description, 1);
        engine.train_step(*data, 0);  // warm-up
        const libpipe::EngineTotals before = engine.totals();
        const double t0 = MPI_Wtime();
        for (int s = 1; s <= steps; ++s) {
          loss = engine.train_step(*data, s).loss;
          ok = ok && std::isfinite(loss);
        }
        step_s = (MPI_Wtime() - t0) / steps;
        const libpipe::EngineTotals& after = engine.totals();
        double mine = 1.0 - (after.compute_s - before.compute_s) / (after.step_s - before.step_s);
        MPI_Allreduce(&mine, &bubble, 1, MPI_DOUBLE, MPI_SUM, sub);
        bubble /= stages;
        MPI_Allreduce(MPI_IN_PLACE, &step_s, 1, MPI_DOUBLE, MPI_MAX, sub);
        double lo = loss, hi = loss;
        MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_DOUBLE, MPI_MIN, sub);
        MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_DOUBLE, MPI_MAX, sub);
        ok = ok && lo == hi;
      }
      MPI_Barrier(MPI_COMM_WORLD);
      if (rank == 0) {
        const double theory = libpipe::theoretical_bubble("1f1b", stages, micro);
        const double tokens = static_cast<double>(micro) * micro_batch_size * tokens_per_sample / step_s;
        const char* note = stages > cores ? "oversub" : "";
        wrong += !ok;
        rows.push_back({{"stages", stages},
                        {"micro_batches", micro},
                        {"step_ms", step_s * 1e3},
                        {"tokens_per_s", tokens},
                        {"bubble", bubble},
                        {"theoretical_bubble", theory},
                        {"oversubscribed", stages > cores},
                        {"ok", ok}});
        if (!json)
          std::printf("  %6d %6d %12.2f %12.0f %9.1f%% %9.1f%% %10s %7s\n", stages, micro, step_s * 1e3, tokens,
                      100 * bubble, 100 * theory, note, ok ? "OK" : "WRONG");
      }
    }
    if (sub != MPI_COMM_NULL) MPI_Comm_free(&sub);
  }
  if (rank == 0) {
    if (json)
      std::cout << nlohmann::json{{"benchmark", "pipeline"},
                                  {"rows", rows},
                                  {"wrong", wrong},
                                  {"command", command_line}}
                       .dump()
                << "\n";
    else
      std::printf(
          "# bubble: measured share of the step not computing (waits, reductions, optimizer included); "
          "oversub: more stages than cores\n");
  }
  MPI_Bcast(&wrong, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return wrong == 0 ? 0 : 1;
}

}  // namespace pipe_bench
