// LlamaAttention: causal self-attention with rotary position embeddings and
// grouped key/value heads, no biases (Hugging Face's LlamaAttention; the
// layout is llama_layers.hpp's). The description, initialisation and math are
// written once here and reused by LlamaBlock under the "attn." prefix.
#include <pipe/ops.hpp>

#include "llama_layers.hpp"

namespace pipe_llama {

std::int64_t sequence_length(const libpipe::TensorType& input, std::int64_t dim) {
  const bool fits = input.dtype == libpipe::DType::float32 && input.shape.size() == 2 && input.shape[1] == dim;
  if (!fits) throw libpipe::ShapeError("float32[T, " + std::to_string(dim) + "]");
  return input.shape[0];
}

AttentionConfig read_attention_config(const libpipe::Args& args) {
  AttentionConfig config{};
  config.dim = args.get_positive_int("dim");
  config.heads = args.get_positive_int("heads");
  config.kv_heads = args.has("kv_heads") ? args.get_positive_int("kv_heads") : config.heads;
  config.n_layer = args.get_int("n_layer", 1);
  const double theta = args.get_float("rope_theta", 10000.0);
  if (config.dim % config.heads != 0)
    throw libpipe::ArgError("heads", "heads = " + std::to_string(config.heads) + " does not divide dim = " +
                                         std::to_string(config.dim) + ": every head needs dim / heads channels");
  if (config.heads % config.kv_heads != 0)
    throw libpipe::ArgError("kv_heads", "kv_heads = " + std::to_string(config.kv_heads) + " does not divide heads = " +
                                            std::to_string(config.heads) +
                                            ": each key/value head serves the same number of query heads");
  config.head_dim = config.dim / config.heads;
  if (config.head_dim % 2 != 0)
    throw libpipe::ArgError("heads", "the head dimension dim / heads = " + std::to_string(config.head_dim) +
                                         " is odd: rotary embeddings rotate pairs of channels");
  if (!(theta > 0.0) || !std::isfinite(theta))
    throw libpipe::ArgError("rope_theta", "argument 'rope_theta' must be positive, not " + std::to_string(theta));
  config.rope_theta = static_cast<float>(theta);
  if (config.n_layer < 1)
    throw libpipe::ArgError("n_layer", "argument 'n_layer' must be at least 1, not " + std::to_string(config.n_layer));
  return config;
}

void describe_attention(const AttentionConfig& config, std::int64_t tokens, const std::string& prefix,
                        libpipe::LayerDescription& description) {
  const Count t = tokens;
  const Count c = config.dim;
  const Count heads = config.heads;
  const Count d = config.head_dim;
  const Count rows = Count(config.heads + 2 * config.kv_heads) * d;  // q, k and v of the projection
  const Count inner = heads * d;                                    // the heads' output, proj's input
  auto& params = description.params;
  params.push_back({prefix + "qkv.weight", {rows.value(), c.value()}});
  params.push_back({prefix + "proj.weight", {c.value(), inner.value()}});
  (void)description.param_count();  // an absurd weight shape is named before the FLOPs overflow
  libpipe::add_linear_gemms(description.gemms, "attn.qkv", tokens, c.value(), rows.value());
  libpipe::add_attention_gemms(description.gemms, "attn.core", heads.value(), tokens, d.value());
  libpipe::add_linear_gemms(description.gemms, "attn.proj", tokens, inner.value(), c.value());

  // The two projections, rotary on q and k, then q k^T and p v over all H query heads (each T * T * D
  // multiply-adds per head, 2 FLOPs each, backward twice forward; the causal half counted whole, as the
  // transformer plugin does), softmax per score on top.
  const Count rotated = t * (heads + Count(config.kv_heads)) * d;
  description.flops = (description.flops + linear_flops(t, c, rows) + linear_flops(t, inner, c) +
                       Count(kRotaryFlopsPerElement) * rotated + Count(3) * (Count(2 * 2) * t * t * inner) +
                       Count(kSoftmaxFlopsPerElement) * heads * t * t)
                          .value();
  // Saved for backward: the input (qkv weight gradient), the rotated and repeated q, k, v (3 H D per token),
  // every head's T x T probabilities (flash attention's state instead where the device runs that:
  // libpipe::account_attention), and the heads' output (proj weight gradient).
  description.activation_bytes =
      (description.activation_bytes + (t * c + Count(3) * t * inner + heads * t * t + t * inner) * kElementBytes)
          .value();
  description.attention_heads = heads.value();
  description.attention_seq = t.value();
  description.attention_head_dim = d.value();
}

void init_attention(const AttentionConfig& config, const std::string& prefix, libpipe::ParameterLayer& layer,
                    libpipe::Rng& rng) {
  libpipe::fill_normal(layer.param(prefix + "qkv.weight").value, rng, kInitStd);
  libpipe::fill_normal(layer.param(prefix + "proj.weight").value, rng, residual_init_std(config.n_layer));
}

libpipe::Tensor attention_forward(LlamaLayer& layer, const std::string& prefix, const AttentionConfig& config,
                                  const libpipe::Tensor& x, libpipe::Tensor& qkv, libpipe::Tensor& probs,
                                  libpipe::Tensor& out) {
  const libpipe::Tensor none;
  const libpipe::Tensor projected = libpipe::ops::linear(x, layer.param(prefix + "qkv.weight").value, none);
  qkv = libpipe::ops::rotary_gqa(projected, config.heads, config.kv_heads, config.rope_theta);
  out = libpipe::ops::attention(qkv, config.heads, probs);
  return libpipe::ops::linear(out, layer.param(prefix + "proj.weight").value, none);
}

libpipe::Tensor attention_backward_input(LlamaLayer& layer, const std::string& prefix, const AttentionConfig& config,
                                         const libpipe::Tensor& dy, const libpipe::Tensor& qkv,
                                         const libpipe::Tensor& probs, libpipe::Tensor& dproj_in) {
  const libpipe::Tensor dout = libpipe::ops::linear_backward_input(dy, layer.param(prefix + "proj.weight").value);
  const libpipe::Tensor dqkv = libpipe::ops::attention_backward(dout, qkv, probs, config.heads);
  dproj_in = libpipe::ops::rotary_gqa_backward(dqkv, config.heads, config.kv_heads, config.rope_theta);
  return libpipe::ops::linear_backward_input(dproj_in, layer.param(prefix + "qkv.weight").value);
}

void attention_backward_weight(LlamaLayer& layer, const std::string& prefix, const libpipe::Tensor& dy,
                               const libpipe::Tensor& out, const libpipe::Tensor& dproj_in, const libpipe::Tensor& x) {
  libpipe::Tensor no_bias;
  libpipe::ops::linear_backward_weight(dy, out, layer.grad(prefix + "proj.weight"), no_bias);
  libpipe::ops::linear_backward_weight(dproj_in, x, layer.grad(prefix + "qkv.weight"), no_bias);
}

namespace {

// ctx.saved after forward: {x, qkv, probs, out}. backward_input appends the gradient at the projection's output
// and drops qkv and probs, which only the input path needs.
class LlamaAttentionLayer : public LlamaLayer {
 public:
  LlamaAttentionLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input,
                      const AttentionConfig& config, libpipe::Device device)
      : LlamaLayer("LlamaAttention", description, input, device), config_(config) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& x) override {
    check_input(x);
    libpipe::Tensor qkv, probs, out;
    libpipe::Tensor y = attention_forward(*this, "", config_, x, qkv, probs, out);
    ctx.saved = {x, qkv, probs, out};
    return y;
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    auto& s = saved(ctx, kForwardSaved, "backward_input");
    check_output_grad(dy, s[kX].shape()[0], "backward_input");
    libpipe::Tensor dproj_in;
    libpipe::Tensor dx = attention_backward_input(*this, "", config_, dy, s[kQkv], s[kProbs], dproj_in);
    s[kQkv] = libpipe::Tensor();
    s[kProbs] = libpipe::Tensor();
    s.push_back(dproj_in);
    return dx;
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, kForwardSaved + 1, "backward_weight");
    check_output_grad(dy, s[kX].shape()[0], "backward_weight");
    attention_backward_weight(*this, "", dy, s[kOut], s[kDProjIn], s[kX]);
  }

 private:
  enum Saved : std::size_t { kX, kQkv, kProbs, kOut, kForwardSaved, kDProjIn = kForwardSaved };
  AttentionConfig config_;
};

class LlamaAttentionFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "LlamaAttention(dim, heads, kv_heads=heads, rope_theta=10000, n_layer=1): y = proj(softmax(causal("
           "rope(q) rope(k)^T / sqrt(dim/heads))) v), q, k, v = qkv(x), k and v shared by heads/kv_heads heads";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    return describe(read_attention_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const AttentionConfig config = read_attention_config(args);
    auto layer = std::make_unique<LlamaAttentionLayer>(describe(config, input), input, config, context.device);
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

std::unique_ptr<libpipe::LayerFactory> make_llama_attention_factory() {
  return std::make_unique<LlamaAttentionFactory>();
}

}  // namespace pipe_llama
