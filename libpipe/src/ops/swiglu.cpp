// The swiglu gate as ops (kernels: cpu/swiglu.cpp, cuda/swiglu.cu): the
// gate and up projections come out of one GEMM side by side, [gate, up].
#include <string>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

namespace {

void check_h(const char* op, const Tensor& h) {
  require_float(op, "h", h);
  require_rank(op, "h", h, 1);
  if (last_dim(h) % 2 != 0)
    throw Error(std::string(op) + ": h " + type_of(h) + " should be [..., 2F]: gate and up side by side");
}

}  // namespace

Tensor swiglu(const Tensor& h) {
  const char* op = "swiglu";
  check_h(op, h);
  const std::int64_t cols = last_dim(h) / 2, rows = rows_of(h);
  Backend& be = backend_of(op, {{"h", &h}});
  Tensor y = Tensor::empty(with_last(h.shape(), cols), h.dtype(), h.device());
  be.swiglu_forward(in(h), out(y), rows, cols);
  return y;
}

Tensor swiglu_backward(const Tensor& h, const Tensor& dy) {
  const char* op = "swiglu_backward";
  check_h(op, h);
  require_float(op, "dy", dy);
  const std::int64_t cols = last_dim(h) / 2, rows = rows_of(h);
  if (dy.shape() != with_last(h.shape(), cols))
    throw Error(std::string(op) + ": dy " + type_of(dy) + " should be " + shape_str(with_last(h.shape(), cols)) +
                " for h " + type_of(h));
  Backend& be = backend_of(op, {{"h", &h}, {"dy", &dy}});
  Tensor dh = Tensor::empty(h.shape(), dy.dtype(), h.device());
  be.swiglu_backward(in(h), in(dy), out(dh), rows, cols);
  return dh;
}

}  // namespace libpipe::ops
