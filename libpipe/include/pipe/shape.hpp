// Shapes and element types of the activations flowing between layers.
// Shapes are per sample: the batch (micro-batch) dimension is never included.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "pipe/export.hpp"

namespace libpipe {

enum class DType { float32, bfloat16, int32 };

PIPE_API const char* dtype_name(DType dtype);
// Parses "float32", "bfloat16", "int32"; throws libpipe::Error listing the valid names.
PIPE_API DType parse_dtype(const std::string& name);
PIPE_API std::size_t dtype_size(DType dtype);

using Shape = std::vector<std::int64_t>;

// Number of elements (1 for a scalar shape []).
PIPE_API std::int64_t numel(const Shape& shape);
// "[64, 128]"
PIPE_API std::string shape_str(const Shape& shape);

// A shape together with its element type: what one layer hands to the next.
struct TensorType {
  Shape shape;
  DType dtype = DType::float32;
  bool operator==(const TensorType& o) const { return shape == o.shape && dtype == o.dtype; }
  bool operator!=(const TensorType& o) const { return !(*this == o); }
};

// "float32[64, 128]"
PIPE_API std::string type_str(const TensorType& type);

PIPE_API std::ostream& operator<<(std::ostream& out, DType dtype);
PIPE_API std::ostream& operator<<(std::ostream& out, const TensorType& type);

}  // namespace libpipe
