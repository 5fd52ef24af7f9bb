// The layer registry and real plugin loading: built-in plugins, a user's
// plugin, and every way a plugin can be wrong, each with its exact message.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE registry
#include <boost/test/unit_test.hpp>

#include <cstdlib>

#include "pipe/paths.hpp"
#include "pipe/plugin.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"
#include "test_util.hpp"

namespace {

const std::string kPlugins = PIPE_TEST_PLUGIN_DIR;

using pipe_test::error_of;

libpipe::PluginSearch only(std::vector<std::string> dirs, bool builtin = false) {
  return libpipe::PluginSearch{builtin, false, std::move(dirs)};
}

}  // namespace

BOOST_AUTO_TEST_CASE(builtin_plugins_register_the_shipped_types) {
  libpipe::LayerRegistry registry;
  auto files = libpipe::load_plugins(registry, only({}, true));
  BOOST_TEST(files.size() == 3u);
  for (const char* type : {"Linear", "ReLU", "GELU", "LayerNorm", "Embedding", "LMHead", "SoftmaxCrossEntropy",
                           "MSELoss", "CausalSelfAttention", "TransformerBlock", "RMSNorm", "LlamaAttention", "SwiGLU",
                           "LlamaBlock"})
    BOOST_TEST(registry.find(type) != nullptr, type);
  BOOST_TEST(registry.source_of("Linear") == libpipe::builtin_plugin_dir() + "/pipe_core.so");
  BOOST_TEST(registry.source_of("TransformerBlock") == libpipe::builtin_plugin_dir() + "/pipe_transformer.so");
  BOOST_TEST(registry.source_of("LlamaBlock") == libpipe::builtin_plugin_dir() + "/pipe_llama.so");
}

BOOST_AUTO_TEST_CASE(a_users_plugin_registers_from_its_directory) {
  libpipe::LayerRegistry registry;
  auto files = libpipe::load_plugins(registry, only({kPlugins + "/scale"}));
  BOOST_TEST(files == std::vector<std::string>{kPlugins + "/scale/scale.so"});
  BOOST_TEST(registry.names() == std::vector<std::string>{"Scale"});
  BOOST_TEST(registry.source_of("Scale") == kPlugins + "/scale/scale.so");
}

BOOST_AUTO_TEST_CASE(registries_are_independent_objects) {
  libpipe::LayerRegistry a, b;
  libpipe::load_plugins(a, only({kPlugins + "/scale"}));
  BOOST_TEST(b.find("Scale") == nullptr);
  libpipe::load_plugins(b, only({kPlugins + "/scale"}));  // the same .so, a second registry
  BOOST_TEST(b.find("Scale") != nullptr);
  BOOST_TEST(a.find("Scale") != b.find("Scale"));
}

BOOST_AUTO_TEST_CASE(plugin_path_environment_variable) {
  libpipe::LayerRegistry registry;
  setenv("PIPE_PLUGIN_PATH", (kPlugins + "/scale:" + libpipe::builtin_plugin_dir()).c_str(), 1);
  auto files = libpipe::load_plugins(registry, libpipe::PluginSearch{true, true, {}});
  unsetenv("PIPE_PLUGIN_PATH");
  // The built-in directory named again is skipped, not a duplicate.
  BOOST_TEST(files.size() == 4u);
  BOOST_TEST(registry.find("Scale") != nullptr);
  BOOST_TEST(registry.find("Linear") != nullptr);
}

BOOST_AUTO_TEST_CASE(dlopen_failure_carries_dlerror) {
  libpipe::LayerRegistry registry;
  std::string e = error_of([&] { libpipe::load_plugins(registry, only({kPlugins + "/not_elf"})); });
  std::string prefix = "cannot load plugin " + kPlugins + "/not_elf/broken.so: ";
  BOOST_TEST(e.substr(0, prefix.size()) == prefix);
  BOOST_TEST((e.find("ELF") != std::string::npos || e.find("too short") != std::string::npos), e);
}

BOOST_AUTO_TEST_CASE(missing_entry_point) {
  libpipe::LayerRegistry registry;
  BOOST_TEST(error_of([&] { libpipe::load_plugins(registry, only({kPlugins + "/no_entry"})); }) ==
             "plugin " + kPlugins +
                 "/no_entry/no_entry.so has no entry point 'pipe_plugin_init' (define one with PIPE_PLUGIN from "
                 "<pipe/plugin.hpp>)");
}

BOOST_AUTO_TEST_CASE(abi_mismatch_names_both_numbers_and_registers_nothing) {
  libpipe::LayerRegistry registry;
  BOOST_TEST(error_of([&] { libpipe::load_plugins(registry, only({kPlugins + "/bad_abi"})); }) ==
             "plugin " + kPlugins + "/bad_abi/bad_abi.so was built for plugin ABI 999 but this libpipe has plugin ABI " +
                 std::to_string(PIPE_PLUGIN_ABI) + ": rebuild the plugin against this libpipe");
  BOOST_TEST(registry.empty());
}

BOOST_AUTO_TEST_CASE(duplicate_type_names_both_sources) {
  libpipe::LayerRegistry registry;
  BOOST_TEST(error_of([&] { libpipe::load_plugins(registry, only({kPlugins + "/duplicate_linear"}, true)); }) ==
             "layer type 'Linear' is registered twice: by " + libpipe::builtin_plugin_dir() + "/pipe_core.so and by " +
                 kPlugins + "/duplicate_linear/duplicate_linear.so");
  libpipe::LayerRegistry other;
  BOOST_TEST(error_of([&] { libpipe::load_plugins(other, only({kPlugins + "/twice"})); }) ==
             "layer type 'Twice' is registered twice: by " + kPlugins + "/twice/twice_a.so and by " + kPlugins +
                 "/twice/twice_b.so");
}

BOOST_AUTO_TEST_CASE(missing_directory) {
  libpipe::LayerRegistry registry;
  BOOST_TEST(error_of([&] { libpipe::load_plugins(registry, only({"/no/such/dir"})); }) ==
             "plugin directory '/no/such/dir' does not exist");
}

BOOST_AUTO_TEST_CASE(unknown_type_suggests_the_closest) {
  libpipe::LayerRegistry registry;
  libpipe::load_plugins(registry, only({}, true));
  BOOST_TEST(error_of([&] { registry.get("Linaer"); }) == "unknown layer type 'Linaer' (did you mean 'Linear'?)");
  BOOST_TEST(error_of([&] { registry.get("layernorm"); }) ==
             "unknown layer type 'layernorm' (did you mean 'LayerNorm'?)");
  BOOST_TEST(error_of([&] { registry.get("Convolution3D"); }) == "unknown layer type 'Convolution3D'");
  libpipe::LayerRegistry empty;
  BOOST_TEST(error_of([&] { empty.get("Linear"); }) ==
             "unknown layer type 'Linear'; no layer types are registered (no plugins were loaded)");
}
