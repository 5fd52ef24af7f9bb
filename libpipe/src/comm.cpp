// The MPI implementation of Comm (see comm.hpp).
#include "pipe/comm.hpp"

#include <chrono>
#include <cstdio>
#include <thread>

#include "mpi_check.hpp"
#include "pipe/error.hpp"

namespace libpipe {

Comm::~Comm() = default;

namespace {

class MpiComm : public Comm {
 public:
  MpiComm(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  CommRequest isend(const Tensor& t, int peer, int tag) override {
    check_host(t, "send");
    CommRequest r;
    PIPE_MPI_CHECK(MPI_Isend(t.data(), count(t), MPI_BYTE, peer, tag, comm_, &r.mpi), world_rank_);
    stats_.bytes_sent += static_cast<std::int64_t>(t.bytes());
    return r;
  }

  CommRequest irecv(Tensor& t, int peer, int tag) override {
    check_host(t, "receive");
    CommRequest r;
    PIPE_MPI_CHECK(MPI_Irecv(t.data(), count(t), MPI_BYTE, peer, tag, comm_, &r.mpi), world_rank_);
    stats_.bytes_received += static_cast<std::int64_t>(t.bytes());
    return r;
  }

  void wait(CommRequest& r) override {
    if (!r.active()) return;
    if (timeout_ <= 0) {
      PIPE_MPI_CHECK(MPI_Wait(&r.mpi, MPI_STATUS_IGNORE), world_rank_);
      return;
    }
    // Poll with a short sleep so that a peer that died or hangs is noticed.
    const double start = MPI_Wtime();
    for (int polls = 0; !test(r); ++polls) {
      if (MPI_Wtime() - start > timeout_)
        throw Error("--comm-timeout: waited more than " + seconds_str(timeout_) + " s for " +
                    (r.what.empty() ? std::string("a transfer") : r.what) + (name_.empty() ? "" : " in " + name_) +
                    " (rank " + std::to_string(world_rank_) + ")");
      if (polls > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  bool test(CommRequest& r) override {
    if (!r.active()) return true;
    int done = 0;
    PIPE_MPI_CHECK(MPI_Test(&r.mpi, &done, MPI_STATUS_IGNORE), world_rank_);
    return done != 0;
  }

  void allreduce_sum(Tensor& t) override {
    check_host(t, "all-reduce");
    if (size_ == 1) return;
    if (t.numel() > INT32_MAX) throw Error("all-reduce of more than 2^31 elements is not supported");
    CommRequest r;
    r.what = "an all-reduce of " + std::to_string(t.numel()) + " gradients";
    PIPE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, t.data(), static_cast<int>(t.numel()), MPI_FLOAT, MPI_SUM, comm_,
                                  &r.mpi),
                   world_rank_);
    wait(r);
    stats_.bytes_sent += static_cast<std::int64_t>(t.bytes());
    stats_.bytes_received += static_cast<std::int64_t>(t.bytes());
  }

  void allreduce_sum(double* values, int n) override {
    if (size_ == 1) return;
    CommRequest r;
    r.what = "an all-reduce of " + std::to_string(n) + " values";
    PIPE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, values, n, MPI_DOUBLE, MPI_SUM, comm_, &r.mpi), world_rank_);
    wait(r);
  }

  void broadcast(Tensor& t, int root) override {
    check_host(t, "broadcast");
    if (size_ == 1) return;
    CommRequest r;
    r.what = "a broadcast from group rank " + std::to_string(root);
    PIPE_MPI_CHECK(MPI_Ibcast(t.data(), count(t), MPI_BYTE, root, comm_, &r.mpi), world_rank_);
    wait(r);
    (rank_ == root ? stats_.bytes_sent : stats_.bytes_received) += static_cast<std::int64_t>(t.bytes());
  }

 private:
  static int count(const Tensor& t) {
    if (t.bytes() > static_cast<std::size_t>(INT32_MAX))
      throw Error("a transfer of " + std::to_string(t.bytes()) + " bytes is larger than MPI's 2 GiB message limit");
    return static_cast<int>(t.bytes());
  }
  static void check_host(const Tensor& t, const char* what) {
    if (t.device() != Device::cpu)
      throw Error(std::string("the MPI communicator cannot ") + what + " a tensor on device " + device_name(t.device()));
  }

  static std::string seconds_str(double s) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%g", s);
    return buffer;
  }

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm(MPI_Comm comm, const std::string& name) {
  return std::make_unique<MpiComm>(comm, name);
}

}  // namespace libpipe
