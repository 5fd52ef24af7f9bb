// Elementwise activations without parameters: ReLU and GELU (the tanh
// approximation GPT-2 was trained with). Both take float32 of any shape and
// keep it; they differ only in their function, cost and summary, so one
// factory and one layer class serve both.
#include <pipe/ops.hpp>
#include <utility>

#include "core_layers.hpp"

namespace pipe_core {
namespace {

enum class Activation { relu, gelu };

// ctx.saved: {x}. No parameters, so backward_weight has nothing to do.
class ActivationLayer : public CoreLayer {
 public:
  ActivationLayer(Activation kind, const libpipe::LayerDescription& description, const libpipe::TensorType& input,
                  libpipe::Device device)
      : CoreLayer(kind == Activation::relu ? "ReLU" : "GELU", description, input, device), kind_(kind) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    ctx.saved = {x};
    return kind_ == Activation::relu ? libpipe::ops::relu(x) : libpipe::ops::gelu(x);
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 1, "backward_input");
    check_output_grad(dy, s[0].shape()[0], "backward_input");
    return kind_ == Activation::relu ? libpipe::ops::relu_backward(s[0], dy) : libpipe::ops::gelu_backward(s[0], dy);
  }

  void backward_weight(libpipe::LayerContext&, const libpipe::Tensor&) override {}

 private:
  Activation kind_;
};

class ActivationFactory : public libpipe::LayerFactory {
 public:
  ActivationFactory(Activation kind, std::string summary, std::int64_t flops_per_element)
      : kind_(kind), summary_(std::move(summary)), flops_per_element_(flops_per_element) {}

  std::string summary() const override { return summary_; }

  libpipe::LayerDescription describe(const libpipe::Args&, const libpipe::TensorType& input) const override {
    if (input.dtype != libpipe::DType::float32) throw libpipe::ShapeError("float32[*]");
    const std::int64_t n = libpipe::numel(input.shape);
    libpipe::LayerDescription d;
    d.output = input;
    d.flops = flops_per_element_ * n;
    // Backward needs the pre-activation input (GELU's derivative depends on
    // it; for ReLU its sign is the mask). Kept as float32 for simplicity.
    d.activation_bytes = n * kElementBytes;
    return d;
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    return std::make_unique<ActivationLayer>(kind_, describe(args, input), input, context.device);
  }

 private:
  Activation kind_;
  std::string summary_;
  std::int64_t flops_per_element_;
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_relu_factory() {
  return std::make_unique<ActivationFactory>(Activation::relu, "ReLU(): y = max(x, 0)", kReluFlopsPerElement);
}

std::unique_ptr<libpipe::LayerFactory> make_gelu_factory() {
  return std::make_unique<ActivationFactory>(
      Activation::gelu, "GELU(): y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))", kGeluFlopsPerElement);
}

}  // namespace pipe_core
