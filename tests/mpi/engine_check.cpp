// engine_check STAGES DATA_PARALLEL STEPS
//
// Trains gpt-tiny with the PipelineEngine on a pipe x data grid, then checks
// on every rank that:
//  - every copy of a tied weight is bit-identical across the stages of its tie
//    group (and across local copies), after the updates;
//  - every parameter is bit-identical across the data-parallel replicas;
//  - the losses are finite and the same on every rank;
//  - the trace of the last step speaks the schedule's vocabulary: one event
//    per instruction of each kind the engine times (all but loads), and one
//    wait for the step's sends.
#include <mpi.h>

#include <climits>
#include <cmath>
#include <cstdio>
#include <string>

#include "pipe/data.hpp"
#include "pipe/describe.hpp"
#include "pipe/engine.hpp"
#include "pipe/grid.hpp"
#include "pipe/model.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/pipeline_module.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/schedule.hpp"
#include "pipe/work_kind.hpp"

namespace {

int g_rank = 0, g_failures = 0;

void expect(bool ok, const std::string& what) {
  if (ok) return;
  ++g_failures;
  std::fprintf(stderr, "engine_check rank %d: FAIL: %s\n", g_rank, what.c_str());
}

long long hash_of(const libpipe::Tensor& t) {
  unsigned long long h = 1469598103934665603ULL;
  const auto* bytes = static_cast<const unsigned char*>(t.data());
  for (std::size_t i = 0; i < t.bytes(); ++i) h = (h ^ bytes[i]) * 1099511628211ULL;
  return static_cast<long long>(h >> 1);
}

// The same value on every member of `comm`?
bool agree(long long value, MPI_Comm comm) {
  long long lo = 0, hi = 0;
  MPI_Allreduce(&value, &lo, 1, MPI_LONG_LONG, MPI_MIN, comm);
  MPI_Allreduce(&value, &hi, 1, MPI_LONG_LONG, MPI_MAX, comm);
  return lo == hi;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (argc < 4) {
    if (g_rank == 0) std::fprintf(stderr, "usage: engine_check STAGES DATA_PARALLEL STEPS\n");
    MPI_Finalize();
    return 2;
  }
  try {
    const int stages = std::stoi(argv[1]), replicas = std::stoi(argv[2]), steps = std::stoi(argv[3]);
    libpipe::LayerRegistry registry;
    libpipe::load_plugins(registry, libpipe::PluginSearch{true, false, {}});
    auto model = libpipe::load_model_file(libpipe::resolve_model_path("gpt-tiny"));
    auto d = libpipe::describe_model(model, registry);
    libpipe::PipelineParallelGrid grid(MPI_COMM_WORLD, libpipe::PipeDataParallelTopology(stages, replicas));
    auto plan = libpipe::plan_partition(d, "parameters", stages);
    libpipe::PipelineModule module(model, d, registry, grid, plan.parts);
    libpipe::TrainOptions options;
    options.micro_batches = 3;
    options.micro_batch_size = 2;
    libpipe::PipelineEngine engine(module, grid, d, options);
    auto data = libpipe::make_synthetic_data(d, 5);
    for (int s = 0; s < steps; ++s) {
      if (s == steps - 1) engine.start_trace();
      auto stats = engine.train_step(*data, s);
      expect(std::isfinite(stats.loss) && std::isfinite(stats.grad_norm), "non-finite loss or gradient norm");
      expect(agree(static_cast<long long>(std::llround(stats.loss * 1e12)), MPI_COMM_WORLD),
             "ranks report different losses");
    }
    // The last step's trace against the stage's schedule, kind by kind.
    int scheduled[libpipe::kNumWorkKinds] = {}, traced[libpipe::kNumWorkKinds] = {};
    const auto schedule = libpipe::make_schedule(options.schedule, stages, options.micro_batches, grid.stage_id());
    for (const auto& step : schedule.steps)
      for (const auto& in : step) ++scheduled[static_cast<int>(in.kind)];
    scheduled[static_cast<int>(libpipe::WorkKind::LoadMicroBatch)] = 0;  // loads are not timed
    scheduled[static_cast<int>(libpipe::WorkKind::WaitSends)] = 1;
    for (const auto& e : engine.trace()) {
      ++traced[static_cast<int>(e.kind)];
      expect(e.end >= e.start, std::string(libpipe::work_kind_name(e.kind)) + " ends before it starts");
    }
    for (int k = 0; k < libpipe::kNumWorkKinds; ++k)
      expect(traced[k] == scheduled[k],
             std::string(libpipe::work_kind_name(static_cast<libpipe::WorkKind>(k))) + ": " +
                 std::to_string(traced[k]) + " trace events for " + std::to_string(scheduled[k]) + " expected");
    // Tied weights: local copies equal, and equal across the tie group.
    for (const auto& tie : module.tie_groups()) {
      long long first = LLONG_MIN;
      for (auto& l : module.layers())
        for (int index : tie.local_layers)
          if (l.index == index)
            for (auto& p : l.layer->parameters())
              if (p.spec.tieable) {
                long long h = hash_of(p.value);
                if (first == LLONG_MIN) first = h;
                expect(h == first, "local copies of tie '" + tie.key + "' differ");
              }
      expect(agree(first, tie.comm), "copies of tie '" + tie.key + "' differ across stages " +
                                         std::to_string(tie.stages.front()) + ".." +
                                         std::to_string(tie.stages.back()));
    }
    // Replicas: every parameter identical across the data-parallel group.
    for (auto& l : module.layers())
      for (auto& p : l.layer->parameters())
        expect(agree(hash_of(p.value), grid.data_parallel_comm()),
               "layer " + std::to_string(l.index) + " " + p.spec.name + " differs between replicas");
  } catch (const std::exception& e) {
    expect(false, e.what());
  }
  int failures = 0;
  MPI_Allreduce(&g_failures, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0) std::printf("engine_check: %s (%d failures)\n", failures ? "FAILED" : "OK", failures);
  MPI_Finalize();
  return failures ? 1 : 0;
}
