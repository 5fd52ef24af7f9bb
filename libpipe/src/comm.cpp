// The MPI implementation of Comm (see comm.hpp).
#include "pipe/comm.hpp"

#include "mpi_check.hpp"
#include "pipe/error.hpp"

namespace libpipe {

Comm::~Comm() = default;

namespace {

class MpiComm : public Comm {
 public:
  explicit MpiComm(MPI_Comm comm) : comm_(comm) {
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
    if (r.active()) PIPE_MPI_CHECK(MPI_Wait(&r.mpi, MPI_STATUS_IGNORE), world_rank_);
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
    PIPE_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data(), static_cast<int>(t.numel()), MPI_FLOAT, MPI_SUM, comm_),
                   world_rank_);
    stats_.bytes_sent += static_cast<std::int64_t>(t.bytes());
    stats_.bytes_received += static_cast<std::int64_t>(t.bytes());
  }

  void broadcast(Tensor& t, int root) override {
    check_host(t, "broadcast");
    if (size_ == 1) return;
    PIPE_MPI_CHECK(MPI_Bcast(t.data(), count(t), MPI_BYTE, root, comm_), world_rank_);
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

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm(MPI_Comm comm) { return std::make_unique<MpiComm>(comm); }

}  // namespace libpipe
