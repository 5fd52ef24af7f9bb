// PipelineModule construction (see pipeline_module.hpp).
#include "pipe/pipeline_module.hpp"

#include <algorithm>

#include "run/mpi_check.hpp"
#include "pipe/collective.hpp"
#include "pipe/error.hpp"
#include "pipe/watchdog.hpp"

namespace libpipe {
namespace {

std::string parts_str(const int* parts, std::size_t n) {
  std::string s = "[";
  for (std::size_t i = 0; i < n; ++i) s += (i ? "," : "") + std::to_string(parts[i]);
  return s + "]";
}

int chunk_of(const Parts& parts, int layer) {
  return static_cast<int>(std::upper_bound(parts.begin(), parts.end(), layer) - parts.begin()) - 1;
}

}  // namespace

PipelineModule::PipelineModule(const ModelSpec& model, const ModelDescription& description,
                               const LayerRegistry& registry, const PipelineParallelGrid& grid, const Parts& parts,
                               const ModuleOptions& options)
    : stage_id_(grid.stage_id()),
      device_(options.device),
      parts_(parts),
      virtual_stages_(options.virtual_stages),
      placement_(options.placement) {
  const int stages = grid.num_stages();
  if (virtual_stages_ < 1) throw Error("virtual stages must be at least 1, got " + std::to_string(virtual_stages_));
  const int chunks = stages * virtual_stages_;
  if (static_cast<int>(parts_.size()) != chunks + 1)
    throw Error("the partition has " + std::to_string(static_cast<int>(parts_.size()) - 1) +
                (virtual_stages_ > 1 ? " chunks but " + std::to_string(stages) + " stages x " +
                                           std::to_string(virtual_stages_) + " virtual stages need " +
                                           std::to_string(chunks)
                                     : " stages but the grid has " + std::to_string(stages)));
  // Collective steps first, local ones last: a rank failing to create a
  // layer must not leave the others waiting in a collective.
  check_ranks_agree(description, grid);
  validate_parts(parts_, static_cast<std::int64_t>(description.layers.size()));
  int first_local = 0;
  for (int c : stage_chunks(placement_, stage_id_, stages, virtual_stages_)) {
    chunks_.push_back(LocalChunk{c, parts_[c], parts_[c + 1], first_local});
    first_local += parts_[c + 1] - parts_[c];
  }
  build_tie_groups(description, grid);

  try {
    create_local_layers(model, description, registry, options);
  } catch (...) {
    free_comms();  // the destructor does not run for a constructor that throws
    throw;
  }
}

void PipelineModule::create_local_layers(const ModelSpec& model, const ModelDescription& description,
                                         const LayerRegistry& registry, const ModuleOptions& options) {
  // (global layer, its chunk) of every local layer, in order.
  std::vector<std::pair<int, int>> local;
  for (const LocalChunk& chunk : chunks_)
    for (int i = chunk.begin; i < chunk.end; ++i) local.emplace_back(i, chunk.chunk);
  for (const auto& [i, chunk] : local) {
    const LayerInfo& info = description.layers[i];
    const LayerSpec& spec = model.layers[i];
    std::unique_ptr<Layer> layer;
    try {
      layer = registry.get(spec.type).create(spec.args, info.input, CreateContext{i, options.seed, options.device});
    } catch (const Error& e) {
      throw Error(spec.where.str() + ": layer " + std::to_string(i) + " (" + spec.type + ") on stage " +
                  std::to_string(stage_id_) + (virtual_stages_ > 1 ? " (chunk " + std::to_string(chunk) + ")" : "") +
                  ": " + e.what());
    }
    // A plugin whose create() disagrees with its describe() would break the
    // partition and the checkpoints silently: refuse it here.
    std::int64_t created = 0;
    for (const auto& p : layer->parameters()) created += p.value.numel();
    if (created != info.description.param_count())
      throw Error("layer " + std::to_string(i) + " (" + spec.type + ") created " + std::to_string(created) +
                  " parameters but its describe() announced " + std::to_string(info.description.param_count()) +
                  " (a bug in the plugin " + registry.source_of(spec.type) + ")");
    layers_.push_back(LocalLayer{i, spec.type, std::move(layer)});
  }
}

PipelineModule::~PipelineModule() { free_comms(); }

void PipelineModule::free_comms() noexcept {
  int finalized = 0;
  MPI_Finalized(&finalized);
  for (auto& tie : ties_)
    if (tie.comm != MPI_COMM_NULL && !finalized) MPI_Comm_free(&tie.comm);
}

std::size_t PipelineModule::parameter_bytes() const {
  std::size_t n = 0;
  for (const auto& l : layers_) n += l.layer->parameter_bytes();
  return n;
}

// Every rank planned the partition on its own; a difference (another model
// file, plugin or flag on one node) would deadlock the pipeline later, so it
// is an error now, the same on every rank.
void PipelineModule::check_ranks_agree(const ModelDescription& description, const PipelineParallelGrid& grid) const {
  const long long mine = static_cast<long long>(model_fingerprint(description) >> 1);
  std::vector<long long> models(grid.world_size());
  allgather(grid.world(), &mine, models.data(), 1, MPI_LONG_LONG, "its model's fingerprint");
  for (int r = 1; r < grid.world_size(); ++r)
    if (models[r] != models[0])
      throw Error("the ranks disagree on the model: rank " + std::to_string(r) +
                  " described different layers, shapes or ties than rank 0 (do all ranks see the same model file, "
                  "plugins and flags?)");
  const int n = static_cast<int>(parts_.size());
  std::vector<int> all(static_cast<std::size_t>(n) * grid.world_size());
  allgather(grid.world(), parts_.data(), all.data(), n, MPI_INT, "its partition");
  for (int r = 1; r < grid.world_size(); ++r)
    if (!std::equal(all.begin(), all.begin() + n, all.begin() + static_cast<std::ptrdiff_t>(r) * n))
      throw Error("the ranks disagree on the partition: rank 0 has " + parts_str(all.data(), n) + " but rank " +
                  std::to_string(r) + " has " + parts_str(all.data() + static_cast<std::ptrdiff_t>(r) * n, n) +
                  " (do all ranks see the same model file, plugins and flags?)");
}

// One MPI_Comm_split per tie group, in the description's order (the same on
// every rank): the ranks of the stages holding the group, within each
// data/model replica, ordered by their first layer in the group.
void PipelineModule::build_tie_groups(const ModelDescription& description, const PipelineParallelGrid& grid) {
  const int replica = grid.data_parallel_id() * grid.model_parallel_size() + grid.model_parallel_id();
  try {
    for (const TieGroup& group : description.ties) {
      LocalTieGroup tie;
      tie.key = group.key;
      tie.layers = group.layers;
      for (int layer : group.layers) {  // ascending
        const int stage = chunk_stage(placement_, chunk_of(parts_, layer), grid.num_stages());
        if (std::find(tie.stages.begin(), tie.stages.end(), stage) == tie.stages.end()) tie.stages.push_back(stage);
        if (stage == stage_id_) tie.local_layers.push_back(layer);
      }
      const bool member = !tie.local_layers.empty();
      // Ranked by their first layer in the group, so that rank 0 of the communicator holds the group's first
      // layer, whose initial value every copy takes (by stage without virtual stages).
      MPI_Comm comm = MPI_COMM_NULL;
      const Watch watch("MPI_Comm_split for the tied weights '" + tie.key + "'", collective_timeout());
      PIPE_MPI_CHECK(MPI_Comm_split(grid.world(), member ? replica : MPI_UNDEFINED,
                                    member ? tie.local_layers.front() : 0, &comm),
                     grid.global_rank());
      if (!member) continue;
      tie.comm = comm;
      for (int stage : tie.stages) tie.ranks.push_back(grid.stage_to_global(stage));
      ties_.push_back(std::move(tie));
    }
  } catch (...) {
    free_comms();
    throw;
  }
}

}  // namespace libpipe
