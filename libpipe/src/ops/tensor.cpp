// Tensor storage. The CPU allocator lives here; other devices' memory comes
// from their allocator through device_hooks.hpp.
#include "pipe/tensor.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "ops/device_hooks.hpp"
#include "pipe/error.hpp"

namespace libpipe {
namespace {

std::atomic<std::size_t> g_cpu_bytes{0};
std::atomic<std::size_t> g_cpu_peak{0};

// 64-byte alignment: whole cache lines, and what vector loads want.
std::shared_ptr<void> allocate_cpu(std::size_t bytes, bool zero) {
  std::size_t rounded = ((bytes + 63) / 64) * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  if (zero) std::memset(p, 0, rounded);
  const std::size_t now = g_cpu_bytes += bytes;
  for (std::size_t peak = g_cpu_peak.load(); now > peak && !g_cpu_peak.compare_exchange_weak(peak, now);) {
  }
  return std::shared_ptr<void>(p, [bytes](void* q) {
    g_cpu_bytes -= bytes;
    std::free(q);
  });
}

}  // namespace

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
  t.data_ = device == Device::cpu ? allocate_cpu(t.bytes(), zero)
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
  return device == Device::cpu ? g_cpu_bytes.load() : detail::device_allocated_bytes(device);
}

std::size_t peak_allocated_bytes(Device device) {
  return device == Device::cpu ? g_cpu_peak.load() : detail::device_peak_allocated_bytes(device);
}

}  // namespace libpipe
