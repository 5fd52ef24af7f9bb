// Measuring each layer's forward + backward time on the real shapes, for the
// 'profile' partition method (which DeepSpeed never implemented). The layers
// are spread over the ranks (layer i on rank i mod world size), each rank
// builds and times only its share, and one all-reduce gives every rank the
// same vector, so every rank computes the same partition.
#pragma once

#include <cstdint>
#include <mpi.h>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/model.hpp"
#include "pipe/registry.hpp"

namespace libpipe {

// Seconds per layer for one micro-batch of `micro_batch_size` samples:
// forward, backward_input and backward_weight on `device` (the one training
// will use), the best of `repeats` runs after one warm-up. Collective over `comm`.
PIPE_API std::vector<double> profile_layer_times(const ModelSpec& model, const ModelDescription& description,
                                                 const LayerRegistry& registry, MPI_Comm comm,
                                                 std::int64_t micro_batch_size, Device device = Device::cpu,
                                                 int repeats = 3);

}  // namespace libpipe
