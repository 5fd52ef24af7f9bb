// What every data source reads off the model, and how it seeds a sample:
// shared by the built-in sources (data.cpp) and the token files
// (token_data.cpp).
#pragma once

#include <cstdint>

#include "pipe/data.hpp"
#include "pipe/describe.hpp"
#include "pipe/init.hpp"

namespace libpipe::data_detail {

// What the model takes and what its loss wants, read off the description
// (the loss layer's contract, LayerDescription::loss).
struct ModelIo {
  TensorType input;
  TensorType loss_input;  // the loss layer's input (logits or predictions)
  TensorType labels;      // per sample
  bool cross_entropy = true;  // int32 class ids rather than float targets
  std::int64_t classes = 0;   // class ids lie in [0, classes)
  std::int64_t vocab = 0;     // token models: the embedding's vocabulary
};

inline ModelIo model_io(const ModelDescription& model) {
  ModelIo io;
  io.input = model.input;
  const LossLabels& labels = model_loss(model);
  io.loss_input = model.layers.back().input;
  io.labels = labels.type;
  io.cross_entropy = labels.type.dtype == DType::int32;
  io.classes = labels.classes;
  if (io.input.dtype == DType::int32) {
    const auto& first = model.layers.front().description.params;
    io.vocab = first.empty() ? io.classes : first.front().shape.front();  // an embedding's table is [V, C]
  }
  return io;
}

inline Shape batched(std::int64_t count, const Shape& shape) {
  Shape s{count};
  s.insert(s.end(), shape.begin(), shape.end());
  return s;
}

inline Shape label_shape(const ModelIo& io, std::int64_t count) { return batched(count, io.labels.shape); }

// Sample `index` of a split draws from its own stream: any rank makes any sample alone.
inline std::uint64_t sample_seed(std::uint64_t seed, Split split, std::int64_t index) {
  return mix_seed(mix_seed(seed, split == Split::train ? 0x7261696eULL : 0x76616c69ULL),
                  static_cast<std::uint64_t>(index));
}

}  // namespace libpipe::data_detail
