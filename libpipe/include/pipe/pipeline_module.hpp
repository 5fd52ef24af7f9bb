// PipelineModule: this rank's part of the model. Every rank plans the whole
// model from descriptions (cheap, nothing allocated), checks that all ranks
// agree on the partition, then creates only the layers of its own stage, each
// seeded by its global index so that initial weights do not depend on the
// partition. With virtual stages the partition has S x V chunks and the stage
// holds V of them (ModuleOptions: how many and where, schedule.hpp). Tied layers are indexed into tie groups spanning the stages that
// use them, with a communicator per group (per data/model replica).
#pragma once

#include <cstdint>
#include <memory>
#include <mpi.h>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/grid.hpp"
#include "pipe/layer.hpp"
#include "pipe/model.hpp"
#include "pipe/partition.hpp"
#include "pipe/registry.hpp"
#include "pipe/schedule.hpp"

namespace libpipe {

struct LocalLayer {
  int index = 0;  // global layer index
  std::string type;
  std::unique_ptr<Layer> layer;
};

// A tie group as seen from one rank that takes part in it.
struct LocalTieGroup {
  std::string key;
  std::vector<int> layers;        // global indices of every layer in the group
  std::vector<int> local_layers;  // those on this stage
  std::vector<int> stages;        // stages holding the group, in the order of their first layer in it
  // World ranks of those stages in this rank's data/model replica, in stage
  // order: the communicator's rank order. Its first rank owns the weight.
  std::vector<int> ranks;
  MPI_Comm comm = MPI_COMM_NULL;
};

struct ModuleOptions {
  std::uint64_t seed = 1234;
  Device device = Device::cpu;
  int virtual_stages = 1;  // V: chunks per stage; the partition then has S x V parts
  ChunkPlacement placement = ChunkPlacement::looped;
};

// One chunk (virtual stage) this stage holds: global layers [begin, end),
// which are module.layers()[first_local, first_local + end - begin).
struct LocalChunk {
  int chunk = 0;
  int begin = 0;
  int end = 0;
  int first_local = 0;
};

class PIPE_API PipelineModule {
 public:
  // Collective over grid.world(). Throws libpipe::Error on every rank when the
  // ranks disagree on the model or on `parts`, or `parts` does not fit the
  // grid's stage count.
  PipelineModule(const ModelSpec& model, const ModelDescription& description, const LayerRegistry& registry,
                 const PipelineParallelGrid& grid, const Parts& parts, const ModuleOptions& options = {});
  ~PipelineModule();
  PipelineModule(const PipelineModule&) = delete;
  PipelineModule& operator=(const PipelineModule&) = delete;

  int stage_id() const { return stage_id_; }
  // Where the layers' parameters live (ModuleOptions::device); the engine moves data there.
  Device device() const { return device_; }
  // The partition into chunks (one per stage without virtual stages).
  const Parts& parts() const { return parts_; }
  // This stage's chunks, ascending.
  const std::vector<LocalChunk>& chunks() const { return chunks_; }
  int virtual_stages() const { return virtual_stages_; }
  ChunkPlacement placement() const { return placement_; }
  int begin() const { return chunks_.front().begin; }  // first local layer
  int end() const { return chunks_.back().end; }       // one past the last
  std::vector<LocalLayer>& layers() { return layers_; }
  const std::vector<LocalLayer>& layers() const { return layers_; }
  // Bytes of parameter storage this rank allocated.
  std::size_t parameter_bytes() const;
  // The tie groups this stage takes part in.
  const std::vector<LocalTieGroup>& tie_groups() const { return ties_; }

 private:
  void check_ranks_agree(const ModelDescription& description, const PipelineParallelGrid& grid) const;
  void build_tie_groups(const ModelDescription& description, const PipelineParallelGrid& grid);
  void create_local_layers(const ModelSpec& model, const ModelDescription& description,
                           const LayerRegistry& registry, const ModuleOptions& options);
  void free_comms() noexcept;

  int stage_id_ = 0;
  Device device_ = Device::cpu;
  Parts parts_;
  int virtual_stages_ = 1;
  ChunkPlacement placement_ = ChunkPlacement::looped;
  std::vector<LocalChunk> chunks_;
  std::vector<LocalLayer> layers_;
  std::vector<LocalTieGroup> ties_;
};

}  // namespace libpipe
