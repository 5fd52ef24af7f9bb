// Flag parsing shared by the command-line tools (pipe-plan, pipe-sim,
// pipe-bench): Boost.Program_options with one behaviour everywhere. A bad flag
// is a libpipe::Error "<Boost's message> (see --help)"; --help prints the
// usage line(s) and the flag table.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <string>
#include <vector>

#include "pipe/error.hpp"

namespace pipe_apps {

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
  if (!vm.count("help")) return true;
  std::cout << usage << "\n\n" << flags;
  return false;
}

inline bool parse_flags(int argc, char** argv, const boost::program_options::options_description& flags,
                        const std::string& usage, boost::program_options::variables_map& vm) {
  return parse_flags(std::vector<std::string>(argv + (argc > 0 ? 1 : 0), argv + argc), flags, usage, vm);
}

}  // namespace pipe_apps
