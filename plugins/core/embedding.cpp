// Embedding: token ids -> token embedding plus learned position embedding
// (GPT-2's wte + wpe). The token table is the layer's tieable parameter: under
// a shared `tie` key it is the same tensor as the LM head's weight. Without
// `positions` there is no position table (models whose attention encodes
// positions, as rotary embeddings do): y[t] = wte[x[t]], any T.
#include <pipe/init.hpp>
#include <pipe/ops.hpp>

#include "core_layers.hpp"

namespace pipe_core {
namespace {

struct EmbeddingConfig {
  std::int64_t vocab;
  std::int64_t dim;
  std::int64_t positions;  // 0: no position table
};

EmbeddingConfig read_config(const libpipe::Args& args) {
  const std::int64_t positions = args.has("positions") ? args.get_positive_int("positions") : 0;
  return {args.get_positive_int("vocab"), args.get_positive_int("dim"), positions};
}

// ctx.saved: {tokens}. Token ids have no gradient, so backward_input returns an
// undefined tensor and all the work is backward_weight's scatter-add.
class EmbeddingLayer : public CoreLayer {
 public:
  EmbeddingLayer(const libpipe::LayerDescription& description, const libpipe::TensorType& input, bool positions,
                 libpipe::Device device)
      : CoreLayer("Embedding", description, input, device), positions_(positions) {}

  libpipe::Tensor forward(libpipe::LayerContext& ctx, const libpipe::Tensor& tokens) override {
    check_input(tokens);
    ctx.saved = {tokens};
    const libpipe::Tensor no_positions;
    return libpipe::ops::embedding(tokens, param("wte").value, positions_ ? param("wpe").value : no_positions);
  }

  libpipe::Tensor backward_input(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 1, "backward_input");
    check_output_grad(dy, s[0].shape()[0], "backward_input");
    return libpipe::Tensor();
  }

  void backward_weight(libpipe::LayerContext& ctx, const libpipe::Tensor& dy) override {
    const auto& s = saved(ctx, 1, "backward_weight");
    check_output_grad(dy, s[0].shape()[0], "backward_weight");
    libpipe::Tensor no_positions;
    libpipe::ops::embedding_backward(s[0], dy, grad("wte"), positions_ ? grad("wpe") : no_positions);
  }

 private:
  bool positions_;  // whether the layer has wpe
};

class EmbeddingFactory : public libpipe::LayerFactory {
 public:
  std::string summary() const override {
    return "Embedding(vocab, dim, positions=none): y[t] = wte[x[t]] + wpe[t] (no wpe without positions)";
  }

  libpipe::LayerDescription describe(const libpipe::Args& args, const libpipe::TensorType& input) const override {
    return describe(read_config(args), input);
  }

  std::unique_ptr<libpipe::Layer> create(const libpipe::Args& args, const libpipe::TensorType& input,
                                         const libpipe::CreateContext& context) const override {
    const EmbeddingConfig config = read_config(args);
    auto layer = std::make_unique<EmbeddingLayer>(describe(config, input), input, config.positions > 0, context.device);
    libpipe::Rng rng(context.layer_seed());
    // nanoGPT's choice for both tables (OpenAI's GPT-2 used 0.01 for wpe).
    libpipe::fill_normal(layer->param("wte").value, rng, kInitStd);
    if (config.positions > 0) libpipe::fill_normal(layer->param("wpe").value, rng, kInitStd);
    return layer;
  }

 private:
  static libpipe::LayerDescription describe(const EmbeddingConfig& config, const libpipe::TensorType& input) {
    // The position table has `positions` rows, so longer sequences cannot be embedded.
    const bool fits = input.dtype == libpipe::DType::int32 && input.shape.size() == 1 && input.shape[0] >= 1 &&
                      (config.positions == 0 || input.shape[0] <= config.positions);
    if (!fits)
      throw libpipe::ShapeError(config.positions == 0 ? "int32[T]"
                                                      : "int32[T <= " + std::to_string(config.positions) + "]");
    const std::int64_t tokens = input.shape[0];

    libpipe::LayerDescription d;
    d.output = {{tokens, config.dim}, libpipe::DType::float32};
    d.params.push_back({"wte", {config.vocab, config.dim}, /*tieable=*/true});
    if (config.positions > 0) d.params.push_back({"wpe", {config.positions, config.dim}});
    (void)d.param_count();  // an absurd table shape is named before the FLOPs overflow
    d.flops = (libpipe::Count(kEmbeddingFlopsPerElement) * tokens * config.dim).value();
    // Backward scatters the gradient rows by token id: only the ids are kept.
    d.activation_bytes = tokens * kElementBytes;
    return d;
  }
};

}  // namespace

std::unique_ptr<libpipe::LayerFactory> make_embedding_factory() { return std::make_unique<EmbeddingFactory>(); }

}  // namespace pipe_core
