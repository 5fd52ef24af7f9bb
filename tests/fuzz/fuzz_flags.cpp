// Fuzz target: pipe-train's flag parser (apps/pipe-train/options.cpp,
// compiled into this fuzzer). The input is a command line, optionally
// followed by a --config file:
//
//   --stages 2 --steps 5 --config @CONFIG     argv words, split on NUL or whitespace
//   %%                                        a line of its own: the rest is the file
//   micro-batches = 4                         written to a private file that the
//                                             word @CONFIG names
//
// A libpipe::Error (parse_options' documented answer to bad or conflicting
// flags) is a normal outcome; anything else escaping, a crash, a leak or a
// sanitizer report is a finding.
//
// --config opens whatever path it is given. Words holding '/' are skipped so
// that the fuzzer cannot reach /dev/stdin, a FIFO or a huge file and stall
// (that would be a finding about this harness, not the parser); the one file
// it can name is its own, through @CONFIG.
#include <unistd.h>

#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "options.hpp"
#include "pipe/error.hpp"

namespace {

const std::string kConfigToken = "@CONFIG";
const std::string kConfigSeparator = "\n%%\n";
std::string config_path;  // absolute, in a directory of our own

bool is_separator(char c) { return c == '\0' || std::isspace(static_cast<unsigned char>(c)); }

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  for (char c : text) {
    if (is_separator(c)) {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) words.push_back(std::move(word));
  return words;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/fuzz_flags.XXXXXX";
  if (!::mkdtemp(dir.data())) {
    std::perror("fuzz_flags: mkdtemp");
    std::abort();
  }
  config_path = dir + "/fuzz.cfg";
  // Removed when the fuzzer exits normally; a crashed run leaves a directory
  // of one small file behind.
  std::atexit([] {
    ::unlink(config_path.c_str());
    ::rmdir(config_path.substr(0, config_path.rfind('/')).c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  const std::size_t split = input.find(kConfigSeparator);
  if (split != std::string::npos) {
    std::ofstream(config_path, std::ios::binary | std::ios::trunc) << input.substr(split + kConfigSeparator.size());
    input.resize(split);
  } else {
    ::unlink(config_path.c_str());
  }

  std::vector<std::string> words = split_words(input);
  for (const auto& w : words)
    if (w.find('/') != std::string::npos) return 0;
  for (auto& w : words) replace_all(w, kConfigToken, config_path);

  // argv as main() gets it: argv[0], the words, and a terminating null.
  words.insert(words.begin(), "pipe-train");
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  try {
    (void)pipe_train::parse_options(static_cast<int>(words.size()), argv.data());
  } catch (const libpipe::Error&) {
    // The documented outcome for bad flags.
  }
  return 0;
}
