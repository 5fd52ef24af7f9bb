// Loading layer plugins: shared objects found in plugin directories, opened
// with dlopen, registering their types through PIPE_PLUGIN's entry point.
#pragma once

#include <string>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/registry.hpp"

namespace libpipe {

// Loads one plugin. Errors name the file: dlopen failure (with dlerror), no
// entry point, ABI mismatch (both numbers), duplicate type names.
PIPE_API void load_plugin(LayerRegistry& registry, const std::string& path);

// Loads every *.so in `dir`, in name order. A directory that does not exist is
// an error; an empty one is not.
PIPE_API std::vector<std::string> load_plugin_dir(LayerRegistry& registry, const std::string& dir);

struct PluginSearch {
  bool builtin = true;                 // the project's own plugins
  bool environment = true;             // directories in PIPE_PLUGIN_PATH (colon-separated)
  std::vector<std::string> dirs;       // --plugin-dir, in order
};

// Loads from the built-in directory (paths.hpp), then PIPE_PLUGIN_PATH, then
// `dirs`. A file already loaded (same real path) is skipped. Returns the
// plugin files loaded.
PIPE_API std::vector<std::string> load_plugins(LayerRegistry& registry, const PluginSearch& search);

}  // namespace libpipe
