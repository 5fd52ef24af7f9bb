// Linear: y = x W^T + b over the last dimension, any leading dimensions
// (PyTorch's nn.Linear, same parameter layout so checkpoints map one to one).
#include <pipe/init.hpp>
#include <pipe/ops.hpp>

#include "core_layers.hpp"

namespace pipe_core {
namespace {

struct LinearConfig {
  std::int64_t in_features;
  std::int64_t out_features;
  bool bias;
};

LinearConfig read_config(const libpipe::Args& args) {
  return {args.get_positive_int("in_features"), args.get_positive_int("out_features"), args.get_bool("bias", true)};
}

// ctx.saved: {x}. The input gradient needs only W; the weight gradient needs x.
class LinearLayer : public CoreLayer {
 public:
  LinearLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input, bool bias,
              libpipe::Device device)
      : CoreLayer("Linear", description, input, device), bias_(bias) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    ctx.saved = {x};
    return libpipe::ops::linear(x, param("weight").value, bias_ ? param("bias").value : libpipe::Tensor());
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 1, "backward_input");
    check_output_grad(dy, s[0].shape()[0], "backward_input");
    return libpipe::ops::linear_backward_input(dy, param("weight").value);
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 1, "backward_weight");
    check_output_grad(dy, s[0].shape()[0], "backward_weight");
    libpipe::Tensor no_bias;
    libpipe::ops::linear_backward_weight(dy, s[0], grad("weight"), bias_ ? grad("bias") : no_bias);
  }

 private:
  bool bias_;
};

class LinearFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override { return "Linear(in_features, out_features, bias=true): y = x W^T + b"; }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    return describe(read_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const LinearConfig config = read_config(args);
    auto layer = std::make_unique<LinearLayer>(describe(config, input), input, config.bias, context.device);
    libpipe::Rng rng(context.layer_seed());
    libpipe::fill_normal(layer->param("weight").value, rng, kInitStd);
    if (config.bias) libpipe::fill_constant(layer->param("bias").value, 0.0f);
    return layer;
  }

 private:
  static libpipe::LayerDescription describe(const LinearConfig& config, const libpipe::TensorType& input) {
    if (!is_float_with_last(input, config.in_features))
      throw libpipe::ShapeError(float_type_with_last(std::to_string(config.in_features)));
    const std::int64_t rows = libpipe::numel(input.shape) / config.in_features;

    libpipe::LayerDescription d;
    d.output = input;
    d.output.shape.back() = config.out_features;
    d.params.push_back({"weight", {config.out_features, config.in_features}});
    if (config.bias) d.params.push_back({"bias", {config.out_features}});
    (void)d.param_count();  // an absurd weight shape is named before the FLOPs overflow
    d.flops = linear_flops(rows, config.in_features, config.out_features);
    libpipe::add_linear_gemms(d.gemms,
                              "linear " + std::to_string(config.in_features) + "->" + std::to_string(config.out_features),
                              rows, config.in_features, config.out_features);
    // The weight gradient needs the input; the input gradient needs only W.
    d.activation_bytes = libpipe::numel(input.shape) * kElementBytes;
    return d;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_linear_factory() { return std::make_unique<LinearFactory>(); }

}  // namespace pipe_core
