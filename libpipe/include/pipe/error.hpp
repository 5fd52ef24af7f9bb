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

// A failure that every rank of the job learns of at the same point (a collective step agreed on it, as a
// checkpoint save does): the rank that met the cause throws it with its message, every other rank with
// cause_elsewhere() set. The cause is then printed once, and the job ends through MPI_Finalize and a non-zero exit
// rather than MPI_Abort.
class PIPE_API JobError : public Error {
 public:
  explicit JobError(const std::string& message, bool cause_elsewhere = false)
      : Error(message), cause_elsewhere_(cause_elsewhere) {}
  bool cause_elsewhere() const { return cause_elsewhere_; }

 private:
  bool cause_elsewhere_;
};

}  // namespace libpipe
