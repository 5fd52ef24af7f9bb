// Losses: the last layer of a model, reducing one sample's output to a scalar.
// Their targets (int32 labels for cross-entropy, float32 targets for MSE) come
// with the data, not from the previous layer, so the only input is the
// prediction. Neither has parameters.
//
// Each returns the per-sample loss [B] (the mean over the sample's elements),
// so that the mean over all tokens of a batch, PyTorch's reduction, is the
// mean of these over B; backward_input takes dy [B] = d(total)/d(loss[b]).
#include <pipe/ops.hpp>

#include "core_layers.hpp"

namespace pipe_core {
namespace {

// What both losses share: the labels check and the empty backward_weight.
// ctx.saved: {x, labels}.
class LossLayer : public CoreLayer {
 public:
  using CoreLayer::CoreLayer;

  void backward_weight(libpipe::LayerContext&, const libpipe::Tensor&) override {}

 protected:
  // ctx.labels, checked against the type and shape they must have for input x.
  const libpipe::Tensor& labels(const libpipe::LayerContext& ctx, const libpipe::Tensor& x,
                                const libpipe::TensorType& expected, const char* what) const {
    if (!ctx.labels.defined())
      fail("no labels for input " + tensor_type_str(x) + ": the engine must set LayerContext::labels (" + what + " " +
           libpipe::type_str(expected) + ") before forward");
    if (ctx.labels.dtype() != expected.dtype || ctx.labels.shape() != expected.shape)
      fail("labels " + tensor_type_str(ctx.labels) + " do not fit input " + tensor_type_str(x) + ": expected " + what +
           " " + libpipe::type_str(expected));
    return ctx.labels;
  }
};

// Keeps the logits rather than the probabilities: the backward op recomputes
// the softmax, which costs one pass over the same bytes.
class SoftmaxCrossEntropyLayer : public LossLayer {
 public:
  SoftmaxCrossEntropyLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input,
                           libpipe::Device device)
      : LossLayer("SoftmaxCrossEntropy", description, input, device) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& logits) override {
    check_input(logits);
    // One class id per row of logits: the logits' shape without the last dimension.
    libpipe::Shape shape(logits.shape().begin(), logits.shape().end() - 1);
    const auto& y = labels(ctx, logits, {shape, libpipe::DType::int32}, "class ids");
    libpipe::Tensor loss = libpipe::ops::cross_entropy(logits, y);
    ctx.saved = {logits, y};
    return loss;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 2, "backward_input");
    check_output_grad(dy, s[0].shape()[0], "backward_input");
    return libpipe::ops::cross_entropy_backward(s[0], s[1], dy);
  }
};

class MSELossLayer : public LossLayer {
 public:
  MSELossLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input, libpipe::Device device)
      : LossLayer("MSELoss", description, input, device) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    const auto& target = labels(ctx, x, {x.shape(), libpipe::DType::float32}, "targets");
    libpipe::Tensor loss = libpipe::ops::mse(x, target);
    ctx.saved = {x, target};
    return loss;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 2, "backward_input");
    check_output_grad(dy, s[0].shape()[0], "backward_input");
    return libpipe::ops::mse_backward(s[0], s[1], dy);
  }
};

// A loss's output: one float32 scalar per sample.
const libpipe::TensorType kScalar{{}, libpipe::DType::float32};

class SoftmaxCrossEntropyFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "SoftmaxCrossEntropy(): loss = mean over positions of -log softmax(logits)[label], "
           "labels int32[*]";
  }

  libpipe::LayerDescription describe(const libpipe::Args&, const libpipe::TensorType& input) const override {
    // Logits over the last dimension; every leading index has one label.
    if (!is_float_with_last(input)) throw libpipe::ShapeError(float_type_with_last("V"));
    const std::int64_t n = libpipe::numel(input.shape);
    libpipe::LayerDescription d;
    d.output = kScalar;
    d.flops = kCrossEntropyFlopsPerElement * n;
    // Backward is softmax minus one-hot: the logits are kept (the bytes of the
    // probabilities; the backward op recomputes the softmax from them).
    d.activation_bytes = n * kElementBytes;
    // One class id per row of logits.
    libpipe::Shape rows = input.shape;
    rows.pop_back();
    d.loss = libpipe::LossLabels{{rows, libpipe::DType::int32}, input.shape.back()};
    return d;
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    return std::make_unique<SoftmaxCrossEntropyLayer>(describe(args, input), input, context.device);
  }
};

class MSELossFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override { return "MSELoss(): loss = mean((x - target)^2), target float32 of x's shape"; }

  libpipe::LayerDescription describe(const libpipe::Args&, const libpipe::TensorType& input) const override {
    if (input.dtype != libpipe::DType::float32) throw libpipe::ShapeError("float32[*]");
    const std::int64_t n = libpipe::numel(input.shape);
    libpipe::LayerDescription d;
    d.output = kScalar;
    d.flops = kMseFlopsPerElement * n;
    // Backward is 2 (x - target) / n: the input is kept (the targets are
    // data, owned by the engine, like cross-entropy's labels).
    d.activation_bytes = n * kElementBytes;
    d.loss = libpipe::LossLabels{input, 0};  // a target per element
    return d;
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    return std::make_unique<MSELossLayer>(describe(args, input), input, context.device);
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_softmax_cross_entropy_factory() {
  return std::make_unique<SoftmaxCrossEntropyFactory>();
}

std::unique_ptr<libpipe::LayerFactory> make_mse_loss_factory() { return std::make_unique<MSELossFactory>(); }

}  // namespace pipe_core
