// Partition methods: how a model description becomes per-layer weights and
// stage boundaries, by name, as chosen on the command line. The numbers come
// from describe (no layer is built), the cutting from partition.hpp.
//
//   uniform             the same number of layers per stage (partition_uniform)
//   parameters          trainable parameters per layer (the default); a tied
//                       weight counts on every layer that holds it, because
//                       every stage using it stores it and computes with it
//   flops               forward + backward FLOPs per sample
//   type:REGEX          weight 1 for layers whose registered type name the
//                       regex finds (case-insensitive search, like DeepSpeed's
//                       re.search), 0 for the others
//   type:RE1:W1|RE2:W2  weighted types: each layer takes the weight of the
//                       first alternative whose regex finds its type, 0 if
//                       none (recognised when every '|'-separated alternative
//                       ends in ':NUMBER')
//   manual:B1,B2,...    explicit boundaries: the first layer of stages
//                       1..S-1, or the full list 0,...,n
//   profile             measured per-layer times (needs the training engine)
//
// The method keyword is case-insensitive; regexes are used as written.
#pragma once

#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/partition.hpp"

namespace libpipe {

struct PIPE_API PartitionPlan {
  std::string method;           // as given
  std::vector<double> weights;  // per layer, as the method sees them (uniform: all 1; manual: parameters)
  Parts parts;                  // S+1 boundaries

  std::vector<double> stage_weights() const;
  double bottleneck() const;
  // bottleneck / mean stage weight - 1: 0 is a perfect balance, 1 means the
  // slowest stage has twice the mean's work. 0 when every weight is 0.
  double imbalance() const;
};

// Weights and boundaries for `method` on `num_stages` stages. Every error is
// one line naming the method and what is wrong with it; no stage is ever
// empty and no layer is ever dropped.
// `measured_times` (seconds per layer, e.g. from profile_layer_times) is what
// the 'profile' method balances; without it 'profile' is an error.
PIPE_API PartitionPlan plan_partition(const ModelDescription& model, const std::string& method, int num_stages,
                                      const std::vector<double>* measured_times = nullptr);

// The methods, on one line: "uniform, parameters, flops, type:REGEX, ...".
PIPE_API std::string partition_methods_help();

}  // namespace libpipe
