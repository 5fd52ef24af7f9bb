// The layer registry: one map from type name to factory, owned by its user.
#include "pipe/registry.hpp"

#include "pipe/error.hpp"
#include "pipe/hf_architecture.hpp"
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

void LayerRegistry::add_hf_architecture(const std::string& name, std::unique_ptr<HfArchitecture> architecture) {
  if (name.empty()) throw Error("a Hugging Face architecture with an empty name was registered by " + current_source_);
  if (!architecture)
    throw Error("Hugging Face architecture '" + name + "' was registered without a converter by " + current_source_);
  auto it = architectures_.find(name);
  if (it != architectures_.end())
    throw Error("Hugging Face architecture '" + name + "' is registered twice: by " + it->second.source + " and by " +
                current_source_);
  architectures_.emplace(name, Architecture{std::move(architecture), current_source_});
}

const HfArchitecture* LayerRegistry::find_hf_architecture(const std::string& name) const {
  auto it = architectures_.find(name);
  return it == architectures_.end() ? nullptr : it->second.architecture.get();
}

std::vector<std::string> LayerRegistry::hf_architecture_names() const {
  std::vector<std::string> out;
  for (const auto& [name, entry] : architectures_) out.push_back(name);
  return out;
}

HfArchitecture::~HfArchitecture() = default;

std::string LayerRegistry::closest(const std::string& name) const { return closest_name(name, names()); }

}  // namespace libpipe
