// Where libpipe finds its own files. Everything is relative to the directory
// libpipe.so was loaded from, and the build tree mirrors the install tree, so
// the same rule works for a build, an install and a relocated install.
#pragma once

#include <string>
#include <vector>

#include "pipe/export.hpp"

namespace libpipe {

// Directory holding libpipe.so.
PIPE_API std::string library_dir();
// The project's own plugins: <library_dir>/pipe/plugins.
PIPE_API std::string builtin_plugin_dir();
// The shipped models: <prefix>/share/pipe/models.
PIPE_API std::string builtin_model_dir();
// Names of the shipped models ("gpt-tiny", ...), sorted.
PIPE_API std::vector<std::string> builtin_model_names();
// `name_or_path` if it names an existing file, else the shipped model of that
// name (with or without .toml); an error listing the shipped models otherwise.
PIPE_API std::string resolve_model_path(const std::string& name_or_path);

// Before a file is read whole: a directory, FIFO, socket or device at `path` would read for ever or fail
// obscurely, so it is an error "<what>: not a regular file (a FIFO)", with `what` naming the flag or role and the
// path. A missing path passes: the caller's own "cannot open" says that better.
PIPE_API void require_regular_file(const std::string& path, const std::string& what);

}  // namespace libpipe
