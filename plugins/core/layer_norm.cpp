// LayerNorm over the last dimension of a float32 input, with a learned scale
// and shift (PyTorch's nn.LayerNorm(C, eps), same parameter names). C comes
// from the input, so the model file only names the type.
#include <pipe/init.hpp>
#include <pipe/ops.hpp>
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

// ctx.saved: {x, mean, rstd} (mean and 1/std per row, [B * rows]). The input
// gradient needs the weight as well; the weight gradients only these three.
class LayerNormLayer : public CoreLayer {
 public:
  LayerNormLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input, float eps,
                 libpipe::Device device)
      : CoreLayer("LayerNorm", description, input, device), eps_(eps) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    libpipe::Tensor mean, rstd;
    libpipe::Tensor y = libpipe::ops::layernorm(x, param("weight").value, param("bias").value, eps_, mean, rstd);
    ctx.saved = {x, mean, rstd};
    return y;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 3, "backward_input");
    check_output_grad(dy, s[0].shape()[0], "backward_input");
    return libpipe::ops::layernorm_backward_input(dy, s[0], param("weight").value, s[1], s[2]);
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 3, "backward_weight");
    check_output_grad(dy, s[0].shape()[0], "backward_weight");
    libpipe::ops::layernorm_backward_weight(dy, s[0], s[1], s[2], grad("weight"), grad("bias"));
  }

 private:
  float eps_;
};

class LayerNormFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "LayerNorm(eps=1e-5): y = (x - mean) / sqrt(var + eps) * weight + bias over the "
           "last dim";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
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

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const auto eps = static_cast<float>(read_eps(args));
    auto layer = std::make_unique<LayerNormLayer>(describe(args, input), input, eps, context.device);
    libpipe::fill_constant(layer->param("weight").value, 1.0f);
    libpipe::fill_constant(layer->param("bias").value, 0.0f);
    return layer;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_layer_norm_factory() { return std::make_unique<LayerNormFactory>(); }

}  // namespace pipe_core
