// module_check MODEL STAGES METHOD_A METHOD_B
//
// Builds the PipelineModule of MODEL on a pipe x data grid (data-parallel =
// world / STAGES) twice, partitioned by METHOD_A and by METHOD_B, and checks
// on every rank that:
//  - it built exactly the layers of its stage, and allocated exactly their
//    described parameter bytes (no more: a rank holds only its own layers);
//  - across the job every layer is built once per data-parallel replica;
//  - each layer's initial weights are identical under both partitions and in
//    every replica (seeded by global layer index, not by placement);
//  - each tie group's communicator joins exactly the ranks that hold the tied
//    layers in this replica (a real all-reduce of world ranks).
// A METHOD of 'profile' times the layers first (profile_layer_times, 2 samples
// per micro-batch) and checks that every layer got a time, that identical
// layers (same_cost_layers) got the same one, and that every rank holds the
// same vector.
// module_check --expect-disagreement MODEL STAGES: rank 1 offers a different
// partition; every rank must throw the same "disagree" error.
// module_check --expect-model-disagreement MODEL STAGES OTHER: rank 1 loads
// OTHER instead of MODEL (same partition); every rank must refuse it before
// any collective that depends on the model (no hang).
#include <mpi.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/grid.hpp"
#include "pipe/model.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/pipeline_module.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/profile.hpp"
#include "pipe/topology.hpp"

namespace {

int g_rank = 0;
int g_failures = 0;

void expect(bool ok, const std::string& what) {
  if (ok) return;
  ++g_failures;
  std::fprintf(stderr, "module_check rank %d: FAIL: %s\n", g_rank, what.c_str());
}

// FNV-1a over a layer's parameter bytes, folded to 63 bits for MPI_LONG_LONG.
long long weights_hash(libpipe::Layer& layer) {
  unsigned long long h = 1469598103934665603ULL;
  for (auto& p : layer.parameters()) {
    const auto* bytes = static_cast<const unsigned char*>(p.value.data());
    for (std::size_t i = 0; i < p.value.bytes(); ++i) h = (h ^ bytes[i]) * 1099511628211ULL;
  }
  return static_cast<long long>(h >> 1);
}

// Per global layer: hash of its weights where this rank built it, else 0.
std::vector<long long> build_and_check(const libpipe::ModelSpec& model, const libpipe::ModelDescription& d,
                                       const libpipe::LayerRegistry& registry,
                                       const libpipe::PipelineParallelGrid& grid, const std::string& method) {
  std::vector<double> times;
  if (method == "profile") {
    times = libpipe::profile_layer_times(model, d, registry, MPI_COMM_WORLD, 2);
    const std::vector<int> same = libpipe::same_cost_layers(model, d);
    for (std::size_t i = 0; i < times.size(); ++i) {
      expect(times[i] > 0, "profile: layer " + std::to_string(i) + " has no time");
      expect(times[i] == times[same[i]], "profile: layer " + std::to_string(i) + " is timed apart from layer " +
                                             std::to_string(same[i]) + ", the same layer");
    }
    std::vector<double> lowest(times.size()), highest(times.size());
    MPI_Allreduce(times.data(), lowest.data(), static_cast<int>(times.size()), MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(times.data(), highest.data(), static_cast<int>(times.size()), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    expect(lowest == highest, "profile: the ranks hold different times");
  }
  auto plan = libpipe::plan_partition(d, method, grid.num_stages(), times.empty() ? nullptr : &times);
  const std::size_t before = libpipe::allocated_bytes(libpipe::Device::cpu);
  libpipe::PipelineModule module(model, d, registry, grid, plan.parts);
  const std::size_t allocated = libpipe::allocated_bytes(libpipe::Device::cpu) - before;

  const int s = grid.stage_id();
  expect(module.begin() == plan.parts[s] && module.end() == plan.parts[s + 1], method + ": layer range");
  std::size_t described = 0;
  std::vector<long long> hashes(d.layers.size(), 0);
  int expected_index = plan.parts[s];
  for (auto& l : module.layers()) {
    expect(l.index == expected_index++, method + ": layers out of order");
    expect(l.type == d.layers[l.index].type, method + ": layer type");
    described += static_cast<std::size_t>(d.layers[l.index].description.param_count()) * 4;
    hashes[l.index] = weights_hash(*l.layer);
  }
  expect(expected_index == plan.parts[s + 1], method + ": missing layers");
  expect(allocated == described, method + ": allocated " + std::to_string(allocated) + " bytes, its layers need " +
                                     std::to_string(described));
  expect(module.parameter_bytes() == described, method + ": parameter_bytes()");

  // Every layer built exactly once per replica.
  std::vector<int> built(d.layers.size(), 0), total(d.layers.size(), 0);
  for (auto& l : module.layers()) built[l.index] = 1;
  MPI_Allreduce(built.data(), total.data(), static_cast<int>(built.size()), MPI_INT, MPI_SUM, grid.world());
  for (std::size_t i = 0; i < total.size(); ++i)
    expect(total[i] == grid.data_parallel_size(), method + ": layer " + std::to_string(i) + " built " +
                                                      std::to_string(total[i]) + " times");

  // Tie groups: the communicator joins the ranks that hold the tied layers.
  for (const auto& tie : module.tie_groups()) {
    int size = 0, sum = 0, mine = grid.global_rank();
    MPI_Comm_size(tie.comm, &size);
    MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, tie.comm);
    expect(size == static_cast<int>(tie.ranks.size()), method + ": tie '" + tie.key + "' communicator size");
    expect(sum == std::accumulate(tie.ranks.begin(), tie.ranks.end(), 0), method + ": tie '" + tie.key + "' members");
    bool holds = false;
    for (int r : tie.ranks) holds = holds || r == grid.global_rank();
    expect(holds && !tie.local_layers.empty(), method + ": tie '" + tie.key + "' on a rank without its layers");
    for (int stage : tie.stages)
      expect(stage >= 0 && stage < grid.num_stages(), method + ": tie stage out of range");
  }
  // A stage holding a tied layer must be in that group.
  for (const auto& group : d.ties)
    for (int layer : group.layers)
      if (layer >= module.begin() && layer < module.end()) {
        bool found = false;
        for (const auto& tie : module.tie_groups()) found = found || tie.key == group.key;
        expect(found, method + ": stage holds a layer of tie '" + group.key + "' but is not in its group");
      }
  return hashes;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  bool disagreement = argc > 1 && std::strcmp(argv[1], "--expect-disagreement") == 0;
  bool model_disagreement = argc > 1 && std::strcmp(argv[1], "--expect-model-disagreement") == 0;
  int arg = (disagreement || model_disagreement) ? 2 : 1;
  if (argc < arg + 2) {
    if (g_rank == 0) std::fprintf(stderr, "usage: module_check MODEL STAGES METHOD_A METHOD_B\n");
    MPI_Finalize();
    return 2;
  }
  try {
    libpipe::LayerRegistry registry;
    libpipe::load_plugins(registry, libpipe::PluginSearch{true, false, {}});
    auto model = libpipe::load_model_file(libpipe::resolve_model_path(argv[arg]));
    auto d = libpipe::describe_model(model, registry);
    int stages = std::stoi(argv[arg + 1]);
    libpipe::PipelineParallelGrid grid(MPI_COMM_WORLD, libpipe::PipeDataParallelTopology(stages, size / stages));

    if (model_disagreement) {
      if (argc < arg + 3) throw libpipe::Error("need the other model");
      auto other = libpipe::load_model_file(libpipe::resolve_model_path(argv[arg + 2]));
      auto other_d = libpipe::describe_model(other, registry);
      auto parts = libpipe::partition_uniform(static_cast<std::int64_t>(d.layers.size()), stages);
      try {
        if (g_rank == 1)
          libpipe::PipelineModule module(other, other_d, registry, grid, parts);
        else
          libpipe::PipelineModule module(model, d, registry, grid, parts);
        expect(false, "different models were accepted");
      } catch (const libpipe::Error& e) {
        expect(std::string(e.what()).find("the ranks disagree on the model: rank 1") == 0,
               std::string("unexpected error: ") + e.what());
        if (g_rank == 0) std::printf("%s\n", e.what());
      }
    } else if (disagreement) {
      auto parts = libpipe::partition_uniform(static_cast<std::int64_t>(d.layers.size()), stages);
      if (g_rank == 1) parts[1] += 1;
      try {
        libpipe::PipelineModule module(model, d, registry, grid, parts);
        expect(false, "a disagreeing partition was accepted");
      } catch (const libpipe::Error& e) {
        expect(std::string(e.what()).find("the ranks disagree on the partition: rank 0 has") == 0,
               std::string("unexpected error: ") + e.what());
        if (g_rank == 0) std::printf("%s\n", e.what());
      }
    } else {
      if (argc < arg + 4) throw libpipe::Error("need two methods");
      auto a = build_and_check(model, d, registry, grid, argv[arg + 2]);
      auto b = build_and_check(model, d, registry, grid, argv[arg + 3]);
      // Combine: every layer is built somewhere in each replica; compare the
      // max over ranks (identical replicas make max == each one's hash).
      std::vector<long long> max_a(a.size()), max_b(b.size()), min_a(a.size());
      MPI_Allreduce(a.data(), max_a.data(), static_cast<int>(a.size()), MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
      MPI_Allreduce(b.data(), max_b.data(), static_cast<int>(b.size()), MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
      for (auto& h : a) h = h ? h : LLONG_MAX;  // layers not built here do not count for the minimum
      MPI_Allreduce(a.data(), min_a.data(), static_cast<int>(a.size()), MPI_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
      for (std::size_t i = 0; i < a.size(); ++i) {
        expect(max_a[i] == max_b[i], "layer " + std::to_string(i) + ": initial weights depend on the partition");
        expect(min_a[i] == max_a[i], "layer " + std::to_string(i) + ": initial weights differ between replicas");
      }
    }
  } catch (const std::exception& e) {
    expect(false, e.what());
  }
  int failures = 0;
  MPI_Allreduce(&g_failures, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0) std::printf("module_check: %s (%d failures)\n", failures ? "FAILED" : "OK", failures);
  MPI_Finalize();
  return failures ? 1 : 0;
}
