// Errors inside libpipe are exceptions carrying the full context of what went
// wrong and where; the apps catch them and print one line per job.
#pragma once

#include <stdexcept>
#include <string>

#include "pipe/export.hpp"

namespace libpipe {

// Any error libpipe reports: bad input, bad plugin, bad topology, ...
// what() is a complete, user-facing sentence.
class PIPE_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A layer was handed an input shape or dtype it cannot take. Thrown by
// LayerFactory::describe; the model describer turns it into a message that
// names both layers of the broken link and both shapes.
class PIPE_API ShapeError : public Error {
 public:
  explicit ShapeError(const std::string& expected)
      : Error("expects input " + expected), expected_(expected) {}
  // What the layer expected, e.g. "float32[*, 512]".
  const std::string& expected() const { return expected_; }

 private:
  std::string expected_;
};

}  // namespace libpipe
