// pipe-bench p2p (under mpirun with 2 ranks): activation transfers through
// libpipe's Comm layer (isend/irecv/wait on tensors, what the engine uses)
// against raw MPI_Send/MPI_Recv at the same sizes, 1 KiB to 64 MiB, measured
// alternately in one run. Columns in the style of nccl-tests.
//
// --device cpu (the default): both columns move host memory; the received
// bytes are checked in the timed loop (#wrong counts wrong messages).
// --device cuda: each rank binds GPU node_local_rank % GPUs; the libpipe column
// moves device tensors through the Comm of --comm (mpi: staged through host
// memory; nccl: GPU to GPU, one GPU per rank), the raw column stays raw MPI on
// host buffers of the same size, as a reference. Without per-message host
// copies: before each timed round rank 0 uploads a pattern for the round and
// rank 1 zeroes its buffer; after it rank 1 downloads and checks the buffer
// (#wrong counts raw wrong messages plus libpipe rounds that ended wrong). NCCL
// completes a transfer in stream order (the host does not block), so both
// ranks synchronize the backend before the final acknowledgement and the time
// covers the transfers.
#include <mpi.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench.hpp"
#include "pipe/backend.hpp"
#include "pipe/comm.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"
#include "pipe/tensor.hpp"

namespace po = boost::program_options;

namespace pipe_bench {
namespace {

// Rank 0 sends `iters` messages of `bytes` to rank 1, which acknowledges the
// last; returns seconds per message on rank 0 and counts wrong payloads on 1.
// `finish` runs on both ranks before the acknowledgement (a device backend's
// synchronize, so that transfers completed in stream order are timed too).
template <typename Send, typename Recv, typename Finish>
double stream(int rank, std::size_t bytes, int iters, Send send, Recv recv, std::int64_t& wrong, Finish finish) {
  char ack = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) {
    if (rank == 0) {
      send(i);
    } else {
      recv(i, wrong);
    }
  }
  finish();
  if (rank == 1) MPI_Send(&ack, 1, MPI_CHAR, 0, 99, MPI_COMM_WORLD);
  if (rank == 0) MPI_Recv(&ack, 1, MPI_CHAR, 1, 99, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  (void)bytes;
  return (MPI_Wtime() - t0) / iters;
}

template <typename Send, typename Recv>
double stream(int rank, std::size_t bytes, int iters, Send send, Recv recv, std::int64_t& wrong) {
  return stream(rank, bytes, iters, send, recv, wrong, [] {});
}

void fill_pattern(unsigned char* p, std::size_t n, int i) {
  for (std::size_t k = 0; k < n; k += 4096) p[k] = static_cast<unsigned char>(i + k / 4096);
  if (n) p[n - 1] = static_cast<unsigned char>(i * 7);
}

bool check_pattern(const unsigned char* p, std::size_t n, int i) {
  for (std::size_t k = 0; k < n; k += 4096)
    if (p[k] != static_cast<unsigned char>(i + k / 4096)) return false;
  return n == 0 || p[n - 1] == static_cast<unsigned char>(i * 7);
}

// The whole-buffer pattern of a device round (every byte set, none zero, so a
// zeroed or stale receive buffer shows): depends on the round and the size.
void round_pattern(std::vector<unsigned char>& p, int round, std::size_t bytes) {
  const std::uint32_t seed = static_cast<std::uint32_t>(round) * 0x9e3779b9u + static_cast<std::uint32_t>(bytes);
  for (std::size_t k = 0; k < p.size(); ++k) {
    const std::uint32_t x = (static_cast<std::uint32_t>(k) * 2654435761u) ^ seed ^ static_cast<std::uint32_t>(k >> 12);
    p[k] = static_cast<unsigned char>(1 + (x >> 24) % 255);
  }
}

// Every rank passes its problem ("" when none); when any has one, the lowest
// such rank prints it (one line) and all return true: no rank is left waiting.
bool any_problem(int rank, int size, const std::string& problem) {
  int mine = problem.empty() ? size : rank, first = size;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == size) return false;
  if (rank == first) std::fprintf(stderr, "pipe-bench p2p: error: %s\n", problem.c_str());
  return true;
}

// Each rank's GPU, in rank order (rank 0's result; "" elsewhere).
std::vector<std::string> gather_descriptions(int rank, int size, const std::string& mine) {
  char buffer[256] = {0};
  std::snprintf(buffer, sizeof buffer, "%s", mine.c_str());
  std::vector<char> all(sizeof buffer * static_cast<std::size_t>(size));
  MPI_Gather(buffer, sizeof buffer, MPI_CHAR, all.data(), sizeof buffer, MPI_CHAR, 0, MPI_COMM_WORLD);
  std::vector<std::string> out;
  if (rank == 0)
    for (int r = 0; r < size; ++r) out.emplace_back(all.data() + r * sizeof buffer);
  return out;
}

struct Setup {
  libpipe::Device device = libpipe::Device::cpu;
  libpipe::CommKind comm = libpipe::CommKind::mpi;
};

// This rank's device and comm from the flags and what it sees; "" or the problem.
std::string check_flags(const std::string& device_name, const std::string& comm_name, Setup& s) {
  try {
    s.device = libpipe::parse_device(device_name);
  } catch (const std::exception& e) {
    return "--device: " + std::string(e.what());
  }
  if (comm_name == "mpi") {
    s.comm = libpipe::CommKind::mpi;
  } else if (comm_name == "nccl") {
    s.comm = libpipe::CommKind::nccl;
  } else {
    return "--comm: unknown communicator '" + comm_name + "' (expected mpi or nccl)";
  }
  if (s.device == libpipe::Device::cpu && s.comm == libpipe::CommKind::nccl)
    return "--comm nccl needs --device cuda (NCCL moves GPU memory; host memory goes through --comm mpi)";
  if (s.device == libpipe::Device::cuda && libpipe::cuda_device_count() == 0)
    return "--device cuda: no GPU: " + libpipe::cuda_unavailable_reason();
  return "";
}

}  // namespace

int run_p2p(const std::vector<std::string>& args, const std::string& command_line) {
  bool json = false;
  std::size_t max_bytes = 64u << 20;
  std::string device_name = "cpu", comm_name = "mpi";
  po::options_description d("pipe-bench p2p options (run with mpirun -np 2)");
  d.add_options()("json", po::bool_switch(&json), "print one JSON object")(
      "max-bytes", po::value(&max_bytes)->default_value(max_bytes), "largest message")(
      "device", po::value(&device_name)->default_value(device_name),
      "cpu: host tensors; cuda: device tensors, each rank on GPU (node-local rank % GPUs), raw MPI column on host "
      "buffers as a reference")(
      "comm", po::value(&comm_name)->default_value(comm_name),
      "libpipe's Comm: mpi (device tensors staged through host memory; ranks may share a GPU) or nccl (--device "
      "cuda, one GPU per rank)")("help,h", "show this help");
  po::variables_map vm;
  if (!parse_flags(args, d, "usage: mpirun -np 2 pipe-bench p2p [--device cpu|cuda] [--comm mpi|nccl] [--json]", vm))
    return 0;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) MPI_Init(nullptr, nullptr);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size != 2) {
    if (rank == 0) std::fprintf(stderr, "pipe-bench p2p: error: run it with exactly 2 ranks (mpirun -np 2)\n");
    MPI_Finalize();
    return 1;
  }

  // Every check that may fail is agreed on before any transfer, so an error is
  // one line and no rank hangs in a call its peer never makes.
  Setup setup;
  if (any_problem(rank, size, check_flags(device_name, comm_name, setup))) {
    MPI_Finalize();
    return 1;
  }
  const bool on_gpu = setup.device == libpipe::Device::cuda;
  std::vector<std::string> gpus;
  if (on_gpu) {
    const int local = libpipe::node_local_rank(MPI_COMM_WORLD);
    const bool shared = libpipe::ranks_share_a_gpu(MPI_COMM_WORLD, local % libpipe::cuda_device_count());
    std::string problem;
    if (shared && setup.comm == libpipe::CommKind::nccl)
      problem =
          "--comm nccl needs one GPU per rank, but both ranks are on one node and would use the same GPU "
          "(NCCL refuses that); use --comm mpi (staged through host memory), or a node with 2 GPUs";
    if (problem.empty()) {
      try {
        libpipe::select_cuda_device(local);
      } catch (const std::exception& e) {
        problem = e.what();
      }
    }
    if (any_problem(rank, size, problem)) {
      MPI_Finalize();
      return 1;
    }
    gpus = gather_descriptions(rank, size, libpipe::cuda_device_description());
  }

  // From here on a failure on one rank would leave the other in a transfer: print it and abort the job.
  std::int64_t total_wrong = 0;
  try {
    std::unique_ptr<libpipe::Comm> comm =
        on_gpu ? libpipe::make_comm(setup.comm, MPI_COMM_WORLD) : libpipe::make_mpi_comm(MPI_COMM_WORLD);
    nlohmann::json rows = nlohmann::json::array();
    if (rank == 0 && !json) {
      std::printf("# %s\n# rank 0 streams messages to rank 1; both sides alternate in one run\n", command_line.c_str());
      if (on_gpu) {
        std::printf("# libpipe: %s Comm on cuda tensors (rank 0: GPU %s; rank 1: GPU %s)%s\n",
                    libpipe::comm_kind_name(setup.comm), gpus[0].c_str(), gpus[1].c_str(),
                    setup.comm == libpipe::CommKind::mpi ? ", staged through host memory" : "");
        std::printf(
            "# raw: MPI_Send/MPI_Recv on host buffers of the same size (a reference, not the GPU path); "
            "#wrong: raw messages + libpipe rounds whose final buffer was wrong\n");
      }
      std::printf("# %12s %8s %12s %10s %12s %10s %8s %7s\n", "size(B)", "iters", "raw(us)", "raw GB/s", "libpipe(us)",
                  "GB/s", "ratio", "#wrong");
    }
    for (std::size_t bytes = 1024; bytes <= max_bytes; bytes *= 4) {
      const int iters = static_cast<int>(std::max<std::size_t>(10, std::min<std::size_t>(1000, (256u << 20) / bytes)));
      const std::int64_t numel = static_cast<std::int64_t>(bytes / 4);
      // The host buffer (both columns on cpu; the raw column on cuda) and the device buffer (cuda's libpipe column).
      libpipe::Tensor buffer = libpipe::Tensor::zeros({numel}, libpipe::DType::float32);
      libpipe::Tensor device_buffer;
      if (on_gpu) device_buffer = libpipe::Tensor::zeros({numel}, libpipe::DType::float32, setup.device);
      auto* p = static_cast<unsigned char*>(buffer.data());
      std::int64_t wrong_raw = 0, wrong_lib = 0;
      auto raw_send = [&](int i) {
        fill_pattern(p, bytes, i);
        MPI_Send(p, static_cast<int>(bytes), MPI_BYTE, 1, 0, MPI_COMM_WORLD);
      };
      auto raw_recv = [&](int i, std::int64_t& wrong) {
        MPI_Recv(p, static_cast<int>(bytes), MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        wrong += !check_pattern(p, bytes, i);
      };
      auto lib_send = [&](int i) {
        fill_pattern(p, bytes, i);
        auto r = comm->isend(buffer, 1, 1);
        comm->wait(r);
      };
      auto lib_recv = [&](int i, std::int64_t& wrong) {
        auto r = comm->irecv(buffer, 0, 1);
        comm->wait(r);
        wrong += !check_pattern(p, bytes, i);
      };
      double raw = 1e300, lib = 1e300;
      if (!on_gpu) {
        stream(rank, bytes, 3, raw_send, raw_recv, wrong_raw);  // warm-up
        for (int round = 0; round < 3; ++round) {               // alternate, keep each side's best
          raw = std::min(raw, stream(rank, bytes, iters, raw_send, raw_recv, wrong_raw));
          lib = std::min(lib, stream(rank, bytes, iters, lib_send, lib_recv, wrong_lib));
        }
      } else {
        libpipe::Backend& be = libpipe::backend_for(setup.device);
        // NCCL matches by order and wants its sends and receives issued in batches
        // (!receives_ahead); each message is a batch of one, waited on after it is issued.
        const bool batch = !comm->receives_ahead();
        auto dev_send = [&](int) {
          if (batch) comm->begin_batch();
          auto r = comm->isend(device_buffer, 1, 1);
          if (batch) comm->end_batch();
          comm->wait(r);
        };
        auto dev_recv = [&](int, std::int64_t&) {
          if (batch) comm->begin_batch();
          auto r = comm->irecv(device_buffer, 0, 1);
          if (batch) comm->end_batch();
          comm->wait(r);
        };
        auto finish = [&] { be.synchronize(); };
        std::vector<unsigned char> pattern(bytes), got(bytes);
        std::int64_t ignored = 0;
        stream(rank, bytes, 3, raw_send, raw_recv, wrong_raw);        // warm-up
        stream(rank, bytes, 3, dev_send, dev_recv, ignored, finish);  // warm-up (NCCL connects here)
        for (int round = 0; round < 3; ++round) {                     // alternate, keep each side's best
          raw = std::min(raw, stream(rank, bytes, iters, raw_send, raw_recv, wrong_raw));
          if (rank == 0) {
            round_pattern(pattern, round, bytes);
            be.copy_from_host(device_buffer.data(), pattern.data(), bytes);
          } else {
            be.fill(device_buffer.f32(), 0.0f, numel);
          }
          be.synchronize();
          lib = std::min(lib, stream(rank, bytes, iters, dev_send, dev_recv, ignored, finish));
          if (rank == 1) {
            be.synchronize();
            be.copy_to_host(got.data(), device_buffer.data(), bytes);
            round_pattern(pattern, round, bytes);
            wrong_lib += std::memcmp(got.data(), pattern.data(), bytes) != 0;
          }
        }
      }
      std::int64_t wrong = wrong_raw + wrong_lib;
      MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
      total_wrong += wrong;
      if (rank == 0) {
        const double raw_bw = bytes / raw / 1e9, lib_bw = bytes / lib / 1e9;
        rows.push_back({{"bytes", bytes},
                        {"iters", iters},
                        {"raw_us", raw * 1e6},
                        {"raw_gbps", raw_bw},
                        {"libpipe_us", lib * 1e6},
                        {"libpipe_gbps", lib_bw},
                        {"ratio", lib_bw / raw_bw},
                        {"wrong", wrong}});
        if (!json)
          std::printf("  %12zu %8d %12.2f %10.2f %12.2f %10.2f %7.2f %7lld\n", bytes, iters, raw * 1e6, raw_bw,
                      lib * 1e6, lib_bw, lib_bw / raw_bw, static_cast<long long>(wrong));
      }
    }
    if (rank == 0) {
      if (json) {
        nlohmann::json out{{"benchmark", "p2p"},
                           {"device", libpipe::device_name(setup.device)},
                           {"comm", libpipe::comm_kind_name(setup.comm)},
                           {"raw", "MPI_Send/MPI_Recv on host memory"},
                           {"rows", rows},
                           {"wrong", total_wrong},
                           {"command", command_line}};
        if (on_gpu) out["gpus"] = gpus;
        std::cout << out.dump() << "\n";
      } else {
        std::printf("# #wrong total: %lld; ratio = libpipe bandwidth / raw MPI bandwidth%s\n",
                    static_cast<long long>(total_wrong), on_gpu ? " (raw on host memory)" : "");
      }
    }
    comm.reset();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pipe-bench p2p: error on rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace pipe_bench
