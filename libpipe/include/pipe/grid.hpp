// The pipeline-parallel grid of one job: where this rank sits in the
// ProcessTopology and the MPI communicators along each axis (pipe,
// data-parallel, model), built collectively like DeepSpeed's
// PipelineParallelGrid. Point-to-point partners (previous and next stage) are
// world ranks, so stage-to-stage messages go over the world communicator.
#pragma once

#include <mpi.h>

#include <vector>

#include "pipe/export.hpp"
#include "pipe/topology.hpp"

namespace libpipe {

class PIPE_API PipelineParallelGrid {
 public:
  // Collective over `world`: every rank of it must call this with the same
  // topology. Throws libpipe::Error on every rank, before any communication so
  // that no rank is left waiting, when the size of `world` differs from
  // topology.world_size() or the topology has no "pipe" axis. `world` is
  // used as given, not duplicated, and must outlive the grid.
  PipelineParallelGrid(MPI_Comm world, const ProcessTopology& topology);
  // Frees the communicators the grid created (collective, like their
  // creation); does nothing for them once MPI is finalised.
  ~PipelineParallelGrid();
  PipelineParallelGrid(const PipelineParallelGrid&) = delete;
  PipelineParallelGrid& operator=(const PipelineParallelGrid&) = delete;

  const ProcessTopology& topology() const { return topology_; }
  MPI_Comm world() const { return world_; }
  int global_rank() const { return global_rank_; }
  int world_size() const { return world_size_; }

  int stage_id() const { return stage_id_; }
  int num_stages() const { return num_stages_; }
  // 0 and 1 when the topology has no "data" axis.
  int data_parallel_id() const { return data_parallel_id_; }
  int data_parallel_size() const { return data_parallel_size_; }
  // 0 and 1 when the topology has no "model" axis.
  int model_parallel_id() const { return model_parallel_id_; }
  int model_parallel_size() const { return model_parallel_size_; }

  bool is_first_stage() const { return stage_id_ == 0; }
  bool is_last_stage() const { return stage_id_ == num_stages_ - 1; }
  // World ranks of the neighbouring stages in this rank's pipe group; -1 at
  // the ends (the pipeline does not wrap around).
  int prev_stage_rank() const { return prev_stage_rank_; }
  int next_stage_rank() const { return next_stage_rank_; }
  // World rank of `stage` with this rank's other coordinates; throws
  // libpipe::Error if stage is not in [0, num_stages()).
  int stage_to_global(int stage) const;

  // Communicator rank i is member i of the matching group below. Where the
  // topology lacks the axis, a communicator of this rank alone.
  MPI_Comm pipe_comm() const { return pipe_comm_; }
  MPI_Comm data_parallel_comm() const { return data_comm_; }
  MPI_Comm model_comm() const { return model_comm_; }
  // World ranks of this rank's groups, ascending (= communicator rank order).
  const std::vector<int>& pipe_group() const { return pipe_group_; }
  const std::vector<int>& data_parallel_group() const { return data_group_; }
  const std::vector<int>& model_group() const { return model_group_; }

 private:
  MPI_Comm build_axis_comm(const char* axis, std::vector<int>& group);
  void free_comms() noexcept;

  ProcessTopology topology_;
  MPI_Comm world_ = MPI_COMM_NULL;
  int global_rank_ = 0;
  int world_size_ = 1;
  int stage_id_ = 0;
  int num_stages_ = 1;
  int data_parallel_id_ = 0;
  int data_parallel_size_ = 1;
  int model_parallel_id_ = 0;
  int model_parallel_size_ = 1;
  int prev_stage_rank_ = -1;
  int next_stage_rank_ = -1;
  MPI_Comm pipe_comm_ = MPI_COMM_NULL;
  MPI_Comm data_comm_ = MPI_COMM_NULL;
  MPI_Comm model_comm_ = MPI_COMM_NULL;
  std::vector<int> pipe_group_;
  std::vector<int> data_group_;
  std::vector<int> model_group_;
};

}  // namespace libpipe
