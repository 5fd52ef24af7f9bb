// A bound on the waits that no MPI call can time out: MPI_Init (every rank must start), communicator splits and
// MPI_Finalize (the end of the job). MPI offers no timeout for them, so a rank that is stopped or hangs there
// would hang the whole job for ever; --comm-timeout bounds them through a Watch.
#pragma once

#include <string>

#include "pipe/export.hpp"

namespace libpipe {

// While a Watch lives, a background thread ends the process if it lives longer than `seconds`: one line on
// stderr, "<program>: rank R: error: --comm-timeout: <what> did not finish within S s (...)", and exit status 1
// (mpirun then ends the other ranks). `seconds` <= 0: no bound. One Watch at a time per process.
class PIPE_API Watch {
 public:
  Watch(const std::string& what, double seconds);
  ~Watch();
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

 private:
  bool armed_ = false;
};

}  // namespace libpipe
