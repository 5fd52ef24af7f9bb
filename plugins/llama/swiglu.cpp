// SwiGLU: Llama's MLP, y = down(silu(gate(x)) * up(x)), no biases, gate and
// up in one projection (llama_layers.hpp). Written once here and reused by
// LlamaBlock under the "mlp." prefix.
#include <pipe/ops.hpp>

#include "llama_layers.hpp"

namespace pipe_llama {

MlpConfig read_mlp_config(const libpipe::Args& args) {
  MlpConfig config{args.get_positive_int("dim"), args.get_positive_int("hidden"), args.get_int("n_layer", 1)};
  if (config.n_layer < 1)
    throw libpipe::ArgError("n_layer", "argument 'n_layer' must be at least 1, not " + std::to_string(config.n_layer));
  return config;
}

void describe_mlp(const MlpConfig& config, std::int64_t tokens, const std::string& prefix,
                  libpipe::LayerDescription& description) {
  const Count t = tokens, c = config.dim, f = config.hidden;
  const Count f2 = Count(2) * f;
  description.params.push_back({prefix + "gate_up.weight", {f2.value(), c.value()}});
  description.params.push_back({prefix + "down.weight", {c.value(), f.value()}});
  (void)description.param_count();
  libpipe::add_linear_gemms(description.gemms, "mlp.gate_up", tokens, c.value(), f2.value());
  libpipe::add_linear_gemms(description.gemms, "mlp.down", tokens, f.value(), c.value());
  description.flops = (description.flops + linear_flops(t, c, f2) + Count(kSwigluFlopsPerElement) * t * f +
                       linear_flops(t, f, c))
                          .value();
  // Saved: the input (gate_up's weight gradient), [gate, up] (the gate's backward) and silu(gate) * up (down's
  // weight gradient).
  description.activation_bytes =
      (description.activation_bytes + (t * c + t * f2 + t * f) * kElementBytes).value();
}

void init_mlp(const MlpConfig& config, const std::string& prefix, libpipe::ParameterLayer& layer, libpipe::Rng& rng) {
  libpipe::fill_normal(layer.param(prefix + "gate_up.weight").value, rng, kInitStd);
  libpipe::fill_normal(layer.param(prefix + "down.weight").value, rng, residual_init_std(config.n_layer));
}

libpipe::Tensor mlp_forward(LlamaLayer& layer, const std::string& prefix, const libpipe::Tensor& x,
                            libpipe::Tensor& h, libpipe::Tensor& a) {
  const libpipe::Tensor none;
  h = libpipe::ops::linear(x, layer.param(prefix + "gate_up.weight").value, none);
  a = libpipe::ops::swiglu(h);
  return libpipe::ops::linear(a, layer.param(prefix + "down.weight").value, none);
}

libpipe::Tensor mlp_backward_input(LlamaLayer& layer, const std::string& prefix, const libpipe::Tensor& dy,
                                   const libpipe::Tensor& h, libpipe::Tensor& dh) {
  const libpipe::Tensor da = libpipe::ops::linear_backward_input(dy, layer.param(prefix + "down.weight").value);
  dh = libpipe::ops::swiglu_backward(h, da);
  return libpipe::ops::linear_backward_input(dh, layer.param(prefix + "gate_up.weight").value);
}

void mlp_backward_weight(LlamaLayer& layer, const std::string& prefix, const libpipe::Tensor& dy,
                         const libpipe::Tensor& a, const libpipe::Tensor& dh, const libpipe::Tensor& x) {
  libpipe::Tensor no_bias;
  libpipe::ops::linear_backward_weight(dy, a, layer.grad(prefix + "down.weight"), no_bias);
  libpipe::ops::linear_backward_weight(dh, x, layer.grad(prefix + "gate_up.weight"), no_bias);
}

namespace {

// ctx.saved after forward: {x, h, a}. backward_input appends dh and drops h, which only the input path needs.
class SwigluLayer : public LlamaLayer {
 public:
  SwigluLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input, libpipe::Device device)
      : LlamaLayer("SwiGLU", description, input, device) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    libpipe::Tensor h, a;
    libpipe::Tensor y = mlp_forward(*this, "", x, h, a);
    ctx.saved = {x, h, a};
    return y;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    auto& s = saved(ctx, kForwardSaved, "backward_input");
    check_output_grad(dy, s[kX].shape()[0], "backward_input");
    libpipe::Tensor dh;
    libpipe::Tensor dx = mlp_backward_input(*this, "", dy, s[kH], dh);
    s[kH] = libpipe::Tensor();
    s.push_back(dh);
    return dx;
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, kForwardSaved + 1, "backward_weight");
    check_output_grad(dy, s[kX].shape()[0], "backward_weight");
    mlp_backward_weight(*this, "", dy, s[kA], s[kDH], s[kX]);
  }

 private:
  enum Saved : std::size_t { kX, kH, kA, kForwardSaved, kDH = kForwardSaved };
};

class SwigluFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "SwiGLU(dim, hidden, n_layer=1): y = down(silu(gate(x)) * up(x)), gate and up [hidden, dim] in gate_up";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    return describe(read_mlp_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const MlpConfig config = read_mlp_config(args);
    auto layer = std::make_unique<SwigluLayer>(describe(config, input), input, context.device);
    libpipe::Rng rng(context.layer_seed());
    init_mlp(config, "", *layer, rng);
    return layer;
  }

 private:
  static libpipe::LayerDescription describe(const MlpConfig& config, const libpipe::TensorType& input) {
    // Any leading shape [..., dim], like Linear.
    if (input.dtype != libpipe::DType::float32 || input.shape.empty() || input.shape.back() != config.dim)
      throw libpipe::ShapeError("float32[*, " + std::to_string(config.dim) + "]");
    libpipe::LayerDescription d;
    d.output = input;
    describe_mlp(config, libpipe::numel(input.shape) / config.dim, "", d);
    return d;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_swiglu_factory() { return std::make_unique<SwigluFactory>(); }

}  // namespace pipe_llama
