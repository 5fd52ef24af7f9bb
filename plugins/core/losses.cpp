// Losses: the last layer of a model, reducing one sample's output to a scalar.
// Their targets (int32 labels for cross-entropy, float32 targets for MSE) come
// with the data, not from the previous layer, so the only input is the
// prediction. Neither has parameters.
#include "core_layers.hpp"

namespace pipe_core {
namespace {

// A loss's output: one float32 scalar per sample.
const libpipe::TensorType kScalar{{}, libpipe::DType::float32};

class SoftmaxCrossEntropyFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "SoftmaxCrossEntropy(): loss = mean over positions of -log softmax(logits)[label], "
           "labels int32[*]";
  }

  libpipe::LayerDescription describe(const libpipe::Args&,
                                     const libpipe::TensorType& input) const override {
    // Logits over the last dimension; every leading index has one label.
    if (!is_float_with_last(input)) throw libpipe::ShapeError(float_type_with_last("V"));
    const std::int64_t n = libpipe::numel(input.shape);
    libpipe::LayerDescription d;
    d.output = kScalar;
    d.flops = kCrossEntropyFlopsPerElement * n;
    // Backward is softmax minus one-hot: the probabilities are kept.
    d.activation_bytes = n * kElementBytes;
    return d;
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args,
                                         const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    return std::make_unique<libpipe::ParameterLayer>(describe(args, input), context.device);
  }
};

class MSELossFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "MSELoss(): loss = mean((x - target)^2), target float32 of x's shape";
  }

  libpipe::LayerDescription describe(const libpipe::Args&,
                                     const libpipe::TensorType& input) const override {
    if (input.dtype != libpipe::DType::float32) throw libpipe::ShapeError("float32[*]");
    const std::int64_t n = libpipe::numel(input.shape);
    libpipe::LayerDescription d;
    d.output = kScalar;
    d.flops = kMseFlopsPerElement * n;
    // Backward is 2 (x - target) / n: the difference is kept.
    d.activation_bytes = n * kElementBytes;
    return d;
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args,
                                         const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    return std::make_unique<libpipe::ParameterLayer>(describe(args, input), context.device);
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_softmax_cross_entropy_factory() {
  return std::make_unique<SoftmaxCrossEntropyFactory>();
}

std::unique_ptr<libpipe::LayerFactory> make_mse_loss_factory() {
  return std::make_unique<MSELossFactory>();
}

}  // namespace pipe_core
