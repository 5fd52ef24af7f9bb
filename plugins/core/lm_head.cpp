// LMHead: the language-model output projection, logits = x W^T with no bias
// (GPT-2's lm_head). W has the token table's shape [vocab, dim] and is tieable,
// so under a shared `tie` key it is the embedding's wte.
#include <pipe/init.hpp>
#include <pipe/ops.hpp>

#include "core_layers.hpp"

namespace pipe_core {
namespace {

struct LMHeadConfig {
  std::int64_t vocab;
  std::int64_t dim;
};

LMHeadConfig read_config(const libpipe::Args& args) {
  return {args.get_positive_int("vocab"), args.get_positive_int("dim")};
}

// ctx.saved: {x}. Linear without a bias; under a tie the weight gradient is
// this layer's share, summed with the embedding's by the engine.
class LMHeadLayer : public CoreLayer {
 public:
  LMHeadLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input, libpipe::Device device)
      : CoreLayer("LMHead", description, input, device) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    ctx.saved = {x};
    return libpipe::ops::linear(x, param("weight").value, libpipe::Tensor());
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
    libpipe::ops::linear_backward_weight(dy, s[0], grad("weight"), no_bias);
  }
};

class LMHeadFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "LMHead(vocab, dim): logits = x W^T, W [vocab, dim] tieable with Embedding's wte";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    return describe(read_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    auto layer = std::make_unique<LMHeadLayer>(describe(read_config(args), input), input, context.device);
    libpipe::Rng rng(context.layer_seed());
    libpipe::fill_normal(layer->param("weight").value, rng, kInitStd);
    return layer;
  }

 private:
  static libpipe::LayerDescription describe(const LMHeadConfig& config, const libpipe::TensorType& input) {
    const bool fits = input.dtype == libpipe::DType::float32 && input.shape.size() == 2 && input.shape[1] == config.dim;
    if (!fits) throw libpipe::ShapeError("float32[T, " + std::to_string(config.dim) + "]");
    const std::int64_t tokens = input.shape[0];

    libpipe::LayerDescription d;
    d.output = {{tokens, config.vocab}, libpipe::DType::float32};
    d.params.push_back({"weight", {config.vocab, config.dim}, /*tieable=*/true});
    (void)d.param_count();  // an absurd weight shape is named before the FLOPs overflow
    d.flops = linear_flops(tokens, config.dim, config.vocab);
    libpipe::add_linear_gemms(d.gemms, "lm_head", tokens, config.dim, config.vocab);
    // As for Linear: the weight gradient needs the input.
    d.activation_bytes = (libpipe::Count(tokens) * config.dim * kElementBytes).value();
    return d;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_lm_head_factory() { return std::make_unique<LMHeadFactory>(); }

}  // namespace pipe_core
