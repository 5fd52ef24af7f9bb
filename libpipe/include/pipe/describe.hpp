// Describing a whole model without allocating it: every layer's input and
// output type, parameters, FLOPs and activation bytes, the tie groups, and the
// totals. This is where the shape chain is checked end to end; anything built
// later can assume a model that describes cleanly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/layer.hpp"
#include "pipe/model.hpp"
#include "pipe/registry.hpp"

namespace libpipe {

struct LayerInfo {
  int index = 0;
  std::string type;
  std::string tie;        // tie key or ""
  SourceLocation where;
  TensorType input;
  LayerDescription description;
  // Parameters this layer adds to the model's total: a tied parameter counts
  // only on the first layer of its tie group.
  std::int64_t unique_params = 0;
};

// Layers sharing one tie key, and the parameter they share.
struct TieGroup {
  std::string key;
  std::vector<int> layers;  // ascending global indices
  Shape shape;
};

struct ModelDescription {
  std::string name;
  TensorType input;
  TensorType output;
  std::vector<LayerInfo> layers;
  std::vector<TieGroup> ties;
  std::int64_t params = 0;            // trainable, tied parameters counted once
  std::int64_t flops = 0;             // forward + backward per sample
  std::int64_t activation_bytes = 0;  // per sample
};

// Describes every layer in order, feeding each one's output to the next.
// Errors name the file:line, the layer index and type, and for a broken shape
// chain both layers and both types.
PIPE_API ModelDescription describe_model(const ModelSpec& model, const LayerRegistry& registry);

// Makes the layers' activation bytes (and the model's) what `device` keeps: where its backend runs flash attention
// for a layer's attention sizes (flash_attention_runs, backend.hpp), the T x T probabilities counted by describe
// give way to each row's output and log-sum-exp (heads T (D + 1) floats). Call once, where the device is known.
PIPE_API void account_attention(ModelDescription& description, Device device);

// The labels the model's loss takes: its last layer's loss contract
// (LayerDescription::loss). A model whose last layer is not a loss cannot
// train, and this is the error that says so, naming the layer.
PIPE_API const LossLabels& model_loss(const ModelDescription& description);

// A fingerprint (FNV-1a, 64 bits) of everything about the model that ranks
// and checkpoints must agree on: layer types, types in and out, parameter
// counts, tie keys.
PIPE_API std::uint64_t model_fingerprint(const ModelDescription& description);

// A human-readable table of the description (one row per layer, then totals).
PIPE_API std::string format_description(const ModelDescription& description);

// 1234567 -> "1,234,567"
PIPE_API std::string with_commas(std::int64_t value);

}  // namespace libpipe
