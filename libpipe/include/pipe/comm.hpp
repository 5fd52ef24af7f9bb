// Comm: how tensors move between ranks. Point-to-point transfers are
// non-blocking (a request to wait on), collectives are in place, so the engine
// never calls MPI or NCCL for tensors. Two implementations:
//  - MPI: host tensors directly; device tensors staged through host memory
//    (any MPI, no GPU-aware build needed; the way for ranks that share a GPU);
//  - NCCL: device tensors, on a communication stream of its own, ordered with
//    the CUDA backend's compute stream by events (wait() blocks the compute
//    stream, not the host, unless a timeout is set).
// Each Comm counts the bytes it sent and received, for reports.
#pragma once

#include <cstdint>
#include <memory>
#include <mpi.h>
#include <string>

#include "pipe/export.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

// What a device transfer still has to do or wait for when its request
// completes (a host staging buffer and its copy to the device, a CUDA event).
// Each Comm implementation derives its own.
struct PIPE_API CommRequestState {
  virtual ~CommRequestState();
};

// A pending transfer. Completed (or never started) when !active(). A plain
// MPI transfer of host memory carries no state (a null pointer: as cheap to
// copy as the request alone).
struct CommRequest {
  MPI_Request mpi = MPI_REQUEST_NULL;
  std::shared_ptr<CommRequestState> state;
  std::string what;  // for a timeout's message, e.g. "the activation of micro-batch 3 from stage 0 (rank 0)"
  // `what` names the peer rank that a timeout waited on (a transfer): the message then names that rank, the one
  // that stalled, and not this one, the one that waited.
  bool names_peer = false;
  bool active() const { return mpi != MPI_REQUEST_NULL || state != nullptr; }
};

struct CommStats {
  std::int64_t bytes_sent = 0;
  std::int64_t bytes_received = 0;
};

// The slice of an n-element tensor that group rank `rank` of `size` owns when state is split over a group (ZeRO
// stage 1): equal slices of ceil(n / size) elements in rank order, so the last ones may be shorter or empty (equal
// slices are what NCCL's reduce-scatter and all-gather move).
struct ShardRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t size() const { return end - begin; }
};
PIPE_API ShardRange shard_range(std::int64_t numel, int size, int rank);

enum class CommKind { mpi, nccl };
PIPE_API const char* comm_kind_name(CommKind kind);

class PIPE_API Comm {
 public:
  virtual ~Comm();
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // `t` must stay alive and unchanged (isend) or untouched (irecv) until wait.
  virtual CommRequest isend(const Tensor& t, int peer, int tag) = 0;
  virtual CommRequest irecv(Tensor& t, int peer, int tag) = 0;
  // Completes the request. A device transfer may complete in stream order:
  // work the backend issues afterwards sees the data, the host may not yet.
  virtual void wait(CommRequest& request) = 0;
  // True (and the request completed) when the transfer is done; never blocks.
  virtual bool test(CommRequest& request) = 0;
  virtual void allreduce_sum(Tensor& t) = 0;  // float32
  virtual void allreduce_sum(double* values, int count) = 0;  // host values
  virtual void broadcast(Tensor& t, int root) = 0;
  // In place, slices by shard_range: afterwards this rank's slice of `t` holds the group's sum (float32; the rest
  // of `t` is unspecified), and all_gather gives every rank every rank's slice (float32 or bfloat16: ZeRO-1
  // gathers mixed precision's bfloat16 values, whose float32 masters stay split).
  virtual void reduce_scatter_sum(Tensor& t) = 0;
  virtual void all_gather(Tensor& t) = 0;

  // Point-to-point calls between begin_batch() and end_batch() are issued as
  // one transfer, and their requests are not waited on before end_batch().
  // NCCL matches messages by order, not tag, and a transfer occupies its
  // stream until the peer's matching one is issued: a stage's sends and
  // receives of one schedule step go together (each message is sent and
  // received in the same step, schedule.hpp), or neighbours wait on each other.
  virtual void begin_batch() {}
  virtual void end_batch() {}
  // Whether a receive may be posted steps before the one that names it (MPI:
  // messages are matched by tag and a posted receive holds nothing up).
  virtual bool receives_ahead() const { return true; }

  // Any wait longer than `seconds` (0: forever) throws libpipe::Error naming
  // what it waited for and this communicator's group.
  void set_timeout(double seconds) { timeout_ = seconds; }
  const CommStats& stats() const { return stats_; }

 protected:
  // What a wait that outlived the timeout throws: the transfer, the group (a name, may be "") and the rank.
  std::string timeout_message(const CommRequest& request, const std::string& group, int world_rank) const;

  CommStats stats_;
  double timeout_ = 0;
};

// With PIPE_COMM_STEP_BATCHES=1 in the environment, MPI comms behave as NCCL's
// do for the engine (receives_ahead() false, so each schedule step's transfers
// go as one batch) and send synchronously (MPI_Issend): how the CPU tests run
// the engine's NCCL path where there is no GPU.
//
// A Comm over an MPI communicator (not owned: it must outlive the Comm).
// `name` describes the group in messages ("the data-parallel group of stage 1").
// Errors are libpipe::Error naming the call, peer and rank.
PIPE_API std::unique_ptr<Comm> make_mpi_comm(MPI_Comm comm, const std::string& name = "");

// An NCCL Comm over the ranks of an MPI communicator (not owned). Collective
// over `comm` (ncclCommInitRank): every rank of it must create its NCCL comms
// in the same order. Needs the GPU chosen (select_cuda_device) and one GPU
// per rank. Host values (allreduce_sum of doubles) go through MPI. Throws
// libpipe::Error in a build without NCCL.
PIPE_API std::unique_ptr<Comm> make_nccl_comm(MPI_Comm comm, const std::string& name = "");

// make_mpi_comm or make_nccl_comm.
PIPE_API std::unique_ptr<Comm> make_comm(CommKind kind, MPI_Comm comm, const std::string& name = "");

}  // namespace libpipe
