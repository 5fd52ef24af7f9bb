// Element types and per-sample shapes.
#include "pipe/shape.hpp"

#include <ostream>

#include "pipe/error.hpp"

namespace libpipe {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::bfloat16: return "bfloat16";
    case DType::int32: return "int32";
  }
  return "?";
}

DType parse_dtype(const std::string& name) {
  for (DType d : {DType::float32, DType::bfloat16, DType::int32})
    if (name == dtype_name(d)) return d;
  throw Error("unknown dtype '" + name + "' (expected float32, bfloat16 or int32)");
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::bfloat16: return 2;
    case DType::int32: return 4;
  }
  return 0;
}

std::int64_t numel(const Shape& shape) {
  // Sizes come from model files: an absurd one must be an error, not a wrap
  // to a small number that later under-allocates (found by fuzzing).
  constexpr std::int64_t kMaxElements = std::int64_t{1} << 50;
  std::int64_t n = 1;
  for (auto d : shape) {
    if (d < 0 || (d > 0 && n > kMaxElements / d))
      throw Error("shape " + shape_str(shape) + " is too large (more than 2^50 elements) or negative");
    n *= d;
  }
  return n;
}

namespace {
[[noreturn]] void count_overflow() {
  throw Error("its sizes are too large: a count of elements, FLOPs or bytes overflows 64 bits");
}
}  // namespace

Count operator+(Count a, Count b) {
  std::int64_t r = 0;
  if (__builtin_add_overflow(a.value(), b.value(), &r)) count_overflow();
  return r;
}

Count operator*(Count a, Count b) {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a.value(), b.value(), &r)) count_overflow();
  return r;
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string type_str(const TensorType& type) { return dtype_name(type.dtype) + shape_str(type.shape); }

std::ostream& operator<<(std::ostream& out, DType dtype) { return out << dtype_name(dtype); }
std::ostream& operator<<(std::ostream& out, const TensorType& type) { return out << type_str(type); }

}  // namespace libpipe
