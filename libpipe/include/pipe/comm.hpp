// Comm: how tensors move between ranks. Point-to-point transfers are
// non-blocking (a request to wait on), collectives are in place. The MPI
// implementation moves host memory; an NCCL one will move device memory
// behind the same interface, so the engine never calls MPI for tensors.
// Each Comm counts the bytes it sent and received, for reports.
#pragma once

#include <cstdint>
#include <memory>
#include <mpi.h>
#include <string>

#include "pipe/export.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

// A pending transfer. Completed (or never started) when !active().
struct CommRequest {
  MPI_Request mpi = MPI_REQUEST_NULL;
  std::string what;  // for a timeout's message, e.g. "the activation of micro-batch 3 from stage 0"
  bool active() const { return mpi != MPI_REQUEST_NULL; }
};

struct CommStats {
  std::int64_t bytes_sent = 0;
  std::int64_t bytes_received = 0;
};

class PIPE_API Comm {
 public:
  virtual ~Comm();
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // `t` must stay alive and unchanged (isend) or untouched (irecv) until wait.
  virtual CommRequest isend(const Tensor& t, int peer, int tag) = 0;
  virtual CommRequest irecv(Tensor& t, int peer, int tag) = 0;
  virtual void wait(CommRequest& request) = 0;
  // True (and the request completed) when the transfer is done; never blocks.
  virtual bool test(CommRequest& request) = 0;
  virtual void allreduce_sum(Tensor& t) = 0;  // float32
  virtual void allreduce_sum(double* values, int count) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  // Any wait longer than `seconds` (0: forever) throws libpipe::Error naming
  // what it waited for and this communicator's group.
  void set_timeout(double seconds) { timeout_ = seconds; }
  const CommStats& stats() const { return stats_; }

 protected:
  CommStats stats_;
  double timeout_ = 0;
};

// A Comm over an MPI communicator (not owned: it must outlive the Comm).
// `name` describes the group in messages ("the data-parallel group of stage 1").
// Errors are libpipe::Error naming the call, peer and rank.
PIPE_API std::unique_ptr<Comm> make_mpi_comm(MPI_Comm comm, const std::string& name = "");

}  // namespace libpipe
