// Measuring each layer's forward + backward time on the real shapes, for the
// 'profile' partition method (which DeepSpeed never implemented). Layers that
// are the same layer (type, arguments, tie and input type: a `repeat`ed block)
// are timed once, and all of them get that time. The layers to time are
// spread over the ranks, each rank builds and times only its share, and one
// all-reduce gives every rank the same vector, so every rank computes the
// same partition.
#pragma once

#include <cstdint>
#include <mpi.h>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/model.hpp"
#include "pipe/registry.hpp"

namespace libpipe {

// For each layer, the index of the first layer that costs the same by
// construction: the same type, arguments, tie key and input type. Timing each
// copy of a repeated block apart only added noise: in one 2-rank run on a
// 2-core machine gpt-tiny's four identical blocks read 12.3, 16.1, 11.8 and
// 15.0 ms, those timed on rank 0 slower in each of 4 runs.
PIPE_API std::vector<int> same_cost_layers(const ModelSpec& model, const ModelDescription& description);

// Seconds per layer for one micro-batch of `micro_batch_size` samples:
// forward, backward_input and backward_weight on `device` (the one training
// will use), the best of `repeats` runs after one warm-up; one layer of each
// group of same_cost_layers is timed. Collective over `comm`.
PIPE_API std::vector<double> profile_layer_times(const ModelSpec& model, const ModelDescription& description,
                                                 const LayerRegistry& registry, MPI_Comm comm,
                                                 std::int64_t micro_batch_size, Device device = Device::cpu,
                                                 int repeats = 3);

}  // namespace libpipe
