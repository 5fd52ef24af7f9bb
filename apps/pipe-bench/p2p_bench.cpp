// pipe-bench p2p (under mpirun with 2 ranks): activation transfers through
// libpipe's Comm layer (isend/irecv/wait on tensors, what the engine uses)
// against raw MPI_Send/MPI_Recv at the same sizes, 1 KiB to 64 MiB, measured
// alternately in one run. Columns in the style of nccl-tests; the received
// bytes are checked in the timed loop (#wrong).
#include <mpi.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench.hpp"
#include "pipe/comm.hpp"
#include "pipe/error.hpp"
#include "pipe/tensor.hpp"

namespace po = boost::program_options;

namespace pipe_bench {
namespace {

// Rank 0 sends `iters` messages of `bytes` to rank 1, which acknowledges the
// last; returns seconds per message on rank 0 and counts wrong payloads on 1.
template <typename Send, typename Recv>
double stream(int rank, std::size_t bytes, int iters, Send send, Recv recv, std::int64_t& wrong) {
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
  if (rank == 1) MPI_Send(&ack, 1, MPI_CHAR, 0, 99, MPI_COMM_WORLD);
  if (rank == 0) MPI_Recv(&ack, 1, MPI_CHAR, 1, 99, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  (void)bytes;
  return (MPI_Wtime() - t0) / iters;
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

}  // namespace

int run_p2p(const std::vector<std::string>& args, const std::string& command_line) {
  bool json = false;
  std::size_t max_bytes = 64u << 20;
  po::options_description d("pipe-bench p2p options (run with mpirun -np 2)");
  d.add_options()("json", po::bool_switch(&json), "print one JSON object")(
      "max-bytes", po::value(&max_bytes)->default_value(max_bytes), "largest message")("help,h", "show this help");
  po::variables_map vm;
  if (!parse_flags(args, d, "usage: mpirun -np 2 pipe-bench p2p [--json]", vm)) return 0;
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
  auto comm = libpipe::make_mpi_comm(MPI_COMM_WORLD);
  nlohmann::json rows = nlohmann::json::array();
  std::int64_t total_wrong = 0;
  if (rank == 0 && !json) {
    std::printf("# %s\n# rank 0 streams messages to rank 1; both sides alternate in one run\n", command_line.c_str());
    std::printf("# %12s %8s %12s %10s %12s %10s %8s %7s\n", "size(B)", "iters", "raw(us)", "raw GB/s", "libpipe(us)",
                "GB/s", "ratio", "#wrong");
  }
  for (std::size_t bytes = 1024; bytes <= max_bytes; bytes *= 4) {
    const int iters = static_cast<int>(std::max<std::size_t>(10, std::min<std::size_t>(1000, (256u << 20) / bytes)));
    libpipe::Tensor buffer = libpipe::Tensor::zeros({static_cast<std::int64_t>(bytes / 4)}, libpipe::DType::float32);
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
    stream(rank, bytes, 3, raw_send, raw_recv, wrong_raw);  // warm-up
    double raw = 1e300, lib = 1e300;
    for (int round = 0; round < 3; ++round) {  // alternate, keep each side's best
      raw = std::min(raw, stream(rank, bytes, iters, raw_send, raw_recv, wrong_raw));
      lib = std::min(lib, stream(rank, bytes, iters, lib_send, lib_recv, wrong_lib));
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
        std::printf("  %12zu %8d %12.2f %10.2f %12.2f %10.2f %7.2f %7lld\n", bytes, iters, raw * 1e6, raw_bw, lib * 1e6,
                    lib_bw, lib_bw / raw_bw, static_cast<long long>(wrong));
    }
  }
  if (rank == 0) {
    if (json)
      std::cout << nlohmann::json{{"benchmark", "p2p"},
                                  {"rows", rows},
                                  {"wrong", total_wrong},
                                  {"command", command_line}}
                       .dump()
                << "\n";
    else
      std::printf("# #wrong total: %lld; ratio = libpipe bandwidth / raw MPI bandwidth\n",
                  static_cast<long long>(total_wrong));
  }
  comm.reset();
  MPI_Finalize();
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace pipe_bench
