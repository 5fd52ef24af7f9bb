#include "ops/float32_views.hpp"

#include <string>

#include "pipe/error.hpp"

namespace libpipe {
namespace {

void require_float(DType t, const char* op) {
  if (t != DType::float32 && t != DType::bfloat16)
    throw Error(std::string(op) + ": arrays must be float32 or bfloat16, not " + dtype_name(t));
}

}  // namespace

const float* Float32Views::in(Backend::In x, std::int64_t n) {
  require_float(x.dtype, op_);
  if (x.dtype == DType::float32) return static_cast<const float*>(x.data);
  Tensor wide = Tensor::empty({n}, DType::float32, backend_.device());
  backend_.from_bf16(static_cast<const std::uint16_t*>(x.data), wide.f32(), n);
  inputs_.push_back(std::move(wide));
  return inputs_.back().f32();
}

float* Float32Views::out(Backend::Out y, std::int64_t n) {
  require_float(y.dtype, op_);
  if (y.dtype == DType::float32) return static_cast<float*>(y.data);
  outputs_.push_back({Tensor::empty({n}, DType::float32, backend_.device()), y, n});
  return outputs_.back().wide.f32();
}

float* Float32Views::in_out(Backend::Out y, std::int64_t n) {
  float* wide = out(y, n);
  if (y.dtype == DType::bfloat16) backend_.from_bf16(static_cast<const std::uint16_t*>(y.data), wide, n);
  return wide;
}

void Float32Views::finish() {
  for (Pending& p : outputs_) backend_.to_bf16(p.wide.f32(), static_cast<std::uint16_t*>(p.target.data), p.n);
  outputs_.clear();
}

}  // namespace libpipe
