// Before any layer is allocated: the least memory the training needs on this node, from the model's description
// alone, and a refusal when even that is more than the node has (instead of std::bad_alloc or the kernel's OOM
// killer half-way through the set-up).
#pragma once

#include <mpi.h>

#include <vector>

#include "options.hpp"
#include "pipe/describe.hpp"

namespace pipe_train {

// What one rank needs at least: its layers' parameters (fp32 masters, bf16 copies under --dtype bf16), their
// gradients and the optimizer's state (the state and the masters split over `data_parallel` replicas under
// --zero 1), and the activations of one micro-batch (of one layer, under activation
// checkpointing). A schedule keeps more micro-batches than one in flight and a tied weight is counted once, so the
// real peak is higher: this is a floor, never an estimate that could refuse a run that fits.
struct MemoryFloor {
  double state_bytes = 0;       // parameters, gradients, optimizer state
  double activation_bytes = 0;  // one micro-batch
  double total() const { return state_bytes + activation_bytes; }
};
MemoryFloor memory_floor(const libpipe::ModelDescription& description, const std::vector<int>& parts, int stage,
                         int stages, int data_parallel, const Options& options);

// Collective over `world`. Sums the floors of the ranks on each node and throws libpipe::Error, the same line on
// every rank of the node, when the sum exceeds the node's physical memory. CPU runs only: on a GPU the device's
// memory is what counts, and the allocator reports it.
void refuse_beyond_node_memory(MPI_Comm world, const MemoryFloor& mine, const Options& options, bool on_cpu);

}  // namespace pipe_train
