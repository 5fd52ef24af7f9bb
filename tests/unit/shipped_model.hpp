// A shipped model (share/models), described once with the built-in plugins, for the unit tests that need a real
// model's description.
#pragma once

#include <map>
#include <string>

#include "pipe/describe.hpp"
#include "pipe/model.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"

namespace pipe_test {

inline const libpipe::ModelDescription& shipped_model(const std::string& name) {
  static libpipe::LayerRegistry registry;
  static std::map<std::string, libpipe::ModelDescription> cache;
  if (registry.empty()) libpipe::load_plugins(registry, libpipe::PluginSearch{true, false, {}});
  auto it = cache.find(name);
  if (it == cache.end())
    it = cache
             .emplace(name,
                      libpipe::describe_model(libpipe::load_model_file(libpipe::resolve_model_path(name)), registry))
             .first;
  return it->second;
}

}  // namespace pipe_test
