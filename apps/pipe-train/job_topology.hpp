// The job's process topology from the command line and the world size.
#pragma once

#include "options.hpp"
#include "pipe/topology.hpp"

namespace pipe_train {

// --topology as given, or pipe x data (data innermost) from --stages and
// --data-parallel, the data-parallel degree defaulting to world / stages.
libpipe::ProcessTopology job_topology(const Options& options, int world_size);

}  // namespace pipe_train
