// What every tensor-level op does first: check what the caller handed in
// (defined, dtype, one device, shapes) and name the op and the shapes in the
// error. Shared by the op families of this folder (elementwise.cpp,
// linear.cpp, layernorm.cpp, attention.cpp, losses.cpp, embedding.cpp,
// optimizer.cpp), each of which allocates outputs with Tensor::empty on the
// inputs' device and runs the device's Backend, so that one family's checks,
// CPU kernel (cpu/<family>.cpp) and CUDA kernel (cuda/<family>.cu) sit side by
// side under one name. Nothing here touches tensor memory.
//
// Mixed precision: activations and parameters may be float32 or bfloat16. The
// math is float32 throughout and outputs take the dtype of the activation they
// come from. The hot ops hand typed arrays to the backend (Backend::In / Out:
// native bfloat16 kernels on a GPU, float32 kernels on Float32Views on the
// CPU); the rare ones (ReLU, plain GELU, MSE, fill, scale, flash attention)
// widen here. Loss values, LayerNorm statistics and parameter gradients are
// always float32.
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "pipe/backend.hpp"
#include "pipe/error.hpp"
#include "pipe/ops.hpp"

namespace libpipe::ops {

inline std::string type_of(const Tensor& t) { return type_str(TensorType{t.shape(), t.dtype()}); }

inline void require_defined(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) throw Error(std::string(op) + ": " + name + " is an undefined tensor");
}

inline void require_dtype(const char* op, const char* name, const Tensor& t, DType dtype) {
  require_defined(op, name, t);
  if (t.dtype() != dtype)
    throw Error(std::string(op) + ": " + name + " is " + type_of(t) + ", expected " + dtype_name(dtype));
}

inline void require_f32(const char* op, const char* name, const Tensor& t) { require_dtype(op, name, t, DType::float32); }

inline bool is_float(DType d) { return d == DType::float32 || d == DType::bfloat16; }

// float32 or bfloat16 (an activation or parameter under mixed precision).
inline void require_float(const char* op, const char* name, const Tensor& t) {
  require_defined(op, name, t);
  if (!is_float(t.dtype()))
    throw Error(std::string(op) + ": " + name + " is " + type_of(t) + ", expected float32 or bfloat16");
}

// The float32 values of a float32 or bfloat16 tensor: itself, or a widened copy.
inline Tensor wide(const Tensor& t) { return to_dtype(t, DType::float32); }

// A tensor as an input or output of the backend's mixed-precision methods.
inline Backend::In in(const Tensor& t) { return {t.data(), t.dtype()}; }
inline Backend::Out out(Tensor& t) { return {t.data(), t.dtype()}; }

// At least `dims` dimensions; the last one must be non-zero when rows are formed from it.
inline void require_rank(const char* op, const char* name, const Tensor& t, std::size_t dims) {
  if (t.shape().size() < dims)
    throw Error(std::string(op) + ": " + name + " " + type_of(t) + " needs at least " + std::to_string(dims) +
                " dimension" + (dims == 1 ? "" : "s"));
}

// All tensors on the first one's device; returns its backend.
inline Backend& backend_of(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
  const auto& first = *tensors.begin();
  const Device device = first.second->device();
  for (const auto& [name, t] : tensors)
    if (t->device() != device)
      throw Error(std::string(op) + ": " + name + " is on " + device_name(t->device()) + " but " + first.first +
                  " is on " + device_name(device));
  return backend_for(device);
}

inline std::int64_t last_dim(const Tensor& t) { return t.shape().back(); }
inline std::int64_t rows_of(const Tensor& t) {
  const std::int64_t cols = last_dim(t);
  return cols == 0 ? 0 : t.numel() / cols;
}

// shape with its last dimension replaced.
inline Shape with_last(Shape shape, std::int64_t last) {
  shape.back() = last;
  return shape;
}

inline void require_same_shape(const char* op, const char* name_a, const Tensor& a, const char* name_b, const Tensor& b) {
  if (a.shape() != b.shape())
    throw Error(std::string(op) + ": " + name_a + " " + type_of(a) + " and " + name_b + " " + type_of(b) +
                " differ in shape");
}

inline void require_vector(const char* op, const char* name, const Tensor& t, std::int64_t n, const char* what) {
  if (t.shape() != Shape{n})
    throw Error(std::string(op) + ": " + name + " " + type_of(t) + " should be [" + std::to_string(n) + "] (" + what +
                ")");
}

inline float* f32(Tensor& t) { return t.f32(); }
inline const float* f32(const Tensor& t) { return t.f32(); }

}  // namespace libpipe::ops
