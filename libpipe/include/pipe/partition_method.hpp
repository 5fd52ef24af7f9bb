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
//
// The methods are a table (partition_method.cpp): a name or prefix, how the
// method gets its weights, and whether it needs measurement. A method's text is
// parsed once, where its flag is read, into a PartitionMethod that pipe-train,
// pipe-plan and the tests share; planning then needs the model alone.
#pragma once

#include <memory>
#include <utility>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/partition.hpp"
#include "pipe/schedule.hpp"

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

// A parsed partition method. parse() checks everything that needs no model
// (the keyword, type: regexes and weights, manual: numbers) and throws one line
// naming the method; what depends on the model (a regex that matches no layer,
// a boundary out of range) is checked by plan_partition.
class PIPE_API PartitionMethod {
 public:
  struct Parsed;  // the method's own arguments (partition_method.cpp)

  PartitionMethod();  // parameters, the default
  static PartitionMethod parse(const std::string& text);

  const std::string& text() const { return text_; }  // as given
  const std::string& name() const;                   // its table entry: "uniform", "type:", ...
  // True when the weights are measured times that the caller must supply
  // (profile: pipe-train times the layers; pipe-plan cannot).
  bool needs_measurement() const;
  // True when the method balances per-layer weights (not uniform or manual): other cuts may rebalance them.
  bool balances() const;
  const Parsed& parsed() const { return *parsed_; }

 private:
  PartitionMethod(std::string text, std::shared_ptr<const Parsed> parsed)
      : text_(std::move(text)), parsed_(std::move(parsed)) {}

  std::string text_;
  std::shared_ptr<const Parsed> parsed_;
};

// Weights and boundaries for `method` on `num_stages` stages. Every error is
// one line naming the method and what is wrong with it; no stage is ever
// empty and no layer is ever dropped.
// `measured_times` (seconds per layer, e.g. from profile_layer_times) is what
// a method that needs measurement balances; without them it is an error.
PIPE_API PartitionPlan plan_partition(const ModelDescription& model, const PartitionMethod& method, int num_stages,
                                      const std::vector<double>* measured_times = nullptr);
// The same from the method's text, parsed here (for callers with one use of it).
PIPE_API PartitionPlan plan_partition(const ModelDescription& model, const std::string& method, int num_stages,
                                      const std::vector<double>* measured_times = nullptr);

// The same for the V-shaped placement of zb-v (2 chunks per stage, stage s holding chunks s and 2S-1-s): 2S
// chunks, cut by a method that balances weights (parameters, flops, type:, profile) so that the largest stage,
// the sum of its two chunks, is as small as possible (partition_balanced_v_shape); uniform and manual cut their
// 2S chunks as they always do.
PIPE_API PartitionPlan plan_partition_v_shape(const ModelDescription& model, const PartitionMethod& method,
                                              int num_stages, const std::vector<double>* measured_times = nullptr);

// The model cut into num_stages x virtual_stages chunks, as a schedule with `placement` runs them: under a
// V-shaped placement of 2 chunks per stage, plan_partition_v_shape; otherwise plan_partition over all the
// chunks (one per stage without virtual stages). What pipe-train, pipe-plan and pipe-sim all cut.
PIPE_API PartitionPlan plan_chunk_partition(const ModelDescription& model, const PartitionMethod& method,
                                            int num_stages, int virtual_stages, ChunkPlacement placement,
                                            const std::vector<double>* measured_times = nullptr);

// The methods, on one line: "uniform, parameters, flops, type:REGEX, ...".
PIPE_API std::string partition_methods_help();

}  // namespace libpipe
