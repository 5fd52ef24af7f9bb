// Tensor-level basics and activations: fill, scale, add, accumulate, dtype
// and device conversions, sums of squares, ReLU and GELU (checks: op_checks.hpp;
// kernels: cpu/elementwise.cpp, cuda/elementwise.cu).
#include <string>
#include <vector>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

// ---- basics

void fill(Tensor& t, float value) {
  require_float("fill", "t", t);
  Backend& be = backend_of("fill", {{"t", &t}});
  if (t.dtype() == DType::float32) return be.fill(f32(t), value, t.numel());
  Tensor w = Tensor::empty(t.shape(), DType::float32, t.device());
  be.fill(f32(w), value, t.numel());
  convert_into(t, w);
}

void scale(Tensor& t, float factor) {
  require_float("scale", "t", t);
  Backend& be = backend_of("scale", {{"t", &t}});
  if (t.dtype() == DType::float32) return be.scale(f32(t), factor, t.numel());
  Tensor w = wide(t);
  be.scale(f32(w), factor, t.numel());
  convert_into(t, w);
}

Tensor add(const Tensor& a, const Tensor& b) {
  require_float("add", "a", a);
  require_float("add", "b", b);
  require_same_shape("add", "a", a, "b", b);
  Backend& be = backend_of("add", {{"a", &a}, {"b", &b}});
  Tensor y = Tensor::empty(a.shape(), a.dtype(), a.device());
  be.add(in(a), in(b), out(y), a.numel());
  return y;
}

void accumulate(Tensor& y, const Tensor& x) {
  require_float("accumulate", "y", y);
  require_float("accumulate", "x", x);
  if (y.numel() != x.numel())
    throw Error("accumulate: y " + type_of(y) + " and x " + type_of(x) + " differ in number of elements");
  backend_of("accumulate", {{"y", &y}, {"x", &x}}).accumulate(out(y), in(x), y.numel());
}

Tensor to_dtype(const Tensor& t, DType dtype) {
  require_defined("to_dtype", "t", t);
  if (t.dtype() == dtype) return t;
  Tensor out = Tensor::empty(t.shape(), dtype, t.device());
  convert_into(out, t);
  return out;
}

void convert_into(Tensor& dst, const Tensor& src) {
  require_float("convert_into", "dst", dst);
  require_float("convert_into", "src", src);
  if (dst.numel() != src.numel())
    throw Error("convert_into: dst " + type_of(dst) + " and src " + type_of(src) + " differ in number of elements");
  Backend& be = backend_of("convert_into", {{"dst", &dst}, {"src", &src}});
  const std::int64_t n = src.numel();
  if (src.dtype() == DType::float32 && dst.dtype() == DType::float32) {
    be.copy(f32(dst), f32(src), n);
  } else if (src.dtype() == dst.dtype()) {  // bfloat16 to bfloat16, exactly, through float32
    Tensor w = Tensor::empty(src.shape(), DType::float32, src.device());
    be.from_bf16(src.bf16(), f32(w), n);
    be.to_bf16(f32(w), dst.bf16(), n);
  } else if (dst.dtype() == DType::bfloat16) {
    be.to_bf16(f32(src), dst.bf16(), n);
  } else {
    be.from_bf16(src.bf16(), f32(dst), n);
  }
}

Tensor clone(const Tensor& t) {
  require_defined("clone", "t", t);
  Backend& be = backend_of("clone", {{"t", &t}});
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  // A device-to-device copy of raw bytes, in 4-byte words (allocations are rounded up to whole words).
  const auto words = static_cast<std::int64_t>((t.bytes() + sizeof(float) - 1) / sizeof(float));
  be.copy(static_cast<float*>(out.data()), static_cast<const float*>(t.data()), words);
  return out;
}

Tensor to_device(const Tensor& t, Device device) {
  if (t.device() == device) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), device);
  if (device == Device::cpu)
    backend_for(t.device()).copy_to_host(out.data(), t.data(), t.bytes());
  else if (t.device() == Device::cpu)
    backend_for(device).copy_from_host(out.data(), t.data(), t.bytes());
  else
    throw Error(std::string("to_device: no copy from ") + device_name(t.device()) + " to " + device_name(device));
  return out;
}

double sum_squares(const Tensor& t) {
  require_f32("sum_squares", "t", t);
  return backend_of("sum_squares", {{"t", &t}}).sum_squares(f32(t), t.numel());
}

std::vector<double> sum_squares_each(const std::vector<const Tensor*>& ts) {
  std::vector<double> out(ts.size(), 0.0);
  if (ts.empty()) return out;
  std::vector<const float*> x;
  std::vector<std::int64_t> n;
  for (const Tensor* t : ts) {
    require_f32("sum_squares_each", "t", *t);
    if (t->device() != ts[0]->device())
      throw Error(std::string("sum_squares_each: tensors on ") + device_name(ts[0]->device()) + " and " +
                  device_name(t->device()));
    x.push_back(f32(*t));
    n.push_back(t->numel());
  }
  backend_for(ts[0]->device()).sum_squares_each(x.data(), n.data(), static_cast<int>(ts.size()), out.data());
  return out;
}

// ---- activations

Tensor relu(const Tensor& x) {
  require_float("relu", "x", x);
  Backend& be = backend_of("relu", {{"x", &x}});
  Tensor y = Tensor::empty(x.shape(), DType::float32, x.device());
  be.relu_forward(f32(wide(x)), f32(y), x.numel());
  return to_dtype(y, x.dtype());
}

Tensor relu_backward(const Tensor& x, const Tensor& dy) {
  require_float("relu_backward", "x", x);
  require_float("relu_backward", "dy", dy);
  require_same_shape("relu_backward", "x", x, "dy", dy);
  Backend& be = backend_of("relu_backward", {{"x", &x}, {"dy", &dy}});
  Tensor dx = Tensor::empty(x.shape(), DType::float32, x.device());
  be.relu_backward(f32(wide(x)), f32(wide(dy)), f32(dx), x.numel());
  return to_dtype(dx, dy.dtype());
}

Tensor gelu(const Tensor& x) {
  require_float("gelu", "x", x);
  Backend& be = backend_of("gelu", {{"x", &x}});
  Tensor y = Tensor::empty(x.shape(), DType::float32, x.device());
  be.gelu_forward(f32(wide(x)), f32(y), x.numel());
  return to_dtype(y, x.dtype());
}

Tensor gelu_backward(const Tensor& x, const Tensor& dy) {
  require_float("gelu_backward", "x", x);
  require_float("gelu_backward", "dy", dy);
  require_same_shape("gelu_backward", "x", x, "dy", dy);
  Backend& be = backend_of("gelu_backward", {{"x", &x}, {"dy", &dy}});
  Tensor dx = Tensor::empty(x.shape(), dy.dtype(), x.device());
  be.gelu_backward(in(x), in(dy), out(dx), x.numel());
  return dx;
}

}  // namespace libpipe::ops
