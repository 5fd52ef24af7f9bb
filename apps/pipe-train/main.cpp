// pipe-train: the pipeline-parallel training job, launched with mpirun.
//
// Every phase runs on all ranks and ends with an agreement on success (see
// pipe/collective.hpp), so a bad flag, model or topology ends every rank with
// one clear line instead of leaving some of them waiting.
#include <cstdio>
#include <iostream>
#include <memory>
#include <mpi.h>
#include <nlohmann/json.hpp>

#include "job_topology.hpp"
#include "options.hpp"
#include "pipe/collective.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/grid.hpp"
#include "pipe/model.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"
#include "pipe/topology.hpp"

namespace {

constexpr const char* kProgram = "pipe-train";
constexpr const char* kVersion = "0.1.0";

// One rank's place in the grid, as a JSON line.
std::string grid_json(const libpipe::PipelineParallelGrid& grid) {
  const auto& topo = grid.topology();
  nlohmann::json coord = nlohmann::json::object();
  for (const auto& axis : topo.axes()) coord[axis] = topo.get_coord(grid.global_rank(), axis);
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
  };
  return j.dump();
}

void print_layer_list(const libpipe::LayerRegistry& registry) {
  for (const auto& name : registry.names())
    std::printf("%-22s %s\n%-22s   from %s\n", name.c_str(), registry.get(name).summary().c_str(), "",
                registry.source_of(name).c_str());
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
  if (!libpipe::run_phase_on_all(world, [&] { options = pipe_train::parse_options(argc, argv); }, result))
    return failed();
  if (options.help || options.version) {
    if (rank == 0) std::cout << (options.help ? pipe_train::help_text() : std::string(kProgram) + " " + kVersion + "\n");
    return 0;
  }

  libpipe::LayerRegistry registry;
  auto load = [&] {
    libpipe::load_plugins(registry, libpipe::PluginSearch{options.builtin_plugins, true, options.plugin_dirs});
  };
  if (!libpipe::run_phase_on_all(world, load, result)) return failed();
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
  if (!libpipe::run_phase_on_all(world, check_model, result)) return failed();
  if (options.describe) {
    if (rank == 0) std::cout << libpipe::format_description(description);
    return 0;
  }

  std::unique_ptr<libpipe::PipelineParallelGrid> grid;
  auto build_grid = [&] {
    grid = std::make_unique<libpipe::PipelineParallelGrid>(world, pipe_train::job_topology(options, size));
  };
  if (!libpipe::run_phase_on_all(world, build_grid, result)) return failed();

  if (!options.dry_run) {
    result = {false, "training is not available yet (the engine is a later issue); use --dry-run, --describe or "
                     "--list-layers"};
    return failed();
  }
  auto lines = libpipe::gather_strings(world, grid_json(*grid));
  if (rank == 0) {
    std::fprintf(stderr, "%s: dry run: model %s (%zu layers, %s parameters) on %s, %d ranks\n", kProgram,
                 description.name.c_str(), description.layers.size(), libpipe::with_commas(description.params).c_str(),
                 grid->topology().str().c_str(), size);
    for (const auto& line : lines) std::cout << line << "\n";
    std::cout.flush();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rc = run(MPI_COMM_WORLD, argc, argv);
  MPI_Finalize();
  return rc;
}
