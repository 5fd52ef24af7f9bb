// pipe-train's command line: every flag, its default and its help text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pipe_train {

struct Options {
  bool help = false;
  bool version = false;
  std::string model = "gpt-tiny";
  std::optional<int> stages;          // --stages
  std::optional<int> data_parallel;   // --data-parallel
  std::string topology;               // --topology, "" when not given
  std::string partition_method = "parameters";
  std::vector<std::string> plugin_dirs;
  bool builtin_plugins = true;
  std::uint64_t seed = 1234;
  bool describe = false;
  bool list_layers = false;
  bool dry_run = false;
};

// Parses argv; throws libpipe::Error with a one-line message on bad or conflicting flags.
Options parse_options(int argc, char** argv);
std::string help_text();

}  // namespace pipe_train
