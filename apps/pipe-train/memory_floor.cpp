// See memory_floor.hpp.
#include "memory_floor.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

#include "pipe/collective.hpp"
#include "pipe/cpu_info.hpp"
#include "pipe/error.hpp"
#include "pipe/schedule.hpp"

namespace pipe_train {

MemoryFloor memory_floor(const libpipe::ModelDescription& description, const std::vector<int>& parts, int stage,
                         int stages, int data_parallel, const Options& options) {
  const bool bf16 = options.dtype == "bf16";
  const double shards = options.train.zero == 1 ? std::max(1, data_parallel) : 1;  // --zero 1 splits these
  const double optimizer_bytes = options.train.optimizer.kind == "adamw" ? 8 : 0;  // m and v; sgd's momentum may be off
  const double per_parameter = (bf16 ? 2 + 4 / shards : 4) /* values and masters */ + 4 /* gradient */ +
                               optimizer_bytes / shards;
  const bool checkpointing = options.train.checkpoint_interval > 0;
  MemoryFloor floor;
  double activations = 0, largest = 0;
  for (int chunk : libpipe::stage_chunks(options.placement, stage, stages, options.virtual_stages))
    for (int layer = parts.at(chunk); layer < parts.at(chunk + 1); ++layer) {
      const libpipe::LayerInfo& info = description.layers.at(static_cast<std::size_t>(layer));
      floor.state_bytes += per_parameter * static_cast<double>(info.unique_params);
      const double bytes = static_cast<double>(info.description.activation_bytes) * options.train.micro_batch_size;
      activations += bytes;
      largest = std::max(largest, bytes);
    }
  floor.activation_bytes = checkpointing ? largest : activations;
  return floor;
}

void refuse_beyond_node_memory(MPI_Comm world, const MemoryFloor& mine, const Options& options, bool on_cpu) {
  if (!on_cpu) return;
  MPI_Comm node = libpipe::node_comm(world);
  double sums[2] = {mine.state_bytes, mine.activation_bytes};
  libpipe::allreduce(node, sums, 2, MPI_DOUBLE, MPI_SUM);
  int ranks = 1;
  MPI_Comm_size(node, &ranks);
  MPI_Comm_free(&node);
  const double memory = libpipe::machine_memory_bytes();
  if (memory <= 0) return;
  if (sums[0] + sums[1] <= memory) return;
  char text[512];
  std::snprintf(text, sizeof text,
                "the %d rank(s) on this node need at least %.1f GB (parameters, gradients and optimizer state %.1f GB; "
                "the activations of one micro-batch of %d samples %.1f GB), more than its %.1f GB of memory: use more "
                "--stages or nodes, a smaller --micro-batch-size, or --activation-checkpoint-interval",
                ranks, (sums[0] + sums[1]) / 1e9, sums[0] / 1e9, options.train.micro_batch_size, sums[1] / 1e9,
                memory / 1e9);
  throw libpipe::Error(text);
}

}  // namespace pipe_train
