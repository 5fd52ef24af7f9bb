// The layer plugin interface: a LayerFactory describes a layer type without
// allocating anything and creates layers; a Layer owns its parameters.
//
// describe() is what lets every rank plan the whole model in microseconds
// (partitioning by parameters or FLOPs, shape checks) while create() runs only
// for the layers of the local stage.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pipe/args.hpp"
#include "pipe/export.hpp"
#include "pipe/shape.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

// One trainable parameter as describe() announces it.
struct ParamSpec {
  std::string name;  // stable: it becomes the checkpoint's tensor name
  Shape shape;
  // True for the one parameter a layer shares under its `tie` key (an
  // embedding's token table and the LM head's weight). Tied parameters are
  // counted once per tie group.
  bool tieable = false;
};

// A loss layer's contract with the engine, the data sources, profiling and
// the benchmarks: it returns the per-sample loss (float32 [B]) and reads
// LayerContext::labels of this type. Nothing in libpipe knows a loss by its
// type name, so a plugin can ship its own.
struct LossLabels {
  // Per sample, like every type describe() reports: int32 class ids (labels
  // [T] for logits [T, V]) or float32 targets (shaped like the input for MSE).
  TensorType type;
  // int32 labels: each id lies in [0, classes). 0 for float targets.
  std::int64_t classes = 0;
};

// One matrix product that a layer runs in a training step (forward and both
// backward passes), per sample: C[m, n] (+)= op(A)[m, k] op(B)[k, n], `batch`
// times at fixed strides. Benchmarks and cost models read these; a layer that
// lists none is simply not benchmarked. pipe/gemm_shape.hpp builds the usual
// sets (a linear map's three, causal attention's six).
struct GemmShape {
  std::string layer;  // the product's owner inside the layer: "attn.qkv", "mlp.fc", ...
  std::string pass;   // "forward", "input grad", "weight grad", ...
  bool trans_a = false, trans_b = false;
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  bool accumulate = false;  // beta = 1: a weight gradient adds into its buffer
  // The dimension that grows with the micro-batch: 'm', 'n', 'k' or 'b'
  // (batch), e.g. the rows of a forward, the inner dimension of a weight gradient.
  char per_sample = 'm';
};

// What describe() reports for one layer, per sample (no batch dimension).
struct PIPE_API LayerDescription {
  TensorType output;
  std::vector<ParamSpec> params;
  // Forward plus backward floating-point operations per sample (a multiply-add
  // is 2 FLOPs; backward counts both input and weight gradients).
  std::int64_t flops = 0;
  // Bytes this layer saves in forward for its backward, per sample.
  std::int64_t activation_bytes = 0;
  // Causal attention inside the layer, if any (0: none): its heads, tokens per sample and head size.
  // activation_bytes counts its T x T probabilities, as the materialised path keeps them; account_attention
  // (describe.hpp) swaps them for flash attention's state where the device runs that for these sizes.
  std::int64_t attention_heads = 0, attention_seq = 0, attention_head_dim = 0;
  // Set by loss layers only (see LossLabels). A model trains when its last layer is a loss.
  std::optional<LossLabels> loss;
  // The layer's GEMMs per sample (see GemmShape); optional.
  std::vector<GemmShape> gemms;

  std::int64_t param_count() const;
};

// A parameter of a created layer: its spec, its storage and its gradient.
// The gradient is allocated by allocate_grads (training only), so that
// building a model for planning or inference costs the parameters alone.
struct Parameter {
  ParamSpec spec;
  Tensor value;  // what the layer computes with: float32, or bfloat16 under mixed precision
  Tensor grad;   // float32, same shape; backward_weight accumulates into it
  // Mixed precision: the float32 master weights that the optimizer updates and
  // checkpoints hold; value is their bfloat16 rounding. Undefined when value
  // is float32 (value is then the master itself).
  Tensor master;
};

// What one micro-batch's forward left for its backward. The engine owns one
// per layer and in-flight micro-batch and drops it after backward_weight.
struct LayerContext {
  // Tensors the layer kept, in an order only the layer knows. backward_input
  // may append what backward_weight will need (e.g. gradients at internal
  // GEMM outputs), since zero-bubble schedules run the two apart.
  std::vector<Tensor> saved;
  // Targets for a loss layer, of the type its description's `loss` names,
  // batched: [B, ...]. Set by the engine before forward.
  Tensor labels;
};

// Everything create() needs beyond the arguments and the input type.
struct PIPE_API CreateContext {
  int layer_index = 0;      // global index in the model: seeds the initial weights
  std::uint64_t seed = 0;   // the run's seed
  Device device = Device::cpu;
  // Seed for this layer: depends only on `seed` and `layer_index`, so that
  // initial weights do not depend on how the model is partitioned.
  std::uint64_t layer_seed() const;
};

// A created layer. Activations carry the micro-batch as their first
// dimension: a layer described with input [T, C] takes x of shape [B, T, C].
// Layers do their math through ops.hpp only, never BLAS or CUDA directly, so
// one layer runs on every backend.
class PIPE_API Layer {
 public:
  virtual ~Layer();
  virtual std::vector<Parameter>& parameters() = 0;
  // Total bytes of parameter storage this layer holds, master weights included (not gradients).
  std::size_t parameter_bytes();

  // y = f(x); keeps in ctx what backward needs (the engine keeps nothing else).
  // A loss layer returns the per-sample loss, shape [B].
  virtual Tensor forward(LayerContext& ctx, const Tensor& x) = 0;
  // dx from dy (for a loss layer dy is [B]: d(total loss)/d(sample loss)).
  virtual Tensor backward_input(LayerContext& ctx, const Tensor& dy) = 0;
  // Adds this micro-batch's parameter gradients to each Parameter::grad.
  // Called after backward_input on the same ctx, possibly much later.
  virtual void backward_weight(LayerContext& ctx, const Tensor& dy) = 0;
};

// Allocates zero gradients for every parameter that has none.
PIPE_API void allocate_grads(Layer& layer);
// Sets every allocated gradient to zero.
PIPE_API void zero_grads(Layer& layer);

// Mixed precision: every float32 parameter of `layer` moves its values to its
// master and computes with a bfloat16 copy (store_parameters_in_bf16). After
// the master changes (an optimizer step, a checkpoint load) refresh_from_master
// rounds it into value again.
PIPE_API void store_parameters_in_bf16(Layer& layer);
PIPE_API void refresh_from_master(Parameter& param);
// The float32 values of a parameter: its master when it has one, else its value.
PIPE_API Tensor& master_of(Parameter& param);
PIPE_API const Tensor& master_of(const Parameter& param);

class PIPE_API LayerFactory {
 public:
  virtual ~LayerFactory();
  // One line for --list-layers.
  virtual std::string summary() const = 0;
  // Output type, parameters, FLOPs and activation bytes for this input,
  // without allocating. Throws ShapeError when `input` does not fit and
  // ArgError for missing or ill-typed arguments.
  virtual LayerDescription describe(const Args& args, const TensorType& input) const = 0;
  // Allocates and initialises a layer whose parameters match describe().
  virtual std::unique_ptr<Layer> create(const Args& args, const TensorType& input,
                                        const CreateContext& context) const = 0;
};

// Base for layers whose parameters are exactly those of their description,
// allocated with Tensor::zeros; plugins fill in the initial values and
// implement the math.
class PIPE_API ParameterLayer : public Layer {
 public:
  ParameterLayer(const LayerDescription& description, Device device);
  std::vector<Parameter>& parameters() override { return params_; }
  Parameter& param(const std::string& name);

 private:
  std::vector<Parameter> params_;
};

}  // namespace libpipe
