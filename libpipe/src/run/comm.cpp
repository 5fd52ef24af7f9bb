// The MPI implementation of Comm (see comm.hpp). Device tensors are staged
// through host memory: a send copies to the host and sends from there, a
// receive lands in host memory and is copied to the device when it completes.
#include "pipe/comm.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#include <thread>

#include "run/mpi_check.hpp"
#include "pipe/backend.hpp"
#include "pipe/error.hpp"

namespace libpipe {

Comm::~Comm() = default;
CommRequestState::~CommRequestState() = default;

std::string Comm::timeout_message(const CommRequest& r, const std::string& group, int world_rank) const {
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g", timeout_);
  return std::string("--comm-timeout: waited more than ") + seconds + " s for " +
         (r.what.empty() ? std::string("a transfer") : r.what) + (group.empty() ? "" : " in " + group) +
         (r.names_peer ? "" : " (rank " + std::to_string(world_rank) + ")");
}

ShardRange shard_range(std::int64_t numel, int size, int rank) {
  if (size < 1 || rank < 0 || rank >= size)
    throw Error("shard_range: rank " + std::to_string(rank) + " of a group of " + std::to_string(size));
  const std::int64_t slice = (numel + size - 1) / size;
  return {std::min(numel, slice * rank), std::min(numel, slice * (rank + 1))};
}

const char* comm_kind_name(CommKind kind) { return kind == CommKind::nccl ? "nccl" : "mpi"; }

std::unique_ptr<Comm> make_comm(CommKind kind, MPI_Comm comm, const std::string& name) {
  return kind == CommKind::nccl ? make_nccl_comm(comm, name) : make_mpi_comm(comm, name);
}

namespace {

// Host memory standing in for a device tensor during an MPI transfer; a
// receive's copy goes to `device` once MPI is done with it.
struct HostStaging : CommRequestState {
  std::unique_ptr<unsigned char[]> host;
  Tensor device;  // a receive's destination (undefined for a send)

  explicit HostStaging(std::size_t bytes) : host(new unsigned char[bytes ? bytes : 1]) {}
  void to_device(Tensor& t) { backend_for(t.device()).copy_from_host(t.data(), host.get(), t.bytes()); }
};

// The host memory MPI works on for `t`: none for a host tensor; for a device
// tensor, a staging buffer, holding a copy of `t` when `copy`.
std::shared_ptr<HostStaging> stage(const Tensor& t, bool copy) {
  if (t.device() == Device::cpu) return nullptr;
  auto staging = std::make_shared<HostStaging>(t.bytes());
  if (copy) backend_for(t.device()).copy_to_host(staging->host.get(), t.data(), t.bytes());
  return staging;
}

void* buffer(const std::shared_ptr<HostStaging>& staging, const Tensor& t) {
  return staging ? staging->host.get() : const_cast<void*>(t.data());
}

// PIPE_COMM_STEP_BATCHES=1: see make_mpi_comm in comm.hpp.
bool step_batches_requested() {
  const char* v = std::getenv("PIPE_COMM_STEP_BATCHES");
  return v && std::string(v) == "1";
}

class MpiComm : public Comm {
 public:
  MpiComm(MPI_Comm comm, std::string name)
      : comm_(comm), name_(std::move(name)), step_batches_(step_batches_requested()) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool receives_ahead() const override { return !step_batches_; }

  CommRequest isend(const Tensor& t, int peer, int tag) override {
    CommRequest r;
    auto staging = stage(t, true);
    // Step batches: a synchronous send completes only once its receive is posted, as an NCCL send.
    PIPE_MPI_CHECK((step_batches_ ? MPI_Issend : MPI_Isend)(buffer(staging, t), count(t), MPI_BYTE, peer, tag, comm_,
                                                            &r.mpi),
                   world_rank_);
    r.state = std::move(staging);  // kept until the send completes
    stats_.bytes_sent += static_cast<std::int64_t>(t.bytes());
    return r;
  }

  CommRequest irecv(Tensor& t, int peer, int tag) override {
    CommRequest r;
    auto staging = stage(t, false);
    if (staging) staging->device = t;
    PIPE_MPI_CHECK(MPI_Irecv(buffer(staging, t), count(t), MPI_BYTE, peer, tag, comm_, &r.mpi), world_rank_);
    r.state = std::move(staging);
    stats_.bytes_received += static_cast<std::int64_t>(t.bytes());
    return r;
  }

  void wait(CommRequest& r) override {
    if (!r.active()) return;
    if (timeout_ <= 0) {
      PIPE_MPI_CHECK(MPI_Wait(&r.mpi, MPI_STATUS_IGNORE), world_rank_);
      finish(r);
      return;
    }
    // Poll with a short sleep so that a peer that died or hangs is noticed.
    const double start = MPI_Wtime();
    for (int polls = 0; !test(r); ++polls) {
      if (MPI_Wtime() - start > timeout_) throw Error(timeout_message(r, name_, world_rank_));
      if (polls > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  bool test(CommRequest& r) override {
    if (!r.active()) return true;
    if (r.mpi != MPI_REQUEST_NULL) {
      int done = 0;
      PIPE_MPI_CHECK(MPI_Test(&r.mpi, &done, MPI_STATUS_IGNORE), world_rank_);
      if (!done) return false;
    }
    finish(r);
    return true;
  }

  void allreduce_sum(Tensor& t) override {
    check_float(t, "all-reduce");
    if (size_ == 1) return;
    if (t.numel() > INT32_MAX) throw Error("all-reduce of more than 2^31 elements is not supported");
    auto staging = stage(t, true);
    CommRequest r;
    r.what = "an all-reduce of " + std::to_string(t.numel()) + " gradients";
    PIPE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buffer(staging, t), static_cast<int>(t.numel()), MPI_FLOAT, MPI_SUM,
                                  comm_, &r.mpi),
                   world_rank_);
    wait(r);
    if (staging) staging->to_device(t);
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

  void reduce_scatter_sum(Tensor& t) override {
    check_float(t, "reduce-scatter");
    if (size_ == 1) return;
    if (t.numel() > INT32_MAX) throw Error("reduce-scatter of more than 2^31 elements is not supported");
    std::vector<int> counts, offsets;
    slices(t.numel(), counts, offsets);
    auto staging = stage(t, true);
    float* all = static_cast<float*>(buffer(staging, t));
    std::vector<float> mine(static_cast<std::size_t>(std::max(1, counts[static_cast<std::size_t>(rank_)])));
    CommRequest r;
    r.what = "a reduce-scatter of " + std::to_string(t.numel()) + " gradients";
    PIPE_MPI_CHECK(MPI_Ireduce_scatter(all, mine.data(), counts.data(), MPI_FLOAT, MPI_SUM, comm_, &r.mpi),
                   world_rank_);
    wait(r);
    std::copy(mine.begin(), mine.begin() + counts[static_cast<std::size_t>(rank_)],
              all + offsets[static_cast<std::size_t>(rank_)]);
    if (staging) staging->to_device(t);
    stats_.bytes_sent += static_cast<std::int64_t>(t.bytes());
    stats_.bytes_received += static_cast<std::int64_t>(counts[static_cast<std::size_t>(rank_)]) * 4;
  }

  void all_gather(Tensor& t) override {
    if (t.dtype() != DType::bfloat16) check_float(t, "all-gather");
    if (size_ == 1) return;
    if (t.numel() > INT32_MAX) throw Error("all-gather of more than 2^31 elements is not supported");
    std::vector<int> counts, offsets;
    slices(t.numel(), counts, offsets);
    auto staging = stage(t, true);
    CommRequest r;
    r.what = "an all-gather of " + std::to_string(t.numel()) + " parameters";
    PIPE_MPI_CHECK(MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buffer(staging, t), counts.data(),
                                   offsets.data(), t.dtype() == DType::bfloat16 ? MPI_UINT16_T : MPI_FLOAT, comm_,
                                   &r.mpi),
                   world_rank_);
    wait(r);
    if (staging) staging->to_device(t);
    stats_.bytes_sent += static_cast<std::int64_t>(counts[static_cast<std::size_t>(rank_)]) *
                         static_cast<std::int64_t>(dtype_size(t.dtype()));
    stats_.bytes_received += static_cast<std::int64_t>(t.bytes());
  }

  void broadcast(Tensor& t, int root) override {
    if (size_ == 1) return;
    auto staging = stage(t, rank_ == root);
    CommRequest r;
    r.what = "a broadcast from group rank " + std::to_string(root);
    PIPE_MPI_CHECK(MPI_Ibcast(buffer(staging, t), count(t), MPI_BYTE, root, comm_, &r.mpi), world_rank_);
    wait(r);
    if (staging && rank_ != root) staging->to_device(t);
    (rank_ == root ? stats_.bytes_sent : stats_.bytes_received) += static_cast<std::int64_t>(t.bytes());
  }

 private:
  // Every rank's slice of an n-element tensor (shard_range), as MPI's counts and displacements.
  void slices(std::int64_t n, std::vector<int>& counts, std::vector<int>& offsets) const {
    for (int r = 0; r < size_; ++r) {
      const ShardRange range = shard_range(n, size_, r);
      counts.push_back(static_cast<int>(range.size()));
      offsets.push_back(static_cast<int>(range.begin));
    }
  }

  // The MPI part is done: a staged receive's data goes to the device.
  static void finish(CommRequest& r) {
    if (!r.state) return;
    auto* staging = static_cast<HostStaging*>(r.state.get());
    std::shared_ptr<CommRequestState> state = std::move(r.state);  // inactive even if the copy throws
    if (staging->device.defined()) staging->to_device(staging->device);
  }

  static int count(const Tensor& t) {
    if (t.bytes() > static_cast<std::size_t>(INT32_MAX))
      throw Error("a transfer of " + std::to_string(t.bytes()) + " bytes is larger than MPI's 2 GiB message limit");
    return static_cast<int>(t.bytes());
  }
  static void check_float(const Tensor& t, const char* what) {
    if (t.dtype() != DType::float32)
      throw Error(std::string("the MPI communicator cannot ") + what + " a " + dtype_name(t.dtype()) + " tensor");
  }

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  bool step_batches_ = false;  // PIPE_COMM_STEP_BATCHES: run the engine as with NCCL
};

}  // namespace

std::unique_ptr<Comm> make_mpi_comm(MPI_Comm comm, const std::string& name) {
  return std::make_unique<MpiComm>(comm, name);
}

}  // namespace libpipe
