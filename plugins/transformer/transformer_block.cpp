// TransformerBlock: one GPT-2 pre-LN block, x + attn(ln1(x)) then
// x + mlp(ln2(x)) with mlp = proj(gelu(fc(.))) and a hidden width of
// mlp_ratio * dim. Its parameter names and order are nanoGPT's, so GPT-2
// checkpoints map onto it by name. The attention part is described and
// initialised by attention.cpp's functions.
#include "transformer_layers.hpp"

namespace pipe_transformer {
namespace {

struct BlockConfig {
  AttentionConfig attention;
  std::int64_t hidden;
};

BlockConfig read_config(const libpipe::Args& args) {
  BlockConfig config{read_attention_config(args), 0};
  const std::int64_t ratio = args.get_int("mlp_ratio", 4);
  if (ratio < 1)
    throw libpipe::ArgError(
        "mlp_ratio", "argument 'mlp_ratio' must be at least 1, not " + std::to_string(ratio));
  config.hidden = ratio * config.attention.dim;
  return config;
}

class TransformerBlockFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "TransformerBlock(dim, heads, mlp_ratio=4, n_layer=1): GPT-2 pre-LN block, "
           "x += attn(ln1(x)); x += mlp(ln2(x)), mlp = proj(gelu(fc(.)))";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args,
                                     const libpipe::TensorType& input) const override {
    return describe(read_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args,
                                         const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const BlockConfig config = read_config(args);
    auto layer = std::make_unique<libpipe::ParameterLayer>(describe(config, input), context.device);
    // One generator for the whole block, drawn in parameter order.
    libpipe::Rng rng(context.layer_seed());
    libpipe::fill_constant(layer->param("ln1.weight").value, 1.0f);
    libpipe::fill_constant(layer->param("ln1.bias").value, 0.0f);
    init_attention(config.attention, "attn.", *layer, rng);
    libpipe::fill_constant(layer->param("ln2.weight").value, 1.0f);
    libpipe::fill_constant(layer->param("ln2.bias").value, 0.0f);
    libpipe::fill_normal(layer->param("mlp.fc.weight").value, rng, kInitStd);
    libpipe::fill_constant(layer->param("mlp.fc.bias").value, 0.0f);
    libpipe::fill_normal(layer->param("mlp.proj.weight").value, rng,
                         residual_init_std(config.attention.n_layer));
    libpipe::fill_constant(layer->param("mlp.proj.bias").value, 0.0f);
    return layer;
  }

 private:
  static libpipe::LayerDescription describe(const BlockConfig& config,
                                            const libpipe::TensorType& input) {
    const std::int64_t c = config.attention.dim;
    const std::int64_t h = config.hidden;
    const std::int64_t t = sequence_length(input, c);

    libpipe::LayerDescription d;
    d.output = input;
    d.params.push_back({"ln1.weight", {c}});
    d.params.push_back({"ln1.bias", {c}});
    describe_attention(config.attention, t, "attn.", d);
    d.params.push_back({"ln2.weight", {c}});
    d.params.push_back({"ln2.bias", {c}});
    d.params.push_back({"mlp.fc.weight", {h, c}});
    d.params.push_back({"mlp.fc.bias", {h}});
    d.params.push_back({"mlp.proj.weight", {c, h}});
    d.params.push_back({"mlp.proj.bias", {c}});

    // The sum of the parts as the core plugin describes them: two LayerNorms,
    // attention (added above), fc, GELU, proj, and the two residual adds.
    d.flops += 2 * kLayerNormFlopsPerElement * t * c + linear_flops(t, c, h) +
               kGeluFlopsPerElement * t * h + linear_flops(t, h, c) +
               2 * kResidualFlopsPerElement * t * c;
    // Saved: both LayerNorms' inputs and row statistics, fc's input (ln2's
    // output), GELU's input and proj's input (GELU's output). The residual
    // adds keep nothing.
    d.activation_bytes +=
        2 * layer_norm_activation_bytes(t, c) + (t * c + t * h + t * h) * kElementBytes;
    return d;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_transformer_block_factory() {
  return std::make_unique<TransformerBlockFactory>();
}

}  // namespace pipe_transformer
