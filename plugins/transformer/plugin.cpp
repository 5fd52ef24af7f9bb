// The transformer layer plugin: GPT-2's causal self-attention and the pre-LN
// block built on it, and Hugging Face's GPT-2 on them (pipe-convert). It
// stands alone (it is dlopen'd separately from the core plugin and does not
// link to it); models mix its types with core's freely.
#include <pipe/plugin.hpp>

#include "transformer_layers.hpp"

PIPE_PLUGIN(registry) {
  registry.add("CausalSelfAttention", pipe_transformer::make_causal_self_attention_factory());
  registry.add("TransformerBlock", pipe_transformer::make_transformer_block_factory());
  registry.add_hf_architecture("GPT2LMHeadModel", pipe_transformer::make_hf_gpt2());
}
