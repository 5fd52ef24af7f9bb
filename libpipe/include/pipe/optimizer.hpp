// Optimizers over a set of parameters: AdamW (decoupled weight decay, PyTorch's
// formula) and SGD with momentum. State (moments, momentum buffers) lives on
// the parameters' device. Parameters that share storage (tied weights on one
// stage) are stepped once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipe/comm.hpp"
#include "pipe/export.hpp"
#include "pipe/layer.hpp"

namespace libpipe {

struct OptimizerConfig {
  std::string kind = "adamw";  // "adamw" or "sgd"
  float beta1 = 0.9f;
  float beta2 = 0.95f;  // GPT-2 / nanoGPT practice; PyTorch's default is 0.999
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  float momentum = 0.9f;  // sgd
};

class PIPE_API Optimizer {
 public:
  // `params` must have gradients allocated. Weight decay applies to tensors
  // of 2 or more dimensions (weights, embeddings), never to biases or norm
  // gains: nanoGPT's rule.
  // Sharded (ZeRO stage 1, shard_count > 1): the state covers only slice shard_rank of every parameter
  // (shard_range), and step() updates only that slice of the parameters; the caller reduce-scatters the gradients
  // before and all-gathers the parameters after. Under mixed precision the float32 masters are split too: the
  // optimizer takes this rank's slice of each (master_slice) and releases the parameter's master, and step()
  // writes the slice's bfloat16 rounding into the value, which is what the caller all-gathers.
  Optimizer(const OptimizerConfig& config, const std::vector<Parameter*>& params, int shard_rank = 0,
            int shard_count = 1);
  // One update with learning rate `lr` from the parameters' current gradients.
  void step(float lr);
  bool sharded() const { return shard_count_ > 1; }
  // The slice of `param` this optimizer updates (all of it unless sharded).
  ShardRange shard_of(const Parameter& param) const;
  // Bytes of optimizer state held here (m and v, or the momentum buffers), and what it would be unsharded.
  std::int64_t state_bytes() const;
  std::int64_t unsharded_state_bytes() const;
  // Bytes of float32 masters (mixed precision) held here, sliced or in the parameters, and what they are whole.
  std::int64_t master_bytes() const;
  std::int64_t unsharded_master_bytes() const;
  std::int64_t steps() const { return steps_; }
  const OptimizerConfig& config() const { return config_; }
  // Number of distinct parameter tensors it updates.
  std::size_t size() const { return slots_.size(); }

  // The state kept for `param` (checkpoints): AdamW's first and second
  // moments, or SGD's momentum buffer in `first` (second undefined); when
  // sharded, of shard_of(param) only (1-D). Throws for a parameter this
  // optimizer does not update.
  struct State {
    Tensor* first;
    Tensor* second;
  };
  State state_of(const Parameter& param);
  // Sharded under mixed precision: this rank's slice of the float32 master of `param` (1-D, shard_of(param)),
  // which the optimizer holds in place of Parameter::master. Null where the parameter keeps its master, or has
  // none.
  Tensor* master_slice(const Parameter& param);
  // Restores the step count (AdamW's bias correction depends on it).
  void set_steps(std::int64_t steps) { steps_ = steps; }

 private:
  struct Slot {
    Parameter* param;
    Tensor m;  // AdamW first moment, or SGD momentum buffer
    Tensor v;  // AdamW second moment
    bool decay;
    ShardRange shard;  // the elements it updates
    Tensor master;     // sharded under mixed precision: the float32 master of `shard` (else undefined)
  };
  const Slot& slot_of(const Parameter& param) const;
  Slot& slot_of(const Parameter& param);
  OptimizerConfig config_;
  int shard_rank_ = 0, shard_count_ = 1;
  std::vector<Slot> slots_;
  std::int64_t steps_ = 0;
};

// Elements [range.begin, range.end) of `t` as a 1-D tensor sharing its storage (`t` itself, shape and all, when
// the range covers it). Valid while `t`'s storage lives.
PIPE_API Tensor shard_view(Tensor& t, const ShardRange& range);

// Collects the parameters of `layers` (pointers stay valid while the layers live).
PIPE_API std::vector<Parameter*> parameters_of(const std::vector<Layer*>& layers);

// Makes the tieable parameter (value and gradient) of every layer in `tied`
// share the storage of the first one's, so that on one stage a tied weight
// is one tensor and its gradient sums both uses. Gradients must be allocated.
PIPE_API void share_tied_parameter(const std::vector<Layer*>& tied);

}  // namespace libpipe
