// Private to the llama plugin: the factory constructors plugin.cpp registers,
// the base class of its layers, and the attention and MLP pieces LlamaBlock
// composes, so that the block's description, initialisation and math reuse
// the standalone layers' instead of restating them (as the transformer
// plugin's TransformerBlock does with its attention).
//
// Layout. LlamaAttention keeps q, k and v in one projection, attn.qkv.weight
// [(H + 2 KV) D, C]: Hugging Face's q_proj, k_proj and v_proj stacked by rows,
// so one GEMM makes them. Rotary embeddings use Hugging Face's rotate_half
// pairing (channel i with i + D/2), so its q and k weights load unpermuted.
// Grouped key/value heads reach the causal attention op (libpipe's, shared
// with GPT-2) through ops::rotary_gqa, which rotates q and k and repeats each
// shared k and v head for its H / KV query heads; its backward sums the
// repeated heads' gradients back. SwiGLU keeps gate and up in one
// projection, mlp.gate_up.weight [2F, C] (gate_proj's rows, then up_proj's).
// No layer has a bias.
//
// The plugin cannot link to the core plugin, so the cost formulas of the core
// layers it relies on (Linear's) are restated here; test_layers checks that a
// block's figures are the sum of its parts.
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

namespace pipe_llama {

std::unique_ptr<libpipe::LayerFactory> make_rms_norm_factory();
std::unique_ptr<libpipe::LayerFactory> make_llama_attention_factory();
std::unique_ptr<libpipe::LayerFactory> make_swiglu_factory();
std::unique_ptr<libpipe::LayerFactory> make_llama_block_factory();

// Hugging Face's LlamaForCausalLM (hf_llama.cpp), for pipe-convert.
std::unique_ptr<libpipe::HfArchitecture> make_hf_llama();

using LlamaLayer = libpipe::CheckedLayer;
using libpipe::Count;

// Weights N(0, 0.02) (Hugging Face's initializer_range), the projections
// into the residual stream scaled by 1/sqrt(2 n_layer) as GPT-2's; RMSNorm
// weights 1.
constexpr float kInitStd = 0.02f;
constexpr std::int64_t kElementBytes = 4;  // float32

// Per-element FLOPs, forward plus backward (rough counts, as core_layers.hpp's).
//   RMSNorm: square, sum, scale by rstd and weight (fwd ~4); the row dot product and the update (bwd ~4).
constexpr std::int64_t kRmsNormFlopsPerElement = 8;
//   SwiGLU per output: sigmoid (exp, add, divide), two products (fwd ~5); its derivative (bwd ~8).
constexpr std::int64_t kSwigluFlopsPerElement = 13;
//   Rotary embedding per q or k element: two products and an add, forward and backward.
constexpr std::int64_t kRotaryFlopsPerElement = 6;
//   A residual add: one add forward, one backward.
constexpr std::int64_t kResidualFlopsPerElement = 2;
//   Softmax per score (as the transformer plugin counts it).
constexpr std::int64_t kSoftmaxFlopsPerElement = 8;

// y = x W^T for `rows` rows: 2 FLOPs per multiply-add, backward twice forward.
inline Count linear_flops(Count rows, Count in, Count out) { return Count(6) * rows * in * out; }

inline float residual_init_std(std::int64_t n_layer) {
  return kInitStd / static_cast<float>(std::sqrt(2.0 * static_cast<double>(n_layer)));
}

// The sequence length T of a float32[T, dim] input; ShapeError otherwise.
std::int64_t sequence_length(const libpipe::TensorType& input, std::int64_t dim);

// RMSNorm's eps (optional, 1e-5, positive).
float read_eps(const libpipe::Args& args);

// ---- attention

struct AttentionConfig {
  std::int64_t dim, heads, kv_heads, head_dim, n_layer;
  float rope_theta;
  std::int64_t qkv_rows() const { return (heads + 2 * kv_heads) * head_dim; }
};

// dim, heads, kv_heads (optional, heads), rope_theta (optional, 10000) and n_layer (optional, 1): heads divides
// dim, kv_heads divides heads, and dim / heads is even (rotary pairs).
AttentionConfig read_attention_config(const libpipe::Args& args);

// Appends attention's parameters under `prefix` ("" standalone, "attn." in a block) and adds its FLOPs,
// activation bytes and GEMMs for T tokens.
void describe_attention(const AttentionConfig& config, std::int64_t tokens, const std::string& prefix,
                        libpipe::LayerDescription& description);
void init_attention(const AttentionConfig& config, const std::string& prefix, libpipe::ParameterLayer& layer,
                    libpipe::Rng& rng);
// y = proj(attention(rotary_gqa(qkv(x)))), returning in qkv (rotated, heads repeated), probs and out (the heads'
// output before proj) what backward needs besides x.
libpipe::Tensor attention_forward(LlamaLayer& layer, const std::string& prefix, const AttentionConfig& config,
                                  const libpipe::Tensor& x, libpipe::Tensor& qkv, libpipe::Tensor& probs,
                                  libpipe::Tensor& out);
// dx from dy, leaving in dproj_in the gradient at the qkv projection's output, which (with dy for proj) is all
// the weight gradients need.
libpipe::Tensor attention_backward_input(LlamaLayer& layer, const std::string& prefix, const AttentionConfig& config,
                                         const libpipe::Tensor& dy, const libpipe::Tensor& qkv,
                                         const libpipe::Tensor& probs, libpipe::Tensor& dproj_in);
void attention_backward_weight(LlamaLayer& layer, const std::string& prefix, const libpipe::Tensor& dy,
                               const libpipe::Tensor& out, const libpipe::Tensor& dproj_in, const libpipe::Tensor& x);

// ---- SwiGLU MLP: down(silu(gate(x)) * up(x))

struct MlpConfig {
  std::int64_t dim, hidden, n_layer;
};

// dim, hidden and n_layer (optional, 1).
MlpConfig read_mlp_config(const libpipe::Args& args);
void describe_mlp(const MlpConfig& config, std::int64_t tokens, const std::string& prefix,
                  libpipe::LayerDescription& description);
void init_mlp(const MlpConfig& config, const std::string& prefix, libpipe::ParameterLayer& layer, libpipe::Rng& rng);
// Returns y; h = [gate, up] (x's projection) and a = silu(gate) * up are kept for backward.
libpipe::Tensor mlp_forward(LlamaLayer& layer, const std::string& prefix, const libpipe::Tensor& x,
                            libpipe::Tensor& h, libpipe::Tensor& a);
// dx from dy, leaving in dh the gradient at gate_up's output.
libpipe::Tensor mlp_backward_input(LlamaLayer& layer, const std::string& prefix, const libpipe::Tensor& dy,
                                   const libpipe::Tensor& h, libpipe::Tensor& dh);
void mlp_backward_weight(LlamaLayer& layer, const std::string& prefix, const libpipe::Tensor& dy,
                         const libpipe::Tensor& a, const libpipe::Tensor& dh, const libpipe::Tensor& x);

}  // namespace pipe_llama
