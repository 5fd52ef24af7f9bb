// Model files: a TOML description of a sequential model, parsed into specs
// that know where in the file each layer came from.
//
//   [model]                      name, description, input_shape, input_dtype
//   [[layer]]                    one table per layer, in order:
//   type = "Linear"              a registered layer type
//   in_features = 512            ... its arguments
//   repeat = 4                   optional: the layer appears 4 times in a row
//   tie = "embedding"            optional: layers with one key share weights
#pragma once

#include <string>
#include <vector>

#include "pipe/args.hpp"
#include "pipe/export.hpp"
#include "pipe/shape.hpp"

namespace libpipe {

struct PIPE_API SourceLocation {
  std::string file;
  int line = 0;
  std::string str() const;  // "file:line" (or "file" when the line is unknown)
};

struct LayerSpec {
  std::string type;
  Args args;            // everything but type, repeat and tie
  std::string tie;      // tie key, "" when the layer shares nothing
  SourceLocation where; // the [[layer]] table
};

struct ModelSpec {
  std::string name;
  std::string description;
  std::string source;            // the file it was read from
  TensorType input;              // per sample
  std::vector<LayerSpec> layers; // repeats expanded: index = global layer index
};

// Reads and checks the structure of a model file (not the layer types or
// shapes: describe_model does that against a registry). Errors start with
// file:line (file:line:column for TOML syntax).
PIPE_API ModelSpec load_model_file(const std::string& path);
// Same, from text; `source_name` stands in for the file name in messages.
PIPE_API ModelSpec parse_model(const std::string& text, const std::string& source_name);

}  // namespace libpipe
