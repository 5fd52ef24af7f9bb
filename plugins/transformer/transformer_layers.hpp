// Private to the transformer plugin: the factory constructors plugin.cpp
// registers, the base class of its layers, and the attention pieces
// TransformerBlock composes, so that the block's description, initialisation
// and math reuse the standalone attention's instead of restating them.
//
// The plugin cannot link to the core plugin (each is dlopen'd on its own), so
// the few cost formulas of core layers a block contains (Linear, LayerNorm,
// GELU) are restated here. They must equal core_layers.hpp's; test_layers
// checks that a block's figures are the sum of its parts described by both
// plugins. The run-time checks come from the SDK (libpipe::CheckedLayer).
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <pipe/checked_layer.hpp>
#include <pipe/gemm_shape.hpp>
#include <pipe/hf_architecture.hpp>
#include <pipe/init.hpp>
#include <pipe/layer.hpp>
#include <string>
#include <vector>

namespace pipe_transformer {

std::unique_ptr<libpipe::LayerFactory> make_causal_self_attention_factory();
std::unique_ptr<libpipe::LayerFactory> make_transformer_block_factory();

// The base of this plugin's layers: the parameters of the description plus the
// checks each call makes, so that every run-time error names the layer type
// and the shapes.
using TransformerLayer = libpipe::CheckedLayer;

// GPT-2 initialisation: weights N(0, 0.02), biases 0, LayerNorm identity.
constexpr float kInitStd = 0.02f;
constexpr std::int64_t kElementBytes = 4;  // float32

// Per-element FLOPs, forward plus backward (see core_layers.hpp for the counts).
constexpr std::int64_t kLayerNormFlopsPerElement = 8;
constexpr std::int64_t kGeluFlopsPerElement = 10;
// A residual add: one add forward, and backward adds the branch's input
// gradient to the skip path's.
constexpr std::int64_t kResidualFlopsPerElement = 2;
// Softmax over one score: scale and mask folded in; max, subtract, exp, sum,
// divide (fwd 5); the row dot product, subtract, multiply (bwd 3).
constexpr std::int64_t kSoftmaxFlopsPerElement = 8;

// Sizes come from model files: the cost formulas count with libpipe::Count,
// so that an absurd size is an error naming the layer, not an overflow.
using libpipe::Count;

// y = x W^T for `rows` rows: 2 FLOPs per multiply-add, backward twice forward.
inline Count linear_flops(Count rows, Count in, Count out) { return Count(6) * rows * in * out; }

// Backward of a LayerNorm over `rows` rows of `channels` needs the input and
// each row's mean and 1/std.
inline Count layer_norm_activation_bytes(Count rows, Count channels) {
  return (rows * channels + Count(2) * rows) * kElementBytes;
}

// GPT-2 scales the init of the projections that write into the residual
// stream by 1/sqrt(2 * n_layer): each of the n_layer blocks adds two of them.
inline float residual_init_std(std::int64_t n_layer) {
  return kInitStd / static_cast<float>(std::sqrt(2.0 * static_cast<double>(n_layer)));
}

struct AttentionConfig {
  std::int64_t dim;
  std::int64_t heads;
  std::int64_t n_layer;
};

// Reads dim, heads and n_layer (optional, 1), shared by both layer types;
// heads must divide dim.
AttentionConfig read_attention_config(const libpipe::Args& args);

// The sequence length T of a float32[T, dim] input; ShapeError otherwise.
std::int64_t sequence_length(const libpipe::TensorType& input, std::int64_t dim);

// Appends attention's parameters, named with `prefix` ("" standalone,
// "attn." in a block), and adds its FLOPs and activation bytes for T tokens.
void describe_attention(const AttentionConfig& config, std::int64_t tokens, const std::string& prefix,
                        libpipe::LayerDescription& description);

// Initialises the parameters describe_attention announced under `prefix`.
void init_attention(const AttentionConfig& config, const std::string& prefix, libpipe::ParameterLayer& layer,
                    libpipe::Rng& rng);

// The attention math under `prefix`, in three parts matching the layer API.
// forward: y = proj(attention(qkv(x))), returning in qkv, probs and out (the
// heads' output before proj) what backward needs besides x.
libpipe::Tensor attention_forward(TransformerLayer& layer, const std::string& prefix, std::int64_t heads,
                                  const libpipe::Tensor& x, libpipe::Tensor& qkv, libpipe::Tensor& probs,
                                  libpipe::Tensor& out);
// dx from dy, leaving in dqkv the gradient at the qkv projection's output,
// which (with dy itself for proj) is all the weight gradients need.
libpipe::Tensor attention_backward_input(TransformerLayer& layer, const std::string& prefix, std::int64_t heads,
                                         const libpipe::Tensor& dy, const libpipe::Tensor& qkv,
                                         const libpipe::Tensor& probs, libpipe::Tensor& dqkv);
// The four weight-gradient GEMMs: proj from (dy, out), qkv from (dqkv, x).
void attention_backward_weight(TransformerLayer& layer, const std::string& prefix, const libpipe::Tensor& dy,
                               const libpipe::Tensor& out, const libpipe::Tensor& dqkv, const libpipe::Tensor& x);

// Hugging Face's GPT2LMHeadModel (hf_gpt2.cpp), for pipe-convert.
std::unique_ptr<libpipe::HfArchitecture> make_hf_gpt2();

}  // namespace pipe_transformer
