// The core layer plugin: the building blocks every model file uses (dense
// layers, activations, normalisation, token embedding and LM head, losses).
// It is loaded with dlopen like any user plugin; the names registered here are
// the `type` values of model files and what `type:REGEX` partitioning matches.
#include <pipe/plugin.hpp>

#include "core_layers.hpp"

PIPE_PLUGIN(registry) {
  registry.add("Linear", pipe_core::make_linear_factory());
  registry.add("ReLU", pipe_core::make_relu_factory());
  registry.add("GELU", pipe_core::make_gelu_factory());
  registry.add("LayerNorm", pipe_core::make_layer_norm_factory());
  registry.add("Embedding", pipe_core::make_embedding_factory());
  registry.add("LMHead", pipe_core::make_lm_head_factory());
  registry.add("SoftmaxCrossEntropy", pipe_core::make_softmax_cross_entropy_factory());
  registry.add("MSELoss", pipe_core::make_mse_loss_factory());
}
