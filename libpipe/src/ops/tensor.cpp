// Tensor storage: host memory from the CPU allocator (ops/cpu/cpu_allocator.hpp), other devices' memory from
// their allocator through device_hooks.hpp.
#include "pipe/tensor.hpp"

#include "ops/cpu/cpu_allocator.hpp"
#include "ops/device_hooks.hpp"
#include "pipe/error.hpp"

namespace libpipe {

const char* device_name(Device device) { return device == Device::cpu ? "cpu" : "cuda"; }

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") return Device::cuda;
  throw Error("unknown device '" + name + "' (expected cpu or cuda)");
}

Tensor Tensor::allocate(const Shape& shape, DType dtype, Device device, bool zero) {
  for (auto d : shape)
    if (d < 0) throw Error("negative dimension in tensor shape " + shape_str(shape));
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.data_ = device == Device::cpu ? cpu::allocate_host(t.bytes(), zero)
                                  : detail::allocate_device_memory(device, t.bytes(), zero);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return allocate(shape, dtype, device, true); }
Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) { return allocate(shape, dtype, device, false); }

Tensor Tensor::view(const Shape& shape) const {
  if (libpipe::numel(shape) != numel())
    throw Error("cannot view a tensor of shape " + shape_str(shape_) + " as " + shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

void Tensor::check_dtype(DType expected) const {
  if (dtype_ != expected)
    throw Error(std::string("a ") + dtype_name(dtype_) + " tensor used as " + dtype_name(expected));
}

float* Tensor::f32() {
  check_dtype(DType::float32);
  return static_cast<float*>(data_.get());
}
const float* Tensor::f32() const {
  check_dtype(DType::float32);
  return static_cast<const float*>(data_.get());
}
std::int32_t* Tensor::i32() {
  check_dtype(DType::int32);
  return static_cast<std::int32_t*>(data_.get());
}
const std::int32_t* Tensor::i32() const {
  check_dtype(DType::int32);
  return static_cast<const std::int32_t*>(data_.get());
}

std::uint16_t* Tensor::bf16() {
  check_dtype(DType::bfloat16);
  return static_cast<std::uint16_t*>(data_.get());
}
const std::uint16_t* Tensor::bf16() const {
  check_dtype(DType::bfloat16);
  return static_cast<const std::uint16_t*>(data_.get());
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.data_ = std::shared_ptr<void>(data, [](void*) {});
  return t;
}

void Tensor::check_host_access(std::size_t element_size) const {
  if (device_ != Device::cpu)
    throw Error(std::string("host access to a tensor on device '") + device_name(device_) + "'");
  if (element_size != dtype_size(dtype_))
    throw Error(std::string("host access with the wrong element size to a ") + dtype_name(dtype_) + " tensor");
}

std::size_t allocated_bytes(Device device) {
  return device == Device::cpu ? cpu::host_memory_stats().in_use : detail::device_allocated_bytes(device);
}

std::size_t peak_allocated_bytes(Device device) {
  return device == Device::cpu ? cpu::host_memory_stats().peak : detail::device_peak_allocated_bytes(device);
}

}  // namespace libpipe
