// The layer registry: one map from type name to factory, owned by its user.
#include "pipe/registry.hpp"

#include "pipe/error.hpp"
#include "model/suggest.hpp"

namespace libpipe {

LayerRegistry::LayerRegistry() = default;

// Factories are destroyed here; plugin code stays mapped (see plugin_loader.cpp).
LayerRegistry::~LayerRegistry() = default;

void LayerRegistry::add(const std::string& name, std::unique_ptr<LayerFactory> factory) {
  if (name.empty()) throw Error("a layer type with an empty name was registered by " + current_source_);
  if (!factory) throw Error("layer type '" + name + "' was registered without a factory by " + current_source_);
  auto it = entries_.find(name);
  if (it != entries_.end())
    throw Error("layer type '" + name + "' is registered twice: by " + it->second.source + " and by " +
                current_source_);
  entries_.emplace(name, Entry{std::move(factory), current_source_});
}

const LayerFactory* LayerRegistry::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.factory.get();
}

const LayerFactory& LayerRegistry::get(const std::string& name) const {
  if (auto f = find(name)) return *f;
  std::string message = "unknown layer type '" + name + "'" + did_you_mean(name, names());
  if (entries_.empty()) message += "; no layer types are registered (no plugins were loaded)";
  throw Error(message);
}

std::string LayerRegistry::source_of(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? "" : it->second.source;
}

std::vector<std::string> LayerRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

std::string LayerRegistry::closest(const std::string& name) const { return closest_name(name, names()); }

}  // namespace libpipe
