// Checking MPI return codes: a failure becomes a libpipe::Error naming the
// call, file:line, rank and host (an MPI failure is usually one rank's).
#pragma once

#include <mpi.h>

namespace libpipe {

// Throws rather than aborting so that the app decides how to end the job.
void check_mpi(int rc, const char* call, const char* file, int line, int rank);

}  // namespace libpipe

#define PIPE_MPI_CHECK(call, rank) ::libpipe::check_mpi((call), #call, __FILE__, __LINE__, (rank))
