// Helpers the unit tests share.
#pragma once

#include <string>

#include "pipe/error.hpp"

namespace pipe_test {

// The message of the libpipe::Error that f() throws, or "(no error)" when it returns normally (any other
// exception escapes and fails the test case).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const libpipe::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace pipe_test
