// The layer registry: layer type names -> factories, with where each came from.
// One object owned by the caller (never a static global), so that two models
// or two tests never see each other's types.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/layer.hpp"

namespace libpipe {

class HfArchitecture;  // pipe/hf_architecture.hpp

class PIPE_API LayerRegistry {
 public:
  LayerRegistry();
  ~LayerRegistry();
  LayerRegistry(const LayerRegistry&) = delete;
  LayerRegistry& operator=(const LayerRegistry&) = delete;

  // Registers `name`. A name registered twice is an error naming both sources.
  void add(const std::string& name, std::unique_ptr<LayerFactory> factory);

  // The factory for `name`; an unknown name is an error with a "did you mean".
  const LayerFactory& get(const std::string& name) const;
  const LayerFactory* find(const std::string& name) const;
  // Where `name` was registered from (a plugin path); empty when unknown.
  std::string source_of(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  bool empty() const { return entries_.empty(); }

  // The registered name closest to `name` (edit distance, case-insensitive),
  // or "" when nothing is reasonably close.
  std::string closest(const std::string& name) const;

  // The source recorded for factories added from now on (the plugin loader
  // sets it to the plugin's path while the plugin registers).
  void set_current_source(const std::string& source) { current_source_ = source; }

  // Hugging Face architectures (pipe/hf_architecture.hpp), by their config.json "architectures" name; a name
  // registered twice is an error naming both sources.
  void add_hf_architecture(const std::string& name, std::unique_ptr<HfArchitecture> architecture);
  const HfArchitecture* find_hf_architecture(const std::string& name) const;
  std::vector<std::string> hf_architecture_names() const;  // sorted

  // Keeps a loaded plugin's handle for the lifetime of the process (see
  // plugin_loader.cpp for why plugins are never unloaded).
  void keep_handle(void* handle) { handles_.push_back(handle); }

 private:
  struct Entry {
    std::unique_ptr<LayerFactory> factory;
    std::string source;
  };
  std::map<std::string, Entry> entries_;
  struct Architecture {
    std::unique_ptr<HfArchitecture> architecture;
    std::string source;
  };
  std::map<std::string, Architecture> architectures_;
  std::string current_source_ = "<built in>";
  std::vector<void*> handles_;
};

}  // namespace libpipe
