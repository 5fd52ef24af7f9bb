// A plugin built against another plugin ABI: its entry point reports ABI 999
// and, as PIPE_PLUGIN's would, registers nothing.
#include <pipe/registry.hpp>

extern "C" __attribute__((visibility("default"))) int pipe_plugin_init(int, libpipe::LayerRegistry*) { return 999; }
