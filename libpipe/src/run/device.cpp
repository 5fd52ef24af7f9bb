// Device choices common to every build: the node-local rank that picks a GPU,
// whether ranks would share one, and the names of the GEMM math modes.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "pipe/collective.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"
#include "run/mpi_check.hpp"

namespace libpipe {

int node_local_rank(MPI_Comm comm) {
  int rank = 0;
  PIPE_MPI_CHECK(MPI_Comm_rank(comm, &rank), rank);
  MPI_Comm node = node_comm(comm);
  int local = 0;
  PIPE_MPI_CHECK(MPI_Comm_rank(node, &local), rank);
  MPI_Comm_free(&node);
  return local;
}

namespace {

// The physical GPU behind device `index` of this process: its entry in CUDA_VISIBLE_DEVICES when that is set,
// else the index.
std::string gpu_identity(int index) {
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::stringstream list(visible);
    std::string entry;
    for (int i = 0; std::getline(list, entry, ','); ++i)
      if (i == index) return entry;
  }
  return std::to_string(index);
}

}  // namespace

bool ranks_share_a_gpu(MPI_Comm comm, int gpu) {
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int length = 0;
  MPI_Get_processor_name(host, &length);
  int size = 1;
  MPI_Comm_size(comm, &size);
  const std::hash<std::string> hash;
  std::uint64_t mine[2] = {hash(host), hash(gpu_identity(gpu))};
  std::vector<std::uint64_t> all(2 * static_cast<std::size_t>(size));
  allgather(comm, mine, all.data(), 2, MPI_UINT64_T, "its host and GPU");
  std::vector<std::pair<std::uint64_t, std::uint64_t>> bound;
  for (int r = 0; r < size; ++r) bound.emplace_back(all[2 * r], all[2 * r + 1]);
  std::sort(bound.begin(), bound.end());
  return std::adjacent_find(bound.begin(), bound.end()) != bound.end();
}

GemmMath parse_gemm_math(const std::string& name) {
  if (name == "fp32") return GemmMath::fp32;
  if (name == "tf32") return GemmMath::tf32;
  if (name == "bf16") return GemmMath::bf16;
  throw Error("unknown GEMM math '" + name + "' (expected fp32, tf32 or bf16)");
}

const char* gemm_math_name(GemmMath math) {
  switch (math) {
    case GemmMath::fp32:
      return "fp32";
    case GemmMath::tf32:
      return "tf32";
    case GemmMath::bf16:
      return "bf16";
  }
  return "?";
}

}  // namespace libpipe
