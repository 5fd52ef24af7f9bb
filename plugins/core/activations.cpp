// Elementwise activations without parameters: ReLU and GELU (the tanh
// approximation GPT-2 was trained with). Both take float32 of any shape and
// keep it; they differ only in their cost and summary, so one factory class
// serves both.
#include <utility>

#include "core_layers.hpp"

namespace pipe_core {
namespace {

class ActivationFactory : public libpipe::LayerFactory {
 public:
  ActivationFactory(std::string summary, std::int64_t flops_per_element)
      : summary_(std::move(summary)), flops_per_element_(flops_per_element) {}

  std::string summary() const override { return summary_; }

  libpipe::LayerDescription describe(const libpipe::Args&,
                                     const libpipe::TensorType& input) const override {
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

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args,
                                         const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    return std::make_unique<libpipe::ParameterLayer>(describe(args, input), context.device);
  }

 private:
  std::string summary_;
  std::int64_t flops_per_element_;
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_relu_factory() {
  return std::make_unique<ActivationFactory>("ReLU(): y = max(x, 0)", kReluFlopsPerElement);
}

std::unique_ptr<libpipe::LayerFactory> make_gelu_factory() {
  return std::make_unique<ActivationFactory>(
      "GELU(): y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))", kGeluFlopsPerElement);
}

}  // namespace pipe_core
