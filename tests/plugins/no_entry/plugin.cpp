// A shared object that forgot PIPE_PLUGIN: it has no pipe_plugin_init.
extern "C" __attribute__((visibility("default"))) int some_other_function() { return 42; }
