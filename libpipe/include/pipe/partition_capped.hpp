// Partitioning under a per-stage cap (memory): the split with the smallest
// bottleneck among those whose every stage's cost stays within a limit. Pure
// functions over weights and a cost callback, no MPI, no model;
// partition_method.hpp's plan_partition_memory feeds them the memory model.
#pragma once

#include <functional>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/partition.hpp"

namespace libpipe {

// What stage `stage` costs when it holds layers [begin, end). It must not
// decrease when the range grows at either end (for every stage; stages may
// differ, as 1F1B's first stage holds more micro-batches than its last):
// the exactness below rests on it.
using StageCost = std::function<double(int stage, int begin, int end)>;

// Among the partitions into `num_stages` non-empty stages with cost(s, ...) <= limit on every stage s, one whose
// largest stage weight (summed as partition_balanced sums it) is the smallest, exactly. When
// partition_balanced's own cut fits, that cut is returned unchanged (a cap that binds nowhere changes nothing);
// otherwise, among the optimal cuts, the one whose last stage starts earliest, then the one before it, and so on
// (later stages filled first, as partition_balanced does). Unlike partition_balanced it never needs a layer of
// positive weight per stage: a stage may hold only zero-weight layers where the cap forces it.
// Throws libpipe::Error when no partition fits; `smallest_peak_cost` then says how close one gets.
// O(S log n log W) cost evaluations when few single layers exceed the cap (each such layer adds a step per stage
// that could start at it): 10^5 layers on 1,024 stages within a second (pipe-bench partition).
PIPE_API Parts partition_balanced_capped(const std::vector<double>& weights, int num_stages, const StageCost& cost,
                                         double limit);

// The smallest value of max over stages of cost(s, stage s's layers) that any partition of `num_layers` layers
// into `num_stages` non-empty stages reaches, exactly (the limit below which partition_balanced_capped fails).
// About 55 capped searches, each O(S^2 log n) cost evaluations at caps near the answer: milliseconds for
// hundreds of layers on tens of stages, 16 s for 10^5 layers on 1,024 stages (pipe-bench partition).
PIPE_API double smallest_peak_cost(int num_layers, int num_stages, const StageCost& cost);

}  // namespace libpipe
