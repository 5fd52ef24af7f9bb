// Splitting a sequence of layers into pipeline stages: pure functions over
// per-layer weights, no MPI, no model. partition_method.hpp maps a model and
// a method name ("parameters", "type:REGEX", ...) onto these.
//
// A partition is a list of S+1 boundaries: stage s holds the layers
// [parts[s], parts[s+1]). Every function here refuses to produce an empty
// stage or to drop a layer; anything it cannot honour is a libpipe::Error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pipe/export.hpp"

namespace libpipe {

// S+1 boundaries: parts[0] = 0, parts[S] = n, strictly increasing.
using Parts = std::vector<int>;

// DeepSpeed's partition_uniform: every stage gets floor(n/S) layers and the
// first n mod S stages one more (38 layers on 8 stages -> 5,5,5,5,5,5,4,4).
// n < S is an error, never an empty stage.
PIPE_API Parts partition_uniform(std::int64_t num_layers, int num_stages);

// The partition whose largest stage weight (the pipeline's bottleneck) is as
// small as possible. Not DeepSpeed's heuristic, which minimises max - min and
// misses the optimum on about 1 random case in 8.
//
// Weights must be finite and >= 0. Every stage gets at least one layer of
// positive weight, so fewer positive-weight layers than stages is an error.
// Zero-weight layers do not change any stage's weight; they are placed by
// rule: leading ones join stage 0, trailing ones the last stage, interior ones
// the stage of the weighted layer before them (so every stage after the first
// starts with a layer of positive weight).
//
// What "exact" means. A stage's weight is computed one way everywhere
// (partition_balanced, stage_weights, bottleneck):
//  - when every weight is an integer and their total fits in int64, the sum is
//    exact integer arithmetic (converted to double only on output, which is
//    exact up to 2^53);
//  - otherwise it is the difference of two running prefix sums kept in long
//    double, rounded to double: the true real sum up to an error of about
//    n * 2^-64 times the total (on x86; long double is wider elsewhere). The
//    error is relative to the total, not to the stage: a stage millions of
//    times lighter than the whole model can read visibly off (even 0), but
//    the bottleneck, which is at least total / S, cannot.
// Under that definition the returned bottleneck is the minimum over all
// partitions, with no tolerance: no partition has a smaller one.
//
// Tie-break among optimal partitions: the boundary of every stage is as far
// left as any optimal partition allows (the componentwise minimum over all
// optimal partitions, after zero-weight layers are placed by the rule above).
// Later stages are therefore filled first and stage 0 gets the least work.
// Why: under 1F1B, stage s holds up to S - s micro-batches of activations at
// once, so the early stages are the memory-bound ones; giving them the
// lighter share of a tie costs no throughput and lowers peak memory.
//
// O(n + S log n log W) time (log W: at most 64 bisection steps over the
// candidate bottlenecks): 10^6 layers on 1,024 stages take a few
// milliseconds (pipe-bench partition).
PIPE_API Parts partition_balanced(const std::vector<double>& weights, int num_stages);

// The V-shaped placement of zero-bubble ZB-V: 2 chunks per stage, stage s holding chunks s and 2S-1-s (the
// model's first and last chunk on stage 0). A stage's work is the sum of its two chunks, but the schedule also
// runs chunk after chunk, so both count. The 2S chunk boundaries returned (2S+1 entries) are, among the cuts whose
// largest chunk is as small as possible (partition_balanced's optimum over 2S chunks), one whose largest stage
// sum is the smallest, exactly, under partition_balanced's arithmetic; within the middle stage the two chunks are
// split as evenly as the limits allow. Never worse than partition_balanced(weights, 2S) on either count.
// Every chunk gets a layer of positive weight (fewer than 2S is an error); zero-weight layers are placed by
// partition_balanced's rule. O(S m^3 log W) for m layers of positive weight: beyond kVShapeExactLimit of them
// it returns partition_balanced(weights, 2S).
constexpr std::size_t kVShapeExactLimit = 128;
PIPE_API Parts partition_balanced_v_shape(const std::vector<double>& weights, int num_stages);

// The weight of each stage of a V-shaped partition (2S chunks): chunk s plus chunk 2S-1-s.
PIPE_API std::vector<double> v_shape_stage_weights(const std::vector<double>& weights, const Parts& parts);

// The weight of each stage, summed as partition_balanced sums it (see above).
// `parts` is checked with validate_parts against weights.size().
PIPE_API std::vector<double> stage_weights(const std::vector<double>& weights, const Parts& parts);

// The largest stage weight.
PIPE_API double bottleneck(const std::vector<double>& weights, const Parts& parts);

// Checks that `parts` has at least two entries, starts at 0, ends at
// num_layers and is strictly increasing (no empty stage); the error names the
// entry that is wrong and its value.
PIPE_API void validate_parts(const Parts& parts, std::int64_t num_layers);

}  // namespace libpipe
