// LlamaBlock: one Llama decoder layer, x + attn(norm1(x)) then
// x + mlp(norm2(x)), with RMSNorm, LlamaAttention (rotary, grouped key/value
// heads) and the SwiGLU MLP, no biases. Composed as TransformerBlock is: the
// attention and MLP parts are attention.cpp's and swiglu.cpp's functions.
#include <pipe/ops.hpp>
#include <utility>
#include <vector>

#include "llama_layers.hpp"

namespace pipe_llama {
namespace {

struct BlockConfig {
  AttentionConfig attention;
  MlpConfig mlp;
  float eps;
};

BlockConfig read_config(const libpipe::Args& args) {
  return {read_attention_config(args), read_mlp_config(args), read_eps(args)};
}

// Forward keeps every sub-layer's input and statistics. backward_input runs the whole input path and appends
// the gradients at the outputs of the weighted sub-layers; it drops qkv, the attention probabilities and the
// MLP's [gate, up], which only the input path needs. backward_weight is then only the weight-gradient GEMMs and
// the RMSNorm reductions, whenever a zero-bubble schedule runs it.
class LlamaBlockLayer : public LlamaLayer {
 public:
  LlamaBlockLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input,
                  const BlockConfig& config, libpipe::Device device)
      : LlamaLayer("LlamaBlock", description, input, device), config_(config) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    std::vector<libpipe::Tensor> s(kForwardSaved);
    s[kX] = x;
    s[kN1] = libpipe::ops::rms_norm(x, param("norm1.weight").value, config_.eps, s[kRstd1]);
    const libpipe::Tensor a = attention_forward(*this, "attn.", config_.attention, s[kN1], s[kQkv], s[kProbs], s[kAtt]);
    s[kH] = libpipe::ops::add(x, a);
    s[kN2] = libpipe::ops::rms_norm(s[kH], param("norm2.weight").value, config_.eps, s[kRstd2]);
    const libpipe::Tensor m = mlp_forward(*this, "mlp.", s[kN2], s[kGateUp], s[kGated]);
    libpipe::Tensor y = libpipe::ops::add(s[kH], m);
    ctx.saved = std::move(s);
    return y;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    auto& s = saved(ctx, kForwardSaved, "backward_input");
    check_output_grad(dy, s[kX].shape()[0], "backward_input");
    s.resize(kAllSaved);
    // MLP branch: dy is the gradient at mlp.down's output and, through the residual, part of the gradient at h.
    s[kDN2] = mlp_backward_input(*this, "mlp.", dy, s[kGateUp], s[kDGateUp]);
    s[kDH] = libpipe::ops::rms_norm_backward_input(s[kDN2], s[kH], param("norm2.weight").value, s[kRstd2]);
    libpipe::ops::accumulate(s[kDH], dy);
    // Attention branch: dh is the gradient at attn.proj's output and, through the residual, part of dx.
    s[kDN1] = attention_backward_input(*this, "attn.", config_.attention, s[kDH], s[kQkv], s[kProbs], s[kDQkv]);
    libpipe::Tensor dx = libpipe::ops::rms_norm_backward_input(s[kDN1], s[kX], param("norm1.weight").value, s[kRstd1]);
    libpipe::ops::accumulate(dx, s[kDH]);
    s[kQkv] = s[kProbs] = s[kGateUp] = libpipe::Tensor();
    return dx;
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, kAllSaved, "backward_weight");
    check_output_grad(dy, s[kX].shape()[0], "backward_weight");
    mlp_backward_weight(*this, "mlp.", dy, s[kGated], s[kDGateUp], s[kN2]);
    libpipe::ops::rms_norm_backward_weight(s[kDN2], s[kH], s[kRstd2], grad("norm2.weight"));
    attention_backward_weight(*this, "attn.", s[kDH], s[kAtt], s[kDQkv], s[kN1]);
    libpipe::ops::rms_norm_backward_weight(s[kDN1], s[kX], s[kRstd1], grad("norm1.weight"));
  }

 private:
  // ctx.saved. From forward: the input and norm1's rstd, norm1's output (attention's input), the rotated qkv and
  // the probabilities, the heads' output (proj's input), h = x + attn, norm2's rstd and output (the MLP's input),
  // the MLP's [gate, up] and silu(gate) * up (down's input). Appended by backward_input: the gradients at
  // [gate, up], at norm2's output, at h (= at attn.proj's output), at the qkv projection's output and at norm1's
  // output.
  enum Saved : std::size_t {
    kX,
    kRstd1,
    kN1,
    kQkv,
    kProbs,
    kAtt,
    kH,
    kRstd2,
    kN2,
    kGateUp,
    kGated,
    kForwardSaved,
    kDGateUp = kForwardSaved,
    kDN2,
    kDH,
    kDQkv,
    kDN1,
    kAllSaved
  };
  BlockConfig config_;
};

class LlamaBlockFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "LlamaBlock(dim, heads, hidden, kv_heads=heads, rope_theta=10000, eps=1e-5, n_layer=1): Llama decoder "
           "layer, x += attn(rmsnorm1(x)); x += swiglu(rmsnorm2(x))";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    return describe(read_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const BlockConfig config = read_config(args);
    auto layer = std::make_unique<LlamaBlockLayer>(describe(config, input), input, config, context.device);
    // One generator for the whole block, drawn in parameter order.
    libpipe::Rng rng(context.layer_seed());
    libpipe::fill_constant(layer->param("norm1.weight").value, 1.0f);
    init_attention(config.attention, "attn.", *layer, rng);
    libpipe::fill_constant(layer->param("norm2.weight").value, 1.0f);
    init_mlp(config.mlp, "mlp.", *layer, rng);
    return layer;
  }

 private:
  static libpipe::LayerDescription describe(const BlockConfig& config, const libpipe::TensorType& input) {
    const std::int64_t c = config.attention.dim;
    const Count t = sequence_length(input, c);
    libpipe::LayerDescription d;
    d.output = input;
    d.params.push_back({"norm1.weight", {c}});
    describe_attention(config.attention, t.value(), "attn.", d);
    d.params.push_back({"norm2.weight", {c}});
    describe_mlp(config.mlp, t.value(), "mlp.", d);
    // The sum of the parts: two RMSNorms and two residual adds besides attention and the MLP (added above).
    d.flops = (d.flops + Count(2 * kRmsNormFlopsPerElement) * t * c + Count(2 * kResidualFlopsPerElement) * t * c)
                  .value();
    // Saved by both RMSNorms: the input and each row's rstd. The MLP's input (norm2's output) and attention's
    // (norm1's) are counted by their parts; the residual adds keep nothing.
    d.activation_bytes = (d.activation_bytes + Count(2) * (t * c + t) * kElementBytes).value();
    return d;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_llama_block_factory() { return std::make_unique<LlamaBlockFactory>(); }

}  // namespace pipe_llama
