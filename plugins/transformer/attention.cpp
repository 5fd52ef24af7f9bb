// CausalSelfAttention: GPT-2's multi-head attention with a causal mask, one
// fused qkv projection and an output projection (PyTorch layout, nanoGPT's
// parameter names). The description, initialisation and math are written
// once here and reused by TransformerBlock under the "attn." prefix.
#include <pipe/ops.hpp>

#include "transformer_layers.hpp"

namespace pipe_transformer {

AttentionConfig read_attention_config(const libpipe::Args& args) {
  AttentionConfig config{args.get_positive_int("dim"), args.get_positive_int("heads"), args.get_int("n_layer", 1)};
  if (config.dim % config.heads != 0)
    throw libpipe::ArgError("heads", "heads = " + std::to_string(config.heads) + " does not divide dim = " +
                                         std::to_string(config.dim) + ": every head needs dim / heads channels");
  if (config.n_layer < 1)
    throw libpipe::ArgError("n_layer", "argument 'n_layer' must be at least 1, not " + std::to_string(config.n_layer));
  return config;
}

std::int64_t sequence_length(const libpipe::TensorType& input, std::int64_t dim) {
  const bool fits = input.dtype == libpipe::DType::float32 && input.shape.size() == 2 && input.shape[1] == dim;
  if (!fits) throw libpipe::ShapeError("float32[T, " + std::to_string(dim) + "]");
  return input.shape[0];
}

void describe_attention(const AttentionConfig& config, std::int64_t tokens, const std::string& prefix,
                        libpipe::LayerDescription& description) {
  const Count t = tokens;
  const Count c = config.dim;
  const Count heads = config.heads;
  auto& params = description.params;
  const std::int64_t c3 = (Count(3) * c).value();
  params.push_back({prefix + "qkv.weight", {c3, c.value()}});
  params.push_back({prefix + "qkv.bias", {c3}});
  params.push_back({prefix + "proj.weight", {c.value(), c.value()}});
  params.push_back({prefix + "proj.bias", {c.value()}});
  (void)description.param_count();  // an absurd weight shape is named before the FLOPs overflow
  libpipe::add_linear_gemms(description.gemms, "attn.qkv", tokens, c.value(), c3);
  libpipe::add_attention_gemms(description.gemms, "attn.core", heads.value(), tokens, c.value() / heads.value());
  libpipe::add_linear_gemms(description.gemms, "attn.proj", tokens, c.value(), c.value());

  // The two projections, then q k^T and p v: each T * T * dim multiply-adds
  // summed over the heads (2 FLOPs each, backward twice forward). The causal
  // mask would halve these in a kernel that skips the masked half; like
  // Megatron's estimate we count them whole. Softmax per score on top.
  description.flops = (description.flops + linear_flops(t, c, Count(3) * c) + linear_flops(t, c, c) +
                       Count(3) * (Count(2 * 2) * t * t * c) + Count(kSoftmaxFlopsPerElement) * heads * t * t)
                          .value();
  // Saved for backward: the input (qkv weight gradient), q, k and v, the
  // T x T probabilities of every head, and the heads' output before proj
  // (proj weight gradient). Where the device runs flash attention instead,
  // libpipe::account_attention swaps the probabilities for its state.
  description.activation_bytes =
      (description.activation_bytes + (t * c + Count(3) * t * c + heads * t * t + t * c) * kElementBytes).value();
  description.attention_heads = heads.value();
  description.attention_seq = t.value();
  description.attention_head_dim = c.value() / heads.value();
}

void init_attention(const AttentionConfig& config, const std::string& prefix, libpipe::ParameterLayer& layer,
                    libpipe::Rng& rng) {
  libpipe::fill_normal(layer.param(prefix + "qkv.weight").value, rng, kInitStd);
  libpipe::fill_constant(layer.param(prefix + "qkv.bias").value, 0.0f);
  libpipe::fill_normal(layer.param(prefix + "proj.weight").value, rng, residual_init_std(config.n_layer));
  libpipe::fill_constant(layer.param(prefix + "proj.bias").value, 0.0f);
}

libpipe::Tensor attention_forward(TransformerLayer& layer, const std::string& prefix, std::int64_t heads,
                                  const libpipe::Tensor& x, libpipe::Tensor& qkv, libpipe::Tensor& probs,
                                  libpipe::Tensor& out) {
  qkv = libpipe::ops::linear(x, layer.param(prefix + "qkv.weight").value, layer.param(prefix + "qkv.bias").value);
  out = libpipe::ops::attention(qkv, heads, probs);
  return libpipe::ops::linear(out, layer.param(prefix + "proj.weight").value, layer.param(prefix + "proj.bias").value);
}

libpipe::Tensor attention_backward_input(TransformerLayer& layer, const std::string& prefix, std::int64_t heads,
                                         const libpipe::Tensor& dy, const libpipe::Tensor& qkv,
                                         const libpipe::Tensor& probs, libpipe::Tensor& dqkv) {
  const libpipe::Tensor dout = libpipe::ops::linear_backward_input(dy, layer.param(prefix + "proj.weight").value);
  dqkv = libpipe::ops::attention_backward(dout, qkv, probs, heads);
  return libpipe::ops::linear_backward_input(dqkv, layer.param(prefix + "qkv.weight").value);
}

void attention_backward_weight(TransformerLayer& layer, const std::string& prefix, const libpipe::Tensor& dy,
                               const libpipe::Tensor& out, const libpipe::Tensor& dqkv, const libpipe::Tensor& x) {
  libpipe::ops::linear_backward_weight(dy, out, layer.grad(prefix + "proj.weight"), layer.grad(prefix + "proj.bias"));
  libpipe::ops::linear_backward_weight(dqkv, x, layer.grad(prefix + "qkv.weight"), layer.grad(prefix + "qkv.bias"));
}

namespace {

// ctx.saved after forward: {x, qkv, probs, out}. backward_input appends dqkv
// and drops qkv and probs (the T x T probabilities are the largest tensor
// here, and only the input path needs them), so that a context waiting for a
// late backward_weight holds just x, out and dqkv.
class CausalSelfAttentionLayer : public TransformerLayer {
 public:
  CausalSelfAttentionLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input,
                           std::int64_t heads, libpipe::Device device)
      : TransformerLayer("CausalSelfAttention", description, input, device), heads_(heads) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    libpipe::Tensor qkv, probs, out;
    libpipe::Tensor y = attention_forward(*this, "", heads_, x, qkv, probs, out);
    ctx.saved = {x, qkv, probs, out};
    return y;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    auto& s = saved(ctx, kForwardSaved, "backward_input");
    check_output_grad(dy, s[kX].shape()[0], "backward_input");
    libpipe::Tensor dqkv;
    libpipe::Tensor dx = attention_backward_input(*this, "", heads_, dy, s[kQkv], s[kProbs], dqkv);
    s[kQkv] = libpipe::Tensor();
    s[kProbs] = libpipe::Tensor();
    s.push_back(dqkv);
    return dx;
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, kForwardSaved + 1, "backward_weight");
    check_output_grad(dy, s[kX].shape()[0], "backward_weight");
    attention_backward_weight(*this, "", dy, s[kOut], s[kDqkv], s[kX]);
  }

 private:
  enum Saved : std::size_t { kX, kQkv, kProbs, kOut, kForwardSaved, kDqkv = kForwardSaved };
  std::int64_t heads_;
};

class CausalSelfAttentionFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "CausalSelfAttention(dim, heads, n_layer=1): y = proj(softmax(causal(q k^T / "
           "sqrt(dim/heads))) v), q, k, v = qkv(x)";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    return describe(read_attention_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const AttentionConfig config = read_attention_config(args);
    auto layer =
        std::make_unique<CausalSelfAttentionLayer>(describe(config, input), input, config.heads, context.device);
    libpipe::Rng rng(context.layer_seed());
    init_attention(config, "", *layer, rng);
    return layer;
  }

 private:
  static libpipe::LayerDescription describe(const AttentionConfig& config, const libpipe::TensorType& input) {
    libpipe::LayerDescription d;
    d.output = input;
    describe_attention(config, sequence_length(input, config.dim), "", d);
    return d;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_causal_self_attention_factory() {
  return std::make_unique<CausalSelfAttentionFactory>();
}

}  // namespace pipe_transformer
