// Fuzz target: the model-file reader. Any text goes through parse_model and,
// when it parses, describe_model against the project's own layer plugins (the
// shape chain, every factory's argument checks, tie groups), then the
// fingerprint and the description table that pipe-train prints.
//
// A libpipe::Error is the documented answer to a bad model file, so it is a
// normal outcome here; any other exception escaping, a crash, a leak or a
// sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/model.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"

namespace {

// Loaded once: plugins are never unloaded (plugin_loader.cpp), and loading
// them per input would cost far more than the parse being fuzzed. The
// environment's PIPE_PLUGIN_PATH is ignored so that every run sees the same
// layer types.
libpipe::LayerRegistry* registry = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  registry = new libpipe::LayerRegistry();
  try {
    libpipe::load_plugins(*registry, libpipe::PluginSearch{true, false, {}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_model: cannot load the built-in plugins: %s\n", e.what());
    std::abort();
  }
  if (registry->empty()) {
    // Without layer types every input stops at "unknown layer type" and the
    // fuzzer would explore nothing past parse_model.
    std::fprintf(stderr, "fuzz_model: the built-in plugins registered no layer types\n");
    std::abort();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const libpipe::ModelSpec model = libpipe::parse_model(text, "fuzz.toml");
    const libpipe::ModelDescription description = libpipe::describe_model(model, *registry);
    (void)libpipe::model_fingerprint(description);
    (void)libpipe::format_description(description);
  } catch (const libpipe::Error&) {
    // The documented outcome for a bad model.
  }
  // Anything else propagates: libFuzzer reports an uncaught exception as a
  // crash (abort via std::terminate) with the input that caused it.
  return 0;
}
