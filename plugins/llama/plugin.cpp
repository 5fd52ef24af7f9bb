// The llama layer plugin: Llama's RMSNorm, rotary attention with grouped
// key/value heads, SwiGLU MLP and the decoder block built on them, and
// Hugging Face's LlamaForCausalLM on them (pipe-convert). Token embedding,
// LM head (tied or not) and loss are the core plugin's; the plugin stands
// alone (dlopen'd on its own, not linked to core).
#include <pipe/plugin.hpp>

#include "llama_layers.hpp"

PIPE_PLUGIN(registry) {
  registry.add("RMSNorm", pipe_llama::make_rms_norm_factory());
  registry.add("LlamaAttention", pipe_llama::make_llama_attention_factory());
  registry.add("SwiGLU", pipe_llama::make_swiglu_factory());
  registry.add("LlamaBlock", pipe_llama::make_llama_block_factory());
  registry.add_hf_architecture("LlamaForCausalLM", pipe_llama::make_hf_llama());
}
