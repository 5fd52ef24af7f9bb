// See mpi_check.hpp.
#include "run/mpi_check.hpp"

#include <cstring>
#include <string>

#include "pipe/error.hpp"

namespace libpipe {

void check_mpi(int rc, const char* call, const char* file, int line, int rank) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) std::strcpy(text, "unknown MPI error");
  char host[MPI_MAX_PROCESSOR_NAME] = {0};
  int host_length = 0;
  if (MPI_Get_processor_name(host, &host_length) != MPI_SUCCESS) std::strcpy(host, "?");
  const char* slash = std::strrchr(file, '/');
  throw Error(std::string(call) + " failed at " + (slash ? slash + 1 : file) + ":" + std::to_string(line) +
              " on rank " + std::to_string(rank) + " (" + host + "): " + text + " (error code " +
              std::to_string(rc) + ")");
}

}  // namespace libpipe
