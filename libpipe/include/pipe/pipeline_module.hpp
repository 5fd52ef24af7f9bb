// PipelineModule: this rank's part of the model. Every rank plans the whole
// model from descriptions (cheap, nothing allocated), checks that all ranks
// agree on the partition, then creates only the layers of its own stage, each
// seeded by its global index so that initial weights do not depend on the
// partition. Tied layers are indexed into tie groups spanning the stages that
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
  std::vector<int> stages;        // stages holding the group, ascending
  // World ranks of those stages in this rank's data/model replica, in stage
  // order: the communicator's rank order. Its first rank owns the weight.
  std::vector<int> ranks;
  MPI_Comm comm = MPI_COMM_NULL;
};

struct ModuleOptions {
  std::uint64_t seed = 1234;
  Device device = Device::cpu;
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
  const Parts& parts() const { return parts_; }
  int begin() const { return parts_[stage_id_]; }  // first local layer
  int end() const { return parts_[stage_id_ + 1]; }  // one past the last
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
  std::vector<LocalLayer> layers_;
  std::vector<LocalTieGroup> ties_;
};

}  // namespace libpipe
