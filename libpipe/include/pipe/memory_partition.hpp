// Memory-aware partitioning (--memory-limit): the partition method's cut when
// it fits every rank's memory, otherwise the cut with the smallest bottleneck
// among those whose predicted peak fits (partition_capped.hpp over the memory
// model's StageMemoryBound). Pure: no MPI, nothing allocated.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/partition_method.hpp"

namespace libpipe {

// "8GiB", "512MiB", "1.5GB", "4096" (bytes): binary (KiB, MiB, GiB, TiB) and decimal (KB, MB, GB, TB) suffixes,
// case-insensitive, an optional "B". Throws libpipe::Error naming `flag` and the text when it is not a positive size.
PIPE_API double parse_byte_size(const std::string& text, const std::string& flag = "--memory-limit");
// "1.50 GiB", "640 MiB", "12 KiB", "100 B".
PIPE_API std::string byte_size_str(double bytes);

struct MemoryLimitRequest {
  std::string schedule = "1f1b";
  int micro_batches = 1;
  MemoryModelOptions memory;
  double limit = 0;       // bytes per rank
  int data_parallel = 1;  // replicas, for the --zero 1 suggestion
  int virtual_stages = 1;  // chunks per stage (schedule_virtual_stages): above 1 the method's cut is only checked
};

// The cut plan_partition_memory makes, without its errors: `own` (the method's cut, one chunk per stage) when every
// stage's bound fits `limit`; otherwise, for a method that balances weights or uniform, the cut with the smallest
// bottleneck among those that fit (`*recut` set); std::nullopt when none fits or the method's cut may not move.
PIPE_API std::optional<Parts> cut_within_memory_limit(const PartitionPlan& own, const PartitionMethod& method,
                                                      const StageMemoryBound& bound, double limit,
                                                      bool* recut = nullptr);

// The cut of `method` into `num_stages` stages whose every rank's predicted peak (StageMemoryBound) is within
// request.limit. The method's own cut when it fits; otherwise, for a method that balances weights or uniform (its
// weights all 1), the cut with the smallest bottleneck among those that fit, exactly; a manual cut is never
// changed. When nothing fits, the error says the smallest peak any cut reaches and which flags would lower it
// (with the peak each reaches). With virtual stages (request.virtual_stages > 1) a stage's chunks are not one range
// of layers, so the bound does not apply: the method's chunk cut (plan_chunk_partition) is kept when every rank's
// predict_memory fits the limit, else the error names the stage over it and what would lower its peak.
PIPE_API PartitionPlan plan_partition_memory(const ModelDescription& model, const PartitionMethod& method,
                                             int num_stages, const MemoryLimitRequest& request,
                                             const std::vector<double>* measured_times = nullptr);

}  // namespace libpipe
