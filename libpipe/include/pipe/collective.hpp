// Running a phase of a job on every rank so that an error never leaves a rank
// waiting: each rank runs the phase, then all ranks agree (one all-reduce)
// whether any failed. A failure the whole job shares (bad flags, a bad model
// file) is printed once by the lowest failing rank; a failure of some ranks
// only is printed by each of them with its rank.
//
// A rank that hangs or never arrives would still leave the others waiting in
// these collectives forever; set_collective_timeout bounds every wait in them.
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

// Process-wide: any wait inside the functions below that lasts longer than
// `seconds` (0, the default: wait forever) throws libpipe::Error naming what
// was waited for, the group (MPI_COMM_WORLD or its world ranks) and this
// rank, e.g. "--comm-timeout: waited more than 3 s in MPI_COMM_WORLD (4 ranks)
// for every rank to finish writing checkpoint layers (rank 0)". The wait
// includes the time the slowest rank spends in its phase, so the timeout must
// exceed the longest phase (e.g. writing a checkpoint). After a timeout the
// collective stays pending on that communicator (MPI cannot cancel a
// collective): the communicator is unusable and the job should end, as
// pipe-train does with MPI_Abort. pipe-train sets this from --comm-timeout.
PIPE_API void set_collective_timeout(double seconds);
PIPE_API double collective_timeout();

// Runs `phase`, catching any exception, and returns whether every rank of
// `comm` succeeded. Collective: every rank must call it. `what` names the
// phase ("building the engine"; default "a phase"): in a timeout's message
// ("finish <what>"), and after any exception that is not a libpipe::Error,
// whose text alone would not say what failed ("<text> (while <what>)", "out of
// memory while <what>").
PIPE_API bool run_phase_on_all(MPI_Comm comm, const std::function<void()>& phase, PhaseResult& mine,
                               const std::string& what = "");

// After a failed run_phase_on_all: prints the error(s) as one line each,
// prefixed with `program`, to stderr. Collective.
PIPE_API void report_phase_failure(MPI_Comm comm, const std::string& program, const PhaseResult& mine);

// The ranks of `comm` on this rank's node, in their order in `comm` (MPI_Comm_split_type, bounded by the
// collective timeout through a Watch). Collective; the caller frees the communicator.
PIPE_API MPI_Comm node_comm(MPI_Comm comm);

// Gathers one string per rank to rank 0, in rank order (empty elsewhere).
// Collective. `what` names the strings in a timeout's message ("send <what>
// to rank 0"; default "its result").
PIPE_API std::vector<std::string> gather_strings(MPI_Comm comm, const std::string& mine,
                                                 const std::string& what = "");

// MPI_Barrier under the timeout. `what` names the point ("reach <what>";
// default "a barrier").
PIPE_API void barrier(MPI_Comm comm, const std::string& what = "");

// MPI_Bcast of one int from `root` under the timeout; returns root's value.
PIPE_API int broadcast_int(MPI_Comm comm, int value, int root, const std::string& what = "");

// MPI_Allgather (`count` elements of `type` from every rank into `all`, which
// holds size * count) and in-place MPI_Allreduce under the timeout. The data
// goes through buffers of their own, so that a timeout never leaves MPI
// writing into the caller's. `type`: a predefined type (MPI_INT, MPI_DOUBLE,
// ...). `what` names the data ("contribute <what>";
// default "its values").
PIPE_API void allgather(MPI_Comm comm, const void* mine, void* all, int count, MPI_Datatype type,
                        const std::string& what = "");
PIPE_API void allreduce(MPI_Comm comm, void* values, int count, MPI_Datatype type, MPI_Op op,
                        const std::string& what = "");

}  // namespace libpipe
