// Private to the core plugin: the factory constructors that plugin.cpp
// registers, the base class of every core layer (its run-time checks), and the
// few conventions every core layer shares (GPT-2's initialisation scale, the
// notation of expected input types, the per-element cost constants). The transformer plugin keeps its own copy of the
// cost constants it needs (it cannot link to this plugin); test_layers checks that the two agree.
#pragma once

#include <cstdint>
#include <memory>
#include <pipe/checked_layer.hpp>
#include <pipe/gemm_shape.hpp>
#include <pipe/layer.hpp>
#include <string>
#include <vector>

namespace pipe_core {

std::unique_ptr<libpipe::LayerFactory> make_linear_factory();
std::unique_ptr<libpipe::LayerFactory> make_relu_factory();
std::unique_ptr<libpipe::LayerFactory> make_gelu_factory();
std::unique_ptr<libpipe::LayerFactory> make_layer_norm_factory();
std::unique_ptr<libpipe::LayerFactory> make_embedding_factory();
std::unique_ptr<libpipe::LayerFactory> make_lm_head_factory();
std::unique_ptr<libpipe::LayerFactory> make_softmax_cross_entropy_factory();
std::unique_ptr<libpipe::LayerFactory> make_mse_loss_factory();

// The base of every core layer: the parameters of its description, plus the
// checks each of the three calls makes, written once so that every run-time
// error names the layer type and both shapes the same way. Forward stores what
// backward needs in ctx.saved, in an order each layer documents; the tensors
// are references to the caller's storage, never copies.
// The core layers' base: the SDK's run-time checks.
using CoreLayer = libpipe::CheckedLayer;

using libpipe::batched_type_str;
using libpipe::tensor_type_str;

// GPT-2 (and nanoGPT) draw every weight matrix and embedding from N(0, 0.02);
// biases start at 0, LayerNorm at the identity.
constexpr float kInitStd = 0.02f;

// Activations and parameters are float32 throughout the core layers; int32
// token ids are 4 bytes too.
constexpr std::int64_t kElementBytes = 4;

// FLOPs per element, forward plus backward, of the non-GEMM operations. They
// are rough counts (GEMMs outweigh them by two or more orders of magnitude in
// any real model) and only steer `flops` partitioning; what matters is that
// they are fixed, documented and the same wherever an op appears.
//   ReLU: compare (fwd) + mask the gradient (bwd).
constexpr std::int64_t kReluFlopsPerElement = 2;
//   GELU (tanh form): cube, fused polynomial, tanh, scale (fwd ~4) and its
//   derivative (bwd ~6), counting tanh as one operation.
constexpr std::int64_t kGeluFlopsPerElement = 10;
//   LayerNorm: mean, centre, variance, normalise, affine (fwd ~5) and the two
//   row reductions of the input gradient (bwd ~3, weight/bias grads included).
constexpr std::int64_t kLayerNormFlopsPerElement = 8;
//   Embedding: add the position row (fwd 1); scatter-add into both tables (bwd 2).
constexpr std::int64_t kEmbeddingFlopsPerElement = 3;
//   Softmax cross-entropy, per logit: max, subtract, exp, sum (fwd 4);
//   normalise and subtract the one-hot label (bwd 2).
constexpr std::int64_t kCrossEntropyFlopsPerElement = 6;
//   MSE: subtract, square, sum (fwd 3); scale the saved difference (bwd 2).
constexpr std::int64_t kMseFlopsPerElement = 5;

// FLOPs of y = x W^T for `rows` rows: 2 per multiply-add forward, and twice the
// forward for backward (input gradient and weight gradient are one GEMM each).
// Bias additions are O(rows * out) and left out. Sizes come from model files:
// counted with libpipe::Count, so that an absurd one is an error, not an overflow.
inline std::int64_t linear_flops(libpipe::Count rows, libpipe::Count in, libpipe::Count out) {
  return (libpipe::Count(6) * rows * in * out).value();
}

// Expected-type strings for ShapeError use PyTorch's notation: `*` is any
// number of leading dimensions (none included), a letter a free size.
inline std::string float_type_with_last(const std::string& last) { return "float32[*, " + last + "]"; }

// True when `input` is float32 with at least one dimension and, for
// last >= 0, a last dimension of exactly `last`.
inline bool is_float_with_last(const libpipe::TensorType& input, std::int64_t last = -1) {
  return input.dtype == libpipe::DType::float32 && !input.shape.empty() && (last < 0 || input.shape.back() == last);
}

}  // namespace pipe_core
