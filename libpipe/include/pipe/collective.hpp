// Running a phase of a job on every rank so that an error never leaves a rank
// waiting: each rank runs the phase, then all ranks agree (one all-reduce)
// whether any failed. A failure the whole job shares (bad flags, a bad model
// file) is printed once by the lowest failing rank; a failure of some ranks
// only is printed by each of them with its rank.
#pragma once

#include <functional>
#include <mpi.h>
#include <string>
#include <vector>

#include "pipe/export.hpp"

namespace libpipe {

struct PhaseResult {
  bool ok = true;
  std::string message;  // this rank's error, "" when it succeeded
};

// Runs `phase`, catching any exception, and returns whether every rank of
// `comm` succeeded. Collective: every rank must call it.
PIPE_API bool run_phase_on_all(MPI_Comm comm, const std::function<void()>& phase, PhaseResult& mine);

// After a failed run_phase_on_all: prints the error(s) as one line each,
// prefixed with `program`, to stderr. Collective.
PIPE_API void report_phase_failure(MPI_Comm comm, const std::string& program, const PhaseResult& mine);

// Gathers one string per rank to rank 0, in rank order (empty elsewhere). Collective.
PIPE_API std::vector<std::string> gather_strings(MPI_Comm comm, const std::string& mine);

}  // namespace libpipe
