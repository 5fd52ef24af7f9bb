// Checks pipe/collective.hpp under mpirun -np 3: agreement, gathering,
// barrier, broadcast, all-gather and all-reduce with and without a timeout, then that a rank that
// never joins a collective makes the others throw libpipe::Error within the
// timeout (set_collective_timeout, pipe-train's --comm-timeout), naming what
// they waited for and the group, instead of hanging.
//
//   mpirun -np 3 collective_check
//
// The job then ends cleanly: once ranks 0 and 1 have timed out, rank 2 joins
// the abandoned collectives late (in the same order), so that every
// collective completes before MPI_Finalize. Rank 0 prints PASS or the
// failures; all ranks agree on the exit status (0 = pass).
#include <chrono>
#include <cstdio>
#include <functional>
#include <new>
#include <stdexcept>
#include <mpi.h>
#include <string>
#include <thread>
#include <vector>

#include "pipe/collective.hpp"
#include "pipe/error.hpp"

namespace {

constexpr int kLateRank = 2;          // the rank that does not join in time
constexpr double kTimeout = 1.0;      // seconds
constexpr double kSlack = 20.0;       // a loaded (or sanitized) machine is slow to notice
constexpr int kTagVerdict = 7, kTagGo = 8;

struct Checker {
  int rank = 0;
  std::vector<std::string> failures;
  void check(bool ok, const std::string& what) {
    if (!ok) failures.push_back("rank " + std::to_string(rank) + ": " + what);
  }
};

// Runs `call`, which must throw libpipe::Error containing `expected` after
// between kTimeout and kTimeout + kSlack seconds.
void expect_timeout(Checker& c, const std::string& name, const std::function<void()>& call,
                    const std::string& expected) {
  const double start = MPI_Wtime();
  try {
    call();
    c.check(false, name + " returned although rank " + std::to_string(kLateRank) + " never joined");
    return;
  } catch (const libpipe::Error& e) {
    const double waited = MPI_Wtime() - start;
    const std::string message = e.what();
    c.check(message.find(expected) != std::string::npos,
            name + ": the message '" + message + "' does not contain '" + expected + "'");
    c.check(waited >= kTimeout && waited <= kTimeout + kSlack,
            name + ": threw after " + std::to_string(waited) + " s, timeout " + std::to_string(kTimeout) + " s");
    if (c.rank == 0) std::printf("collective_check: %s threw after %.2f s: %s\n", name.c_str(), waited, e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm world = MPI_COMM_WORLD;
  int rank = 0, size = 0;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  Checker c;
  c.rank = rank;
  if (size != 3) {
    if (rank == 0) std::fprintf(stderr, "collective_check: run with mpirun -np 3, not %d\n", size);
    MPI_Finalize();
    return 2;
  }
  const std::string r = std::to_string(rank);

  // Every rank joins, without and with a timeout (the polling path); rank 2
  // is slow by less than the timeout, which must not count as a hang.
  for (double timeout : {0.0, 30.0}) {
    libpipe::set_collective_timeout(timeout);
    const std::string with = timeout > 0 ? " (timeout 30 s)" : " (no timeout)";
    c.check(libpipe::collective_timeout() == timeout, "collective_timeout()" + with);
    libpipe::PhaseResult mine;
    bool all = libpipe::run_phase_on_all(world, [&] {
      if (rank == kLateRank && timeout > 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
      if (rank == 1) throw libpipe::Error("boom");
    }, mine);
    c.check(!all, "run_phase_on_all succeeded although rank 1 failed" + with);
    c.check(mine.ok == (rank != 1) && mine.message == (rank == 1 ? "boom" : ""), "this rank's PhaseResult" + with);
    // An exception that is not libpipe's own says what was being done; running out of memory says so.
    libpipe::run_phase_on_all(world, [&] {
      if (rank == 0) throw std::runtime_error("vector::_M_default_append");
      if (rank == 1) throw std::bad_alloc();
    }, mine, "building the engine");
    c.check(mine.message == (rank == 0   ? "vector::_M_default_append (while building the engine)"
                             : rank == 1 ? "out of memory while building the engine"
                                         : ""),
            "a foreign exception names the phase" + with);
    all = libpipe::run_phase_on_all(world, [] {}, mine);
    c.check(all && mine.ok, "run_phase_on_all failed although every rank succeeded" + with);
    auto strings = libpipe::gather_strings(world, "r" + r + std::string(rank, 'x'));
    c.check(rank == 0 ? strings == std::vector<std::string>{"r0", "r1x", "r2xx"} : strings.empty(),
            "gather_strings" + with);
    libpipe::barrier(world, "the checks");
    c.check(libpipe::broadcast_int(world, rank == 1 ? 42 : -1, 1) == 42, "broadcast_int" + with);
    const long long mine_ll[2] = {10LL * rank, 1LL << (40 + rank)};
    long long all_ll[6] = {};
    libpipe::allgather(world, mine_ll, all_ll, 2, MPI_LONG_LONG, "the test values");
    c.check(all_ll[0] == 0 && all_ll[2] == 10 && all_ll[4] == 20 && all_ll[5] == (1LL << 42), "allgather" + with);
    double sums[2] = {1.5, static_cast<double>(rank)};
    libpipe::allreduce(world, sums, 2, MPI_DOUBLE, MPI_SUM);
    c.check(sums[0] == 4.5 && sums[1] == 3.0, "allreduce" + with);
  }

  // Rank 2 does not join: the others must throw after the timeout.
  libpipe::set_collective_timeout(kTimeout);
  MPI_Comm pair = MPI_COMM_NULL, copy = MPI_COMM_NULL;
  MPI_Comm_split(world, rank == 1 ? 1 : 0, rank, &pair);  // {0, 2} and {1}
  MPI_Comm_dup(world, &copy);
  if (rank != kLateRank) {
    libpipe::PhaseResult mine;
    expect_timeout(c, "run_phase_on_all", [&] { libpipe::run_phase_on_all(world, [] {}, mine, "the test phase"); },
                   "--comm-timeout: waited more than 1 s in MPI_COMM_WORLD (3 ranks) for every rank to finish the "
                   "test phase (rank " + r + ")");
    if (rank == 0)
      expect_timeout(c, "gather_strings", [&] { libpipe::gather_strings(pair, "x", "its part"); },
                     "waited more than 1 s in the group of world ranks 0, 2 (2 ranks) for every rank to send its part "
                     "to rank 0 (rank 0)");
    expect_timeout(c, "barrier", [&] { libpipe::barrier(copy, "the end"); },
                   "waited more than 1 s in the group of world ranks 0, 1, 2 (3 ranks) for every rank to reach the "
                   "end (rank " + r + ")");
    // Rank 1's verdict to rank 0, then rank 0 lets rank 2 in.
    int failed = static_cast<int>(c.failures.size());
    if (rank == 1) MPI_Send(&failed, 1, MPI_INT, 0, kTagVerdict, world);
    if (rank == 0) {
      MPI_Recv(&failed, 1, MPI_INT, 1, kTagVerdict, world, MPI_STATUS_IGNORE);
      c.check(failed == 0, "rank 1 failed its checks");
      int go = 1;
      MPI_Send(&go, 1, MPI_INT, kLateRank, kTagGo, world);
    }
  } else {
    int go = 0;
    MPI_Recv(&go, 1, MPI_INT, 0, kTagGo, world, MPI_STATUS_IGNORE);
    // Late, in the order the others abandoned them; these complete.
    libpipe::set_collective_timeout(60);
    libpipe::PhaseResult mine;
    c.check(libpipe::run_phase_on_all(world, [] {}, mine), "the late run_phase_on_all");
    libpipe::gather_strings(pair, "x");
    libpipe::barrier(copy);
  }

  int failed = static_cast<int>(c.failures.size()), any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, world);
  for (const auto& f : c.failures) std::printf("collective_check: FAIL: %s\n", f.c_str());
  if (rank == 0 && any == 0) std::printf("collective_check: PASS\n");
  std::fflush(stdout);
  MPI_Comm_free(&pair);
  MPI_Comm_free(&copy);
  MPI_Finalize();
  return any == 0 ? 0 : 1;
}
