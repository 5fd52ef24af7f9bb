// Whole small files read and written by the tools (profiles, schedules, traces, config.json, model files).
// Errors are one line: what was being read (a flag and its path) and why it failed.
#pragma once

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "pipe/error.hpp"
#include "pipe/paths.hpp"

namespace pipe_apps {

// The file's bytes; `what` names it in errors ("--profile run.json"). Only regular files are read.
inline std::string read_text_file(const std::string& path, const std::string& what) {
  libpipe::require_regular_file(path, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw libpipe::Error(what + ": cannot read the file: " + std::strerror(errno));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void write_text_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  if (out) out << text;
  if (!out) throw libpipe::Error("cannot write " + path + ": " + std::strerror(errno));
}

}  // namespace pipe_apps
