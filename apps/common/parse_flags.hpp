// Flag parsing shared by the command-line tools (pipe-train's empty-path rule,
// pipe-plan, pipe-sim, pipe-bench): Boost.Program_options with one behaviour everywhere. A bad flag
// is a libpipe::Error "<Boost's message> (see --help)"; --help prints the
// usage line(s) and the flag table.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/paths.hpp"

namespace pipe_apps {

// A path flag (its value named FILE, DIR, PATH or FILE|NAME in the flag table) given an empty value is a mistake (an
// unset shell variable), never "unset": "--save needs a path, not an empty one".
inline void refuse_empty_paths(const boost::program_options::options_description& flags,
                               const boost::program_options::variables_map& vm) {
  for (const auto& option : flags.options()) {
    const std::string value_name = option->semantic()->name();
    if (value_name.find("FILE") == std::string::npos && value_name.find("DIR") == std::string::npos &&
        value_name.find("PATH") == std::string::npos)
      continue;
    const std::string name = option->long_name();
    if (!vm.count(name) || vm[name].defaulted()) continue;
    const boost::any& value = vm[name].value();
    bool empty = false;
    if (const auto* one = boost::any_cast<std::string>(&value)) empty = one->empty();
    if (const auto* many = boost::any_cast<std::vector<std::string>>(&value))
      for (const std::string& v : *many) empty = empty || v.empty();
    if (empty) throw libpipe::Error("--" + name + " needs a path, not an empty one");
  }
}

// The shipped models' names for a --model flag's help, read from the install ("none found" where it has none).
inline std::string shipped_models_text() {
  std::string list;
  for (const std::string& name : libpipe::builtin_model_names()) list += (list.empty() ? "" : ", ") + name;
  return list.empty() ? "none found in " + libpipe::builtin_model_dir() : list;
}

// Fills `vm` from `args` (without the program name). Returns false when --help was asked for (and printed).
inline bool parse_flags(const std::vector<std::string>& args, const boost::program_options::options_description& flags,
                        const std::string& usage, boost::program_options::variables_map& vm) {
  namespace po = boost::program_options;
  try {
    po::store(po::command_line_parser(args).options(flags).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw libpipe::Error(std::string(e.what()) + " (see --help)");
  }
  refuse_empty_paths(flags, vm);
  if (!vm.count("help")) return true;
  std::cout << usage << "\n\n" << flags;
  return false;
}

inline bool parse_flags(int argc, char** argv, const boost::program_options::options_description& flags,
                        const std::string& usage, boost::program_options::variables_map& vm) {
  return parse_flags(std::vector<std::string>(argv + (argc > 0 ? 1 : 0), argv + argc), flags, usage, vm);
}

}  // namespace pipe_apps
