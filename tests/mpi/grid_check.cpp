// Checks PipelineParallelGrid under mpirun against expectations computed
// from the ProcessTopology alone (filter_match / get_rank), never from the
// grid: group membership, communicator sizes and rank order (by allgather and
// allreduce over each communicator), stage neighbours (by a sendrecv ring
// along each pipe), ids and sizes.
//
//   grid_check <spec>                        e.g. pipe=2,data=2,model=2
//   grid_check --expect-size-error <spec>    the grid must refuse the world size
//
// Every rank prints one line; all ranks agree on the exit status (0 = pass).
#include <cstdio>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/grid.hpp"
#include "pipe/topology.hpp"

namespace {

std::string list_str(const std::vector<int>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + std::to_string(v[i]);
  return out + "]";
}

// Collects failures instead of stopping at the first, so one run reports all.
struct Checker {
  std::vector<std::string> failures;
  void check(bool ok, const std::string& what) {
    if (!ok) failures.push_back(what);
  }
  template <class T>
  void equal(const T& got, const T& expected, const std::string& what) {
    check(got == expected, what + " is " + std::to_string(got) + ", expected " +
                               std::to_string(expected));
  }
  void equal_list(const std::vector<int>& got, const std::vector<int>& expected,
                  const std::string& what) {
    check(got == expected, what + " is " + list_str(got) + ", expected " + list_str(expected));
  }
  void mpi(int rc, const char* call) {
    check(rc == MPI_SUCCESS, std::string(call) + " returned " + std::to_string(rc));
  }
};

// Ranks sharing every coordinate of `rank` except `axis`: its group along
// `axis`, or just the rank itself when the topology has no such axis.
std::vector<int> expected_group(const libpipe::ProcessTopology& topo, int rank,
                                const std::string& axis) {
  if (!topo.has_axis(axis)) return {rank};
  std::map<std::string, int> filter;
  for (const auto& a : topo.axes()) {
    if (a != axis) filter[a] = topo.get_coord(rank, a);
  }
  return topo.filter_match(filter);
}

// The communicator's size, this rank's place in it, the world ranks of its
// members in communicator rank order (allgather) and their sum (allreduce).
void check_comm(Checker& c, MPI_Comm comm, const std::vector<int>& expected, int world_rank,
                const std::string& name) {
  if (comm == MPI_COMM_NULL) {
    c.check(false, name + " communicator is MPI_COMM_NULL");
    return;
  }
  int size = 0;
  int rank = -1;
  c.mpi(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  c.mpi(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  c.equal(size, static_cast<int>(expected.size()), name + " communicator size");
  int position = -1;
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (expected[i] == world_rank) position = static_cast<int>(i);
  }
  c.equal(rank, position, name + " communicator rank");

  std::vector<int> members(size > 0 ? size : 1, -1);
  c.mpi(MPI_Allgather(&world_rank, 1, MPI_INT, members.data(), 1, MPI_INT, comm), "MPI_Allgather");
  members.resize(size > 0 ? size : 0);
  c.equal_list(members, expected, name + " communicator members in rank order");

  int sum = -1;
  c.mpi(MPI_Allreduce(&world_rank, &sum, 1, MPI_INT, MPI_SUM, comm), "MPI_Allreduce");
  c.equal(sum, std::accumulate(expected.begin(), expected.end(), 0),
          name + " communicator sum of world ranks");
}

void check_grid(Checker& c, const libpipe::PipelineParallelGrid& grid,
                const libpipe::ProcessTopology& topo, int world_rank, int world_size) {
  const int stage = topo.get_coord(world_rank, "pipe");
  const int stages = topo.get_dim("pipe");
  const auto coord_or = [&](const char* axis, int fallback) {
    return topo.has_axis(axis) ? topo.get_coord(world_rank, axis) : fallback;
  };
  const auto dim_or = [&](const char* axis) {
    return topo.has_axis(axis) ? topo.get_dim(axis) : 1;
  };

  c.check(grid.world() == MPI_COMM_WORLD, "world() is not the communicator given");
  c.equal(grid.global_rank(), world_rank, "global_rank()");
  c.equal(grid.world_size(), world_size, "world_size()");
  c.check(grid.topology().str() == topo.str(), "topology() is " + grid.topology().str());
  c.equal(grid.stage_id(), stage, "stage_id()");
  c.equal(grid.num_stages(), stages, "num_stages()");
  c.equal(grid.data_parallel_id(), coord_or("data", 0), "data_parallel_id()");
  c.equal(grid.data_parallel_size(), dim_or("data"), "data_parallel_size()");
  c.equal(grid.model_parallel_id(), coord_or("model", 0), "model_parallel_id()");
  c.equal(grid.model_parallel_size(), dim_or("model"), "model_parallel_size()");
  c.check(grid.is_first_stage() == (stage == 0), "is_first_stage() is wrong");
  c.check(grid.is_last_stage() == (stage == stages - 1), "is_last_stage() is wrong");

  // The same rank at another stage, by get_rank on the full coordinate.
  const auto rank_at_stage = [&](int s) {
    std::map<std::string, int> coord;
    for (const auto& a : topo.axes()) coord[a] = topo.get_coord(world_rank, a);
    coord["pipe"] = s;
    return topo.get_rank(coord);
  };
  c.equal(grid.prev_stage_rank(), stage > 0 ? rank_at_stage(stage - 1) : -1, "prev_stage_rank()");
  c.equal(grid.next_stage_rank(), stage < stages - 1 ? rank_at_stage(stage + 1) : -1,
          "next_stage_rank()");
  for (int s = 0; s < stages; ++s) {
    c.equal(grid.stage_to_global(s), rank_at_stage(s), "stage_to_global(" + std::to_string(s) + ")");
  }
  for (int s : {-1, stages}) {
    bool threw = false;
    try {
      grid.stage_to_global(s);
    } catch (const libpipe::Error&) {
      threw = true;
    }
    c.check(threw, "stage_to_global(" + std::to_string(s) + ") did not throw libpipe::Error");
  }

  const auto pipe_group = expected_group(topo, world_rank, "pipe");
  const auto data_group = expected_group(topo, world_rank, "data");
  const auto model_group = expected_group(topo, world_rank, "model");
  c.equal_list(grid.pipe_group(), pipe_group, "pipe_group()");
  c.equal_list(grid.data_parallel_group(), data_group, "data_parallel_group()");
  c.equal_list(grid.model_group(), model_group, "model_group()");
  check_comm(c, grid.pipe_comm(), pipe_group, world_rank, "pipe");
  check_comm(c, grid.data_parallel_comm(), data_group, world_rank, "data-parallel");
  check_comm(c, grid.model_comm(), model_group, world_rank, "model");

  // The neighbours must pair up: what this rank sends to next arrives from
  // prev on the receiving side. MPI_PROC_NULL makes the ends no-ops.
  const int next = grid.next_stage_rank() >= 0 ? grid.next_stage_rank() : MPI_PROC_NULL;
  const int prev = grid.prev_stage_rank() >= 0 ? grid.prev_stage_rank() : MPI_PROC_NULL;
  int from_prev = -1;
  c.mpi(MPI_Sendrecv(&world_rank, 1, MPI_INT, next, 17, &from_prev, 1, MPI_INT, prev, 17,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE),
        "MPI_Sendrecv");
  c.equal(from_prev, grid.prev_stage_rank(), "rank received from the previous stage");
}

// Every rank learns whether any rank failed, so that all exit alike.
bool any_rank(bool failed) {
  int local = failed ? 1 : 0;
  int global = 1;
  if (MPI_Allreduce(&local, &global, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) return true;
  return global != 0;
}

int expect_size_error(const std::string& spec, int world_rank, int world_size) {
  std::string outcome;
  bool ok = false;
  try {
    const auto topo = libpipe::parse_topology(spec);
    libpipe::PipelineParallelGrid grid(MPI_COMM_WORLD, topo);
    outcome = "FAILED: the grid was built for " + topo.str() + " on " +
              std::to_string(world_size) + " ranks; expected a size error";
  } catch (const libpipe::Error& e) {
    ok = std::strstr(e.what(), "does not match the topology") != nullptr;
    outcome = std::string(ok ? "OK expected error: " : "FAILED: unexpected error: ") + e.what();
  }
  std::printf("grid_check rank %d: %s\n", world_rank, outcome.c_str());
  std::fflush(stdout);
  const bool failed = any_rank(!ok);
  MPI_Finalize();
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int world_rank = 0;
  int world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);

  if (argc == 3 && std::strcmp(argv[1], "--expect-size-error") == 0) {
    return expect_size_error(argv[2], world_rank, world_size);
  }
  if (argc != 2 || argv[1][0] == '-') {
    if (world_rank == 0) {
      std::fprintf(stderr,
                   "usage: grid_check <topology>  (e.g. pipe=2,data=2,model=2)\n"
                   "       grid_check --expect-size-error <topology>\n");
    }
    MPI_Finalize();
    return 2;
  }

  Checker c;
  std::string summary;
  bool built = false;
  try {
    const auto topo = libpipe::parse_topology(argv[1]);
    libpipe::PipelineParallelGrid grid(MPI_COMM_WORLD, topo);
    built = true;
    // Collective checks only once every rank has a grid, so that one rank's
    // failure cannot leave the others waiting in them.
    if (any_rank(false)) {
      c.check(false, "another rank failed to build the grid");
    } else {
      check_grid(c, grid, topo, world_rank, world_size);
    }
    summary = "stage=" + std::to_string(grid.stage_id()) +
              " data=" + std::to_string(grid.data_parallel_id()) +
              " model=" + std::to_string(grid.model_parallel_id()) +
              " prev=" + std::to_string(grid.prev_stage_rank()) +
              " next=" + std::to_string(grid.next_stage_rank());
  } catch (const libpipe::Error& e) {
    c.check(false, std::string("libpipe::Error: ") + e.what());
    // Keep the count of the agreement reduction equal on every rank.
    if (!built) any_rank(true);
  }

  std::string line;
  if (c.failures.empty()) {
    line = "OK " + summary;
  } else {
    line = "FAILED";
    if (!summary.empty()) line += " (" + summary + ")";
    for (std::size_t i = 0; i < c.failures.size(); ++i) line += (i ? "; " : ": ") + c.failures[i];
  }
  std::printf("grid_check rank %d: %s\n", world_rank, line.c_str());
  std::fflush(stdout);

  const bool failed = any_rank(!c.failures.empty());
  if (failed && world_rank == 0) std::printf("grid_check: FAILED on at least one rank\n");
  MPI_Finalize();
  return failed ? 1 : 0;
}
