// A tensor: shape, dtype, device and storage. Storage is reference counted and
// may be owned (allocated here) or borrowed (wrapping memory owned elsewhere).
// The op layer and the CUDA backend build on this; nothing here assumes the CPU
// except the CPU allocator itself.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "pipe/export.hpp"
#include "pipe/shape.hpp"

namespace libpipe {

enum class Device { cpu, cuda };

PIPE_API const char* device_name(Device device);
// Parses "cpu" or "cuda"; throws libpipe::Error otherwise.
PIPE_API Device parse_device(const std::string& name);

class PIPE_API Tensor {
 public:
  Tensor() = default;

  // Allocates zero-filled storage on `device`. Throws libpipe::Error when the
  // device has no backend in this build.
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu);
  // Allocates without initialising (for outputs an op overwrites entirely).
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu);
  // Wraps memory owned by the caller; the caller keeps it alive.
  static Tensor borrow(void* data, const Shape& shape, DType dtype, Device device);

  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  std::int64_t numel() const { return libpipe::numel(shape_); }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr; }
  // The same storage under another shape with the same number of elements
  // (e.g. [B, T, C] as [B*T, C] for a GEMM).
  Tensor view(const Shape& shape) const;
  // Typed device pointers for the backend (no host check: the backend of the
  // tensor's device dereferences them). Throws when the dtype differs.
  float* f32();
  const float* f32() const;
  std::int32_t* i32();
  const std::int32_t* i32() const;
  std::uint16_t* bf16();  // bfloat16 bits (pipe/bfloat16.hpp)
  const std::uint16_t* bf16() const;

  void* data() { return data_.get(); }
  const void* data() const { return data_.get(); }
  // Typed host view; throws if the tensor is not on the CPU or T does not match.
  template <typename T>
  T* host_data() {
    check_host_access(sizeof(T));
    return static_cast<T*>(data_.get());
  }

 private:
  void check_host_access(std::size_t element_size) const;
  void check_dtype(DType expected) const;
  static Tensor allocate(const Shape& shape, DType dtype, Device device, bool zero);

  Shape shape_;
  DType dtype_ = DType::float32;
  Device device_ = Device::cpu;
  std::shared_ptr<void> data_;
};

// Bytes currently allocated by Tensor::zeros and Tensor::empty on each device (for tests and
// reports: a rank must allocate only its own layers).
PIPE_API std::size_t allocated_bytes(Device device);
// The most allocated_bytes(device) has been since the process started: what the tensors needed at once, without
// the allocator's slack or the libraries' own memory.
PIPE_API std::size_t peak_allocated_bytes(Device device);

}  // namespace libpipe
