// LayerNorm over the last dimension of a float32 input, with a learned scale
// and shift (PyTorch's nn.LayerNorm(C, eps), same parameter names). C comes
// from the input, so the model file only names the type.
#include <pipe/init.hpp>
#include <sstream>

#include "core_layers.hpp"

namespace pipe_core {
namespace {

double read_eps(const libpipe::Args& args) {
  const double eps = args.get_float("eps", 1e-5);
  // A zero eps divides by zero on a constant row; a negative one is a typo.
  if (!(eps > 0.0)) {
    std::ostringstream message;
    message << "argument 'eps' must be positive, not " << eps;
    throw libpipe::ArgError("eps", message.str());
  }
  return eps;
}

class LayerNormFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "LayerNorm(eps=1e-5): y = (x - mean) / sqrt(var + eps) * weight + bias over the "
           "last dim";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args,
                                     const libpipe::TensorType& input) const override {
    read_eps(args);  // validated here so that a bad eps fails at planning time
    if (!is_float_with_last(input)) throw libpipe::ShapeError(float_type_with_last("C"));
    const std::int64_t channels = input.shape.back();
    const std::int64_t n = libpipe::numel(input.shape);
    const std::int64_t rows = n / channels;

    libpipe::LayerDescription d;
    d.output = input;
    d.params.push_back({"weight", {channels}});
    d.params.push_back({"bias", {channels}});
    d.flops = kLayerNormFlopsPerElement * n;
    // Backward needs the input and each row's mean and 1/std.
    d.activation_bytes = (n + 2 * rows) * kElementBytes;
    return d;
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args,
                                         const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    auto layer = std::make_unique<libpipe::ParameterLayer>(describe(args, input), context.device);
    libpipe::fill_constant(layer->param("weight").value, 1.0f);
    libpipe::fill_constant(layer->param("bias").value, 0.0f);
    return layer;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_layer_norm_factory() {
  return std::make_unique<LayerNormFactory>();
}

}  // namespace pipe_core
