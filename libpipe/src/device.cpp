// Device choices common to every build: the node-local rank that picks a GPU,
// and the names of the GEMM math modes.
#include <string>

#include "pipe/cuda.hpp"
#include "pipe/error.hpp"
#include "mpi_check.hpp"

namespace libpipe {

int node_local_rank(MPI_Comm comm) {
  int rank = 0;
  PIPE_MPI_CHECK(MPI_Comm_rank(comm, &rank), rank);
  MPI_Comm node = MPI_COMM_NULL;
  PIPE_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node), rank);
  int local = 0;
  PIPE_MPI_CHECK(MPI_Comm_rank(node, &local), rank);
  MPI_Comm_free(&node);
  return local;
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
