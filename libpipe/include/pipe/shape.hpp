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

// A count of elements, FLOPs or bytes whose + and * throw libpipe::Error
// instead of overflowing int64. Every size a layer factory's describe computes
// with comes from a model file, so an absurd one must be an error naming the
// layer, not undefined behaviour (found by fuzzing): start each product with a
// Count, e.g. Count(6) * rows * in * out, and take .value() at the end.
class Count {
 public:
  constexpr Count(std::int64_t v = 0) noexcept : v_(v) {}  // implicit, so that 2 * count works
  constexpr std::int64_t value() const noexcept { return v_; }
  Count& operator+=(Count b);

 private:
  std::int64_t v_;
};
PIPE_API Count operator+(Count a, Count b);
PIPE_API Count operator*(Count a, Count b);
inline Count& Count::operator+=(Count b) { return *this = *this + b; }

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
