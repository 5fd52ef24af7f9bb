// Choosing the topology: explicit axes, or DeepSpeed's pipe x data default.
#include "job_topology.hpp"

#include "pipe/error.hpp"

namespace pipe_train {

libpipe::ProcessTopology job_topology(const Options& options, int world_size) {
  if (!options.topology.empty()) return libpipe::parse_topology(options.topology);
  int stages = options.stages.value_or(1);
  if (options.data_parallel) return libpipe::PipeDataParallelTopology(stages, *options.data_parallel);
  if (world_size % stages != 0)
    throw libpipe::Error("world size " + std::to_string(world_size) + " is not a multiple of --stages " +
                      std::to_string(stages) + "; run with a multiple of " + std::to_string(stages) +
                      " ranks or give --data-parallel");
  return libpipe::PipeDataParallelTopology(stages, world_size / stages);
}

}  // namespace pipe_train
