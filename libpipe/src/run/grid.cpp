// PipelineParallelGrid: one MPI_Comm_split per topology axis. The colour is
// the index of the rank's list in ProcessTopology::get_axis_comm_lists and the
// key its position there, so each communicator's rank order is the list's
// order (= coordinate order on the axis) and the grid never has to translate
// between communicator ranks and coordinates.
#include "pipe/grid.hpp"

#include <cstring>
#include <string>

#include "run/mpi_check.hpp"
#include "pipe/collective.hpp"
#include "pipe/error.hpp"
#include "pipe/watchdog.hpp"

namespace libpipe {

PipelineParallelGrid::PipelineParallelGrid(MPI_Comm world, const ProcessTopology& topology)
    : topology_(topology), world_(world) {
  int initialized = 0;
  int finalized = 0;
  PIPE_MPI_CHECK(MPI_Initialized(&initialized), -1);
  PIPE_MPI_CHECK(MPI_Finalized(&finalized), -1);
  if (!initialized || finalized) {
    throw Error("the pipeline-parallel grid needs MPI to be initialised (and not yet finalised)");
  }
  if (world == MPI_COMM_NULL) {
    throw Error("the pipeline-parallel grid needs a world communicator, not MPI_COMM_NULL");
  }
  PIPE_MPI_CHECK(MPI_Comm_rank(world_, &global_rank_), -1);
  PIPE_MPI_CHECK(MPI_Comm_size(world_, &world_size_), global_rank_);

  // Both checks use only what every rank knows alike, so every rank throws
  // and none is left blocked in a collective below.
  if (world_size_ != topology_.world_size()) {
    throw Error("world size " + std::to_string(world_size_) + " does not match the topology " +
                topology_.str() + ", which needs " + std::to_string(topology_.world_size()) +
                " ranks");
  }
  if (!topology_.has_axis("pipe")) {
    std::string axes;
    for (const auto& a : topology_.axes()) axes += (axes.empty() ? "" : ", ") + a;
    throw Error("the pipeline-parallel grid needs a \"pipe\" axis, but the topology " +
                topology_.str() + " has only the axes " + axes);
  }

  stage_id_ = topology_.get_coord(global_rank_, "pipe");
  num_stages_ = topology_.get_dim("pipe");
  if (topology_.has_axis("data")) {
    data_parallel_id_ = topology_.get_coord(global_rank_, "data");
    data_parallel_size_ = topology_.get_dim("data");
  }
  if (topology_.has_axis("model")) {
    model_parallel_id_ = topology_.get_coord(global_rank_, "model");
    model_parallel_size_ = topology_.get_dim("model");
  }

  try {
    pipe_comm_ = build_axis_comm("pipe", pipe_group_);
    data_comm_ = build_axis_comm("data", data_group_);
    model_comm_ = build_axis_comm("model", model_group_);
  } catch (...) {
    free_comms();
    throw;
  }

  prev_stage_rank_ = is_first_stage() ? -1 : stage_to_global(stage_id_ - 1);
  next_stage_rank_ = is_last_stage() ? -1 : stage_to_global(stage_id_ + 1);
}

PipelineParallelGrid::~PipelineParallelGrid() { free_comms(); }

MPI_Comm PipelineParallelGrid::build_axis_comm(const char* axis, std::vector<int>& group) {
  MPI_Comm comm = MPI_COMM_NULL;
  if (!topology_.has_axis(axis)) {
    // A local operation, unlike a split of the world: nothing to agree on.
    PIPE_MPI_CHECK(MPI_Comm_dup(MPI_COMM_SELF, &comm), global_rank_);
    group = {global_rank_};
    return comm;
  }

  const auto lists = topology_.get_axis_comm_lists(axis);
  int colour = -1;
  int key = -1;
  for (std::size_t c = 0; c < lists.size() && colour < 0; ++c) {
    for (std::size_t k = 0; k < lists[c].size(); ++k) {
      if (lists[c][k] == global_rank_) {
        colour = static_cast<int>(c);
        key = static_cast<int>(k);
        group = lists[c];
        break;
      }
    }
  }
  if (colour < 0) {
    // Cannot happen for a rank in range; checked because a split with a
    // negative colour other than MPI_UNDEFINED is erroneous.
    throw Error("internal error: rank " + std::to_string(global_rank_) +
                " is in no group along the axis \"" + axis + "\" of the topology " +
                topology_.str());
  }
  const Watch watch(std::string("MPI_Comm_split along the axis \"") + axis + "\"", collective_timeout());
  PIPE_MPI_CHECK(MPI_Comm_split(world_, colour, key, &comm), global_rank_);

  int size = 0;
  int rank = 0;
  PIPE_MPI_CHECK(MPI_Comm_size(comm, &size), global_rank_);
  PIPE_MPI_CHECK(MPI_Comm_rank(comm, &rank), global_rank_);
  if (size != static_cast<int>(group.size()) || rank != key) {
    MPI_Comm_free(&comm);
    throw Error("internal error: the \"" + std::string(axis) + "\" communicator of rank " +
                std::to_string(global_rank_) + " has size " + std::to_string(size) +
                " and rank " + std::to_string(rank) + ", expected " +
                std::to_string(group.size()) + " and " + std::to_string(key));
  }
  return comm;
}

void PipelineParallelGrid::free_comms() noexcept {
  // Freeing after MPI_Finalize is erroneous; a grid that outlives MPI (a
  // static, or one destroyed during unwinding after finalisation) just drops
  // its handles.
  int finalized = 0;
  if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) return;
  for (MPI_Comm* comm : {&pipe_comm_, &data_comm_, &model_comm_}) {
    if (*comm != MPI_COMM_NULL) MPI_Comm_free(comm);
    *comm = MPI_COMM_NULL;
  }
}

int PipelineParallelGrid::stage_to_global(int stage) const {
  if (stage < 0 || stage >= num_stages_) {
    throw Error("stage " + std::to_string(stage) + " is out of range: the pipeline has " +
                std::to_string(num_stages_) + " stages (0 to " + std::to_string(num_stages_ - 1) +
                ")");
  }
  // The pipe group holds this rank's replica's ranks in stage order.
  return pipe_group_[stage];
}

}  // namespace libpipe
