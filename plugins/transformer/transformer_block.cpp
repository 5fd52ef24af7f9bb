// TransformerBlock: one GPT-2 pre-LN block, x + attn(ln1(x)) then
// x + mlp(ln2(x)) with mlp = proj(gelu(fc(.))) and a hidden width of
// mlp_ratio * dim. Its parameter names and order are nanoGPT's, so GPT-2
// checkpoints map onto it by name. The attention part is described,
// initialised and computed by attention.cpp's functions.
#include <pipe/ops.hpp>
#include <utility>
#include <vector>

#include "transformer_layers.hpp"

namespace pipe_transformer {
namespace {

// GPT-2's LayerNorm epsilon (nn.LayerNorm's default); the block takes no eps argument.
constexpr float kLayerNormEps = 1e-5f;

struct BlockConfig {
  AttentionConfig attention;
  std::int64_t hidden;
};

BlockConfig read_config(const libpipe::Args& args) {
  BlockConfig config{read_attention_config(args), 0};
  const std::int64_t ratio = args.get_int("mlp_ratio", 4);
  if (ratio < 1)
    throw libpipe::ArgError("mlp_ratio", "argument 'mlp_ratio' must be at least 1, not " + std::to_string(ratio));
  config.hidden = (Count(ratio) * config.attention.dim).value();
  return config;
}

// Forward keeps every sub-layer's input and statistics. backward_input runs the
// whole input path, from dy back through mlp, ln2, attention and ln1, and
// appends the gradients at the outputs of the weighted sub-layers; it drops
// qkv, the attention probabilities and fc's pre-activation, which only the
// input path needs. backward_weight is then only the weight-gradient GEMMs and
// the LayerNorm reductions, whenever a zero-bubble schedule runs it.
class TransformerBlockLayer : public TransformerLayer {
 public:
  TransformerBlockLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input,
                        std::int64_t heads, libpipe::Device device)
      : TransformerLayer("TransformerBlock", description, input, device), heads_(heads) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    std::vector<libpipe::Tensor> s(kForwardSaved);
    s[kX] = x;
    s[kLn1] = libpipe::ops::layernorm(x, param("ln1.weight").value, param("ln1.bias").value, kLayerNormEps, s[kMean1],
                                      s[kRstd1]);
    const libpipe::Tensor a = attention_forward(*this, "attn.", heads_, s[kLn1], s[kQkv], s[kProbs], s[kAtt]);
    s[kH] = libpipe::ops::add(x, a);
    s[kLn2] = libpipe::ops::layernorm(s[kH], param("ln2.weight").value, param("ln2.bias").value, kLayerNormEps,
                                      s[kMean2], s[kRstd2]);
    s[kGelu] = libpipe::ops::linear_gelu(s[kLn2], param("mlp.fc.weight").value, param("mlp.fc.bias").value, s[kFcPre]);
    const libpipe::Tensor m =
        libpipe::ops::linear(s[kGelu], param("mlp.proj.weight").value, param("mlp.proj.bias").value);
    libpipe::Tensor y = libpipe::ops::add(s[kH], m);
    ctx.saved = std::move(s);
    return y;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    auto& s = saved(ctx, kForwardSaved, "backward_input");
    check_output_grad(dy, s[kX].shape()[0], "backward_input");
    s.resize(kAllSaved);
    // MLP branch: dy is the gradient at mlp.proj's output and, through the
    // residual, part of the gradient at h.
    const libpipe::Tensor dgelu = libpipe::ops::linear_backward_input(dy, param("mlp.proj.weight").value);
    s[kDFcPre] = libpipe::ops::gelu_backward(s[kFcPre], dgelu);
    s[kDLn2] = libpipe::ops::linear_backward_input(s[kDFcPre], param("mlp.fc.weight").value);
    s[kDH] = libpipe::ops::layernorm_backward_input(s[kDLn2], s[kH], param("ln2.weight").value, s[kMean2], s[kRstd2]);
    libpipe::ops::accumulate(s[kDH], dy);
    // Attention branch: dh is the gradient at attn.proj's output and, through
    // the residual, part of dx.
    s[kDLn1] = attention_backward_input(*this, "attn.", heads_, s[kDH], s[kQkv], s[kProbs], s[kDQkv]);
    libpipe::Tensor dx =
        libpipe::ops::layernorm_backward_input(s[kDLn1], s[kX], param("ln1.weight").value, s[kMean1], s[kRstd1]);
    libpipe::ops::accumulate(dx, s[kDH]);
    s[kQkv] = s[kProbs] = s[kFcPre] = libpipe::Tensor();
    return dx;
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, kAllSaved, "backward_weight");
    check_output_grad(dy, s[kX].shape()[0], "backward_weight");
    libpipe::ops::linear_backward_weight(dy, s[kGelu], grad("mlp.proj.weight"), grad("mlp.proj.bias"));
    libpipe::ops::linear_backward_weight(s[kDFcPre], s[kLn2], grad("mlp.fc.weight"), grad("mlp.fc.bias"));
    libpipe::ops::layernorm_backward_weight(s[kDLn2], s[kH], s[kMean2], s[kRstd2], grad("ln2.weight"),
                                            grad("ln2.bias"));
    attention_backward_weight(*this, "attn.", s[kDH], s[kAtt], s[kDQkv], s[kLn1]);
    libpipe::ops::layernorm_backward_weight(s[kDLn1], s[kX], s[kMean1], s[kRstd1], grad("ln1.weight"),
                                            grad("ln1.bias"));
  }

 private:
  // ctx.saved. From forward: the input and ln1's statistics, ln1's output
  // (attention's input), qkv and the probabilities, the heads' output (proj's
  // input), h = x + attn, ln2's statistics and output (fc's input), fc's
  // pre-activation and GELU's output (mlp.proj's input). Appended by
  // backward_input: the gradients at fc's pre-activation, at ln2's output, at
  // h (= at attn.proj's output), at qkv and at ln1's output.
  enum Saved : std::size_t {
    kX,
    kMean1,
    kRstd1,
    kLn1,
    kQkv,
    kProbs,
    kAtt,
    kH,
    kMean2,
    kRstd2,
    kLn2,
    kFcPre,
    kGelu,
    kForwardSaved,
    kDFcPre = kForwardSaved,
    kDLn2,
    kDH,
    kDQkv,
    kDLn1,
    kAllSaved
  };
  std::int64_t heads_;
};

class TransformerBlockFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "TransformerBlock(dim, heads, mlp_ratio=4, n_layer=1): GPT-2 pre-LN block, "
           "x += attn(ln1(x)); x += mlp(ln2(x)), mlp = proj(gelu(fc(.)))";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    return describe(read_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const BlockConfig config = read_config(args);
    auto layer =
        std::make_unique<TransformerBlockLayer>(describe(config, input), input, config.attention.heads, context.device);
    // One generator for the whole block, drawn in parameter order.
    libpipe::Rng rng(context.layer_seed());
    libpipe::fill_constant(layer->param("ln1.weight").value, 1.0f);
    libpipe::fill_constant(layer->param("ln1.bias").value, 0.0f);
    init_attention(config.attention, "attn.", *layer, rng);
    libpipe::fill_constant(layer->param("ln2.weight").value, 1.0f);
    libpipe::fill_constant(layer->param("ln2.bias").value, 0.0f);
    libpipe::fill_normal(layer->param("mlp.fc.weight").value, rng, kInitStd);
    libpipe::fill_constant(layer->param("mlp.fc.bias").value, 0.0f);
    libpipe::fill_normal(layer->param("mlp.proj.weight").value, rng, residual_init_std(config.attention.n_layer));
    libpipe::fill_constant(layer->param("mlp.proj.bias").value, 0.0f);
    return layer;
  }

 private:
  static libpipe::LayerDescription describe(const BlockConfig& config, const libpipe::TensorType& input) {
    const std::int64_t c = config.attention.dim;
    const std::int64_t h = config.hidden;
    const Count t = sequence_length(input, c);

    libpipe::LayerDescription d;
    d.output = input;
    d.params.push_back({"ln1.weight", {c}});
    d.params.push_back({"ln1.bias", {c}});
    describe_attention(config.attention, t.value(), "attn.", d);
    d.params.push_back({"ln2.weight", {c}});
    d.params.push_back({"ln2.bias", {c}});
    d.params.push_back({"mlp.fc.weight", {h, c}});
    d.params.push_back({"mlp.fc.bias", {h}});
    d.params.push_back({"mlp.proj.weight", {c, h}});
    d.params.push_back({"mlp.proj.bias", {c}});
    libpipe::add_linear_gemms(d.gemms, "mlp.fc", t.value(), c, h);
    libpipe::add_linear_gemms(d.gemms, "mlp.proj", t.value(), h, c);

    // The sum of the parts as the core plugin describes them: two LayerNorms,
    // attention (added above), fc, GELU, proj, and the two residual adds.
    d.flops = (d.flops + Count(2 * kLayerNormFlopsPerElement) * t * c + linear_flops(t, c, h) +
               Count(kGeluFlopsPerElement) * t * h + linear_flops(t, h, c) + Count(2 * kResidualFlopsPerElement) * t * c)
                  .value();
    // Saved: both LayerNorms' inputs and row statistics, fc's input (ln2's
    // output), GELU's input and proj's input (GELU's output). The residual
    // adds keep nothing.
    d.activation_bytes = (d.activation_bytes + Count(2) * layer_norm_activation_bytes(t, c) +
                          (t * c + t * h + t * h) * kElementBytes)
                             .value();
    return d;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_transformer_block_factory() {
  return std::make_unique<TransformerBlockFactory>();
}

}  // namespace pipe_transformer
