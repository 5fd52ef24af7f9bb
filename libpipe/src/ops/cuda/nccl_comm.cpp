// The NCCL implementation of Comm (see comm.hpp) for tensors on the GPU.
//
// Start-up follows llm.c: rank 0 of the group makes the NCCL id, MPI_Bcast
// hands it to the others, ncclCommInitRank joins them (collective: every rank
// creates its comms in the same order, as the engine does). A group of one
// rank needs no NCCL communicator and gets none.
//
// Every transfer runs on one communication stream per process, so compute and
// communication overlap: the comm stream first waits (an event) for the
// compute stream's work issued so far (the data a send reads, the last use of
// the memory a receive overwrites), then runs the NCCL calls and records a
// completion event. wait() makes the compute stream wait on that event, so the
// host runs on; with --comm-timeout it also polls the event on the host, so
// that a peer that hangs becomes an error (the comm is aborted) and not a hang.
// Tensors a transfer uses are released after it completes in compute-stream
// order, which the stream-ordered caching allocator makes safe.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <thread>

#include "ops/cuda/cuda_check.hpp"
#include "ops/device_hooks.hpp"
#include "run/mpi_check.hpp"
#include "pipe/comm.hpp"
#include "pipe/error.hpp"

#define PIPE_NCCL_CHECK(call) check_nccl((call), #call, __FILE__, __LINE__)
#define PIPE_COMM_CUDA_CHECK(call) check_cuda((call), #call, __FILE__, __LINE__)

namespace libpipe {
namespace {

// A batch of transfers (or one collective) on the comm stream: complete when `done` has fired.
struct NcclCompletion : CommRequestState {
  cudaEvent_t done = nullptr;
  bool recorded = false;  // false until the batch is issued (end_batch): not to be waited on before
  ~NcclCompletion() override {
    if (done) cudaEventDestroy(done);  // a pending event is released once it fires
  }
};

std::string host_name() {
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int length = 0;
  if (MPI_Get_processor_name(host, &length) != MPI_SUCCESS) std::strcpy(host, "?");
  return host;
}

std::string where(const char* file, int line) {
  return std::string(cuda::source_file_name(file)) + ":" + std::to_string(line);
}

class NcclComm : public Comm {
 public:
  NcclComm(MPI_Comm comm, std::string name) : host_(make_mpi_comm(comm, name)), name_(std::move(name)) {
    PIPE_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_), world_rank_);
    PIPE_MPI_CHECK(MPI_Comm_rank(comm, &rank_), world_rank_);
    PIPE_MPI_CHECK(MPI_Comm_size(comm, &size_), world_rank_);
    if (size_ == 1) return;
    // Rank 0's failure to make the id travels with it, so no rank is left in the broadcast.
    struct {
      ncclUniqueId id;
      int ok;
    } shared{};
    ncclResult_t made = ncclSuccess;
    if (rank_ == 0) {
      made = ncclGetUniqueId(&shared.id);
      shared.ok = made == ncclSuccess;
    }
    PIPE_MPI_CHECK(MPI_Bcast(&shared, sizeof shared, MPI_BYTE, 0, comm), world_rank_);
    if (rank_ == 0) check_nccl(made, "ncclGetUniqueId(&id)", __FILE__, __LINE__);
    if (!shared.ok) throw Error("ncclGetUniqueId failed on rank 0 of " + describe_group());
    // ncclCommInitRank has no timeout: ranks whose peer failed here would wait in it for ever, so a failure
    // ends the whole job now, with its one line.
    const ncclResult_t init = ncclCommInitRank(&nccl_, size_, shared.id, rank_);
    if (init != ncclSuccess) {
      try {
        check_nccl(init, "ncclCommInitRank", __FILE__, __LINE__);
      } catch (const Error& e) {
        std::fprintf(stderr, "pipe: error: %s\n", e.what());
        std::fflush(stderr);
      }
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    compute_ = static_cast<cudaStream_t>(detail::cuda_compute_stream());
    stream_ = comm_stream();
    PIPE_COMM_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  }

  ~NcclComm() override {
    if (ready_) cudaEventDestroy(ready_);
    // Unwinding from an error: the peers may never finish their side, and ncclCommDestroy would wait for it.
    if (nccl_) std::uncaught_exceptions() > 0 ? ncclCommAbort(nccl_) : ncclCommDestroy(nccl_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  CommRequest isend(const Tensor& t, int peer, int) override {
    check_transfer(t, peer, "send");
    CommRequest r;
    r.state = issue([&] { PIPE_NCCL_CHECK(ncclSend(t.data(), t.bytes(), ncclUint8, peer, nccl_, stream_)); });
    stats_.bytes_sent += static_cast<std::int64_t>(t.bytes());
    return r;
  }

  CommRequest irecv(Tensor& t, int peer, int) override {
    check_transfer(t, peer, "receive");
    CommRequest r;
    r.state = issue([&] { PIPE_NCCL_CHECK(ncclRecv(t.data(), t.bytes(), ncclUint8, peer, nccl_, stream_)); });
    stats_.bytes_received += static_cast<std::int64_t>(t.bytes());
    return r;
  }

  void wait(CommRequest& r) override {
    if (!r.active()) return;
    NcclCompletion& c = completion(r);
    if (timeout_ > 0) poll(c, r);
    PIPE_COMM_CUDA_CHECK(cudaStreamWaitEvent(compute_, c.done, 0));
    r.state.reset();
  }

  bool test(CommRequest& r) override {
    if (!r.active()) return true;
    NcclCompletion& c = completion(r);
    if (!fired(c)) return false;
    r.state.reset();  // the event has fired: later compute-stream work sees the data without waiting
    return true;
  }

  void check_float(const Tensor& t, const char* what) const {
    check_device(t, what);
    if (t.dtype() != DType::float32)
      throw Error(std::string("the NCCL communicator cannot ") + what + " a " + dtype_name(t.dtype()) + " tensor");
  }

  void allreduce_sum(Tensor& t) override {
    check_float(t, "all-reduce");
    if (size_ == 1) return;
    CommRequest r;
    r.what = "an all-reduce of " + std::to_string(t.numel()) + " gradients";
    r.state = issue([&] {
      PIPE_NCCL_CHECK(
          ncclAllReduce(t.data(), t.data(), static_cast<std::size_t>(t.numel()), ncclFloat, ncclSum, nccl_, stream_));
    });
    wait(r);
    stats_.bytes_sent += static_cast<std::int64_t>(t.bytes());
    stats_.bytes_received += static_cast<std::int64_t>(t.bytes());
  }

  // NCCL moves equal slices: `t` goes through a buffer padded to size x ceil(n / size) (shard_range's slices). The
  // buffer is freed after wait(), in the compute stream's order, which by then waits for the comm stream.
  struct Padded {
    Tensor buffer;            // size x slice elements of t's type
    std::size_t slice;        // elements per rank
    std::size_t element;      // bytes per element
    char* base;               // the buffer
    char* mine;               // this rank's slice in it
    ShardRange range;         // this rank's slice of the tensor (shard_range: may be shorter)
    std::size_t range_bytes() const { return static_cast<std::size_t>(range.size()) * element; }
    std::size_t range_offset() const { return static_cast<std::size_t>(range.begin) * element; }
  };
  Padded padded_for(const Tensor& t) const {
    Padded p;
    const auto n = static_cast<std::size_t>(t.numel());
    p.slice = (n + size_ - 1) / size_;
    p.element = dtype_size(t.dtype());
    p.buffer = Tensor::empty({static_cast<std::int64_t>(p.slice * size_)}, t.dtype(), t.device());
    p.base = static_cast<char*>(p.buffer.data());
    p.mine = p.base + static_cast<std::size_t>(rank_) * p.slice * p.element;
    p.range = shard_range(t.numel(), size_, rank_);
    return p;
  }

  void reduce_scatter_sum(Tensor& t) override {
    check_float(t, "reduce-scatter");
    if (size_ == 1) return;
    const Padded p = padded_for(t);
    CommRequest r;
    r.what = "a reduce-scatter of " + std::to_string(t.numel()) + " gradients";
    r.state = issue([&] {
      PIPE_COMM_CUDA_CHECK(cudaMemsetAsync(p.base, 0, p.buffer.bytes(), stream_));
      PIPE_COMM_CUDA_CHECK(cudaMemcpyAsync(p.base, t.data(), t.bytes(), cudaMemcpyDeviceToDevice, stream_));
      PIPE_NCCL_CHECK(ncclReduceScatter(p.base, p.mine, p.slice, ncclFloat, ncclSum, nccl_, stream_));
      PIPE_COMM_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(t.data()) + p.range_offset(), p.mine, p.range_bytes(),
                                           cudaMemcpyDeviceToDevice, stream_));
    });
    wait(r);
    stats_.bytes_sent += static_cast<std::int64_t>(t.bytes());
    stats_.bytes_received += p.range.size() * 4;
  }

  void all_gather(Tensor& t) override {
    if (t.dtype() == DType::bfloat16)
      check_device(t, "all-gather");
    else
      check_float(t, "all-gather");
    if (size_ == 1) return;
    const Padded p = padded_for(t);
    CommRequest r;
    r.what = "an all-gather of " + std::to_string(t.numel()) + " parameters";
    r.state = issue([&] {
      PIPE_COMM_CUDA_CHECK(cudaMemcpyAsync(p.mine, static_cast<const char*>(t.data()) + p.range_offset(),
                                           p.range_bytes(), cudaMemcpyDeviceToDevice, stream_));
      PIPE_NCCL_CHECK(ncclAllGather(p.mine, p.base, p.slice, t.dtype() == DType::bfloat16 ? ncclBfloat16 : ncclFloat,
                                    nccl_, stream_));
      PIPE_COMM_CUDA_CHECK(cudaMemcpyAsync(t.data(), p.base, t.bytes(), cudaMemcpyDeviceToDevice, stream_));
    });
    wait(r);
    stats_.bytes_sent += static_cast<std::int64_t>(p.range_bytes());
    stats_.bytes_received += static_cast<std::int64_t>(t.bytes());
  }

  // Host values (a loss, per-layer norms): a few bytes, so MPI on the same ranks.
  void allreduce_sum(double* values, int count) override {
    host_->set_timeout(timeout_);
    host_->allreduce_sum(values, count);
  }

  void broadcast(Tensor& t, int root) override {
    check_device(t, "broadcast");
    if (size_ == 1) return;
    CommRequest r;
    r.what = "a broadcast from group rank " + std::to_string(root);
    r.state =
        issue([&] { PIPE_NCCL_CHECK(ncclBroadcast(t.data(), t.data(), t.bytes(), ncclUint8, root, nccl_, stream_)); });
    wait(r);
    (rank_ == root ? stats_.bytes_sent : stats_.bytes_received) += static_cast<std::int64_t>(t.bytes());
  }

  void begin_batch() override {
    if (batch_) throw Error("NCCL communicator of " + describe_group() + ": begin_batch inside a batch");
    if (!nccl_) return;
    auto batch = std::make_shared<NcclCompletion>();
    PIPE_COMM_CUDA_CHECK(cudaEventCreateWithFlags(&batch->done, cudaEventDisableTiming));
    // The comm stream starts after what the compute stream has been given so far.
    PIPE_COMM_CUDA_CHECK(cudaEventRecord(ready_, compute_));
    PIPE_COMM_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    PIPE_NCCL_CHECK(ncclGroupStart());
    batch_ = std::move(batch);
  }

  void end_batch() override {
    if (!batch_) return;
    std::shared_ptr<NcclCompletion> batch = std::move(batch_);
    PIPE_NCCL_CHECK(ncclGroupEnd());
    PIPE_COMM_CUDA_CHECK(cudaEventRecord(batch->done, stream_));
    batch->recorded = true;
  }

  bool receives_ahead() const override { return false; }

 private:
  // Runs `calls` (NCCL calls on stream_) in the open batch, or in a batch of their own.
  template <typename Calls>
  std::shared_ptr<CommRequestState> issue(Calls calls) {
    if (!nccl_) throw Error("the NCCL communicator of " + describe_group() + " was aborted after an error");
    const bool own = !batch_;
    if (own) begin_batch();
    try {
      calls();
    } catch (...) {
      end_group_after_error();
      throw;
    }
    std::shared_ptr<CommRequestState> state = batch_;
    if (own) end_batch();
    return state;
  }

  NcclCompletion& completion(const CommRequest& r) const {
    auto* c = dynamic_cast<NcclCompletion*>(r.state.get());
    if (!c || r.mpi != MPI_REQUEST_NULL)
      throw Error("NCCL communicator of " + describe_group() + ": a request of another communicator");
    if (!c->recorded)
      throw Error("NCCL communicator of " + describe_group() + ": waited on a transfer before end_batch");
    return *c;
  }

  bool fired(const NcclCompletion& c) const {
    const cudaError_t e = cudaEventQuery(c.done);
    if (e == cudaErrorNotReady) return false;
    PIPE_COMM_CUDA_CHECK(e);
    return true;
  }

  // Host-side wait with the deadline; a peer that failed (NCCL's async error)
  // or hangs aborts the communicator, so that nothing is left in flight.
  void poll(const NcclCompletion& c, const CommRequest& r) {
    const auto start = std::chrono::steady_clock::now();
    for (int polls = 0; !fired(c); ++polls) {
      ncclResult_t async = ncclSuccess;
      PIPE_NCCL_CHECK(ncclCommGetAsyncError(nccl_, &async));
      if (async != ncclSuccess && async != ncclInProgress) {
        abort();
        check_nccl(async, ("waiting for " + (r.what.empty() ? std::string("a transfer") : r.what)).c_str(), __FILE__,
                   __LINE__);
      }
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_) {
        abort();
        throw Error(timeout_message(r, name_, world_rank_));
      }
      if (polls > 100) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  // Closes an open batch whose calls failed, so that the real error is not hidden by "inside a batch" later.
  void end_group_after_error() noexcept {
    if (!batch_) return;
    ncclGroupEnd();
    batch_.reset();
  }

  void abort() noexcept {
    if (nccl_) ncclCommAbort(nccl_);
    nccl_ = nullptr;
  }

  void check_device(const Tensor& t, const char* what) const {
    if (t.device() != Device::cuda)
      throw Error(std::string("the NCCL communicator cannot ") + what + " a tensor on device '" +
                  device_name(t.device()) + "'");
  }
  void check_transfer(const Tensor& t, int peer, const char* what) const {
    check_device(t, what);
    if (peer < 0 || peer >= size_ || peer == rank_)
      throw Error(std::string("the NCCL communicator of ") + describe_group() + " cannot " + what + " to rank " +
                  std::to_string(peer) + " of " + std::to_string(size_));
  }

  std::string describe_group() const { return name_.empty() ? "a group" : name_; }

  void check_nccl(ncclResult_t rc, const char* call, const char* file, int line) const {
    if (rc == ncclSuccess) return;
    const char* detail = ncclGetLastError(nccl_);
    throw Error(std::string(call) + " failed at " + where(file, line) + " on rank " + std::to_string(world_rank_) +
                " (" + host_name() + ") in " + describe_group() + ": " + ncclGetErrorString(rc) +
                (detail && *detail ? std::string(" (") + detail + ")" : ""));
  }
  void check_cuda(cudaError_t rc, const char* call, const char* file, int line) const {
    if (rc == cudaSuccess) return;
    throw Error(std::string(call) + " failed at " + where(file, line) + " on rank " + std::to_string(world_rank_) +
                " (" + host_name() + ") in " + describe_group() + ": " + cudaGetErrorString(rc));
  }

  // One per process, made after the GPU is chosen; never destroyed (comms may outlive static destruction).
  cudaStream_t comm_stream() const {
    static cudaStream_t stream = [this] {
      cudaStream_t s = nullptr;
      PIPE_COMM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      return s;
    }();
    return stream;
  }

  std::unique_ptr<Comm> host_;  // MPI on the same ranks, for host values
  std::string name_;
  int rank_ = 0, size_ = 1, world_rank_ = 0;
  ncclComm_t nccl_ = nullptr;
  cudaStream_t compute_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;            // re-recorded per batch: a stream waits on the recording current at its call
  std::shared_ptr<NcclCompletion> batch_;  // the open batch
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(MPI_Comm comm, const std::string& name) {
  return std::make_unique<NcclComm>(comm, name);
}

}  // namespace libpipe
