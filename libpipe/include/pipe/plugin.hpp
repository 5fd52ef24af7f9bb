// The plugin SDK: what a layer plugin includes to register its types.
//
//   #include <pipe/plugin.hpp>
//   PIPE_PLUGIN(registry) {
//     registry.add("MyLayer", std::make_unique<MyLayerFactory>());
//   }
//
// This defines the one C-linkage entry point the host looks up with dlsym:
//   extern "C" int pipe_plugin_init(int host_abi, libpipe::LayerRegistry* registry);
// It returns the ABI the plugin was built with and registers nothing when that
// differs from the host's, so that a stale plugin never touches the registry.
#pragma once

#include "pipe/hf_architecture.hpp"
#include "pipe/layer.hpp"
#include "pipe/registry.hpp"

// Bumped whenever LayerFactory, Layer, LayerRegistry or anything they expose
// changes layout or virtual functions. 3: Parameter gained its float32 master
// (mixed precision). 4: LayerDescription gained the loss contract (`loss`)
// and the layer's GEMM shapes (`gemms`). 5: LayerRegistry gained Hugging Face
// architectures (pipe/hf_architecture.hpp). 6: LayerDescription gained the
// attention it holds (`attention_heads`, `attention_seq`, `attention_head_dim`).
#define PIPE_PLUGIN_ABI 6

#define PIPE_PLUGIN_ENTRY_SYMBOL "pipe_plugin_init"

#define PIPE_PLUGIN(registry_var)                                                        \
  static void pipe_plugin_register_types(::libpipe::LayerRegistry& registry_var);           \
  extern "C" __attribute__((visibility("default"))) int pipe_plugin_init(                \
      int host_abi, ::libpipe::LayerRegistry* registry) {                                   \
    if (host_abi == PIPE_PLUGIN_ABI) pipe_plugin_register_types(*registry);              \
    return PIPE_PLUGIN_ABI;                                                              \
  }                                                                                      \
  static void pipe_plugin_register_types(::libpipe::LayerRegistry& registry_var)
