// Root-mean-square norm as ops (kernels: cpu/rmsnorm.cpp, cuda/rmsnorm.cu).
#include <string>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

namespace {

void check_rms_x(const char* op, const Tensor& x) {
  require_float(op, "x", x);
  require_rank(op, "x", x, 1);
  if (last_dim(x) == 0) throw Error(std::string(op) + ": x " + type_of(x) + " has an empty last dimension");
}

void check_rstd(const char* op, const Tensor& x, const Tensor& rstd) {
  require_f32(op, "rstd", rstd);
  if (rstd.numel() != rows_of(x))
    throw Error(std::string(op) + ": rstd " + type_of(rstd) + " should have " + std::to_string(rows_of(x)) +
                " elements, one per row of x " + type_of(x));
}

}  // namespace

Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& rstd) {
  const char* op = "rms_norm";
  check_rms_x(op, x);
  const std::int64_t cols = last_dim(x), rows = rows_of(x);
  require_float(op, "weight", weight);
  require_vector(op, "weight", weight, cols, "the last dimension of x");
  if (!(eps > 0.0f)) throw Error(std::string(op) + ": eps must be positive, not " + std::to_string(eps));
  Backend& be = backend_of(op, {{"x", &x}, {"weight", &weight}});
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  rstd = Tensor::empty({rows}, DType::float32, x.device());
  be.rms_norm_forward(in(x), in(weight), out(y), f32(rstd), rows, cols, eps);
  return y;
}

Tensor rms_norm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd) {
  const char* op = "rms_norm_backward_input";
  check_rms_x(op, x);
  require_float(op, "dy", dy);
  require_same_shape(op, "dy", dy, "x", x);
  const std::int64_t cols = last_dim(x), rows = rows_of(x);
  require_float(op, "weight", weight);
  require_vector(op, "weight", weight, cols, "the last dimension of x");
  check_rstd(op, x, rstd);
  Backend& be = backend_of(op, {{"dy", &dy}, {"x", &x}, {"weight", &weight}, {"rstd", &rstd}});
  Tensor dx = Tensor::empty(x.shape(), dy.dtype(), x.device());
  be.rms_norm_backward_input(in(dy), in(x), in(weight), f32(rstd), out(dx), rows, cols);
  return dx;
}

void rms_norm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& dweight) {
  const char* op = "rms_norm_backward_weight";
  check_rms_x(op, x);
  require_float(op, "dy", dy);
  require_same_shape(op, "dy", dy, "x", x);
  const std::int64_t cols = last_dim(x), rows = rows_of(x);
  check_rstd(op, x, rstd);
  require_f32(op, "dweight", dweight);
  require_vector(op, "dweight", dweight, cols, "the last dimension of x");
  Backend& be = backend_of(op, {{"dy", &dy}, {"x", &x}, {"rstd", &rstd}, {"dweight", &dweight}});
  be.rms_norm_backward_weight(in(dy), in(x), f32(rstd), f32(dweight), rows, cols);
}

}  // namespace libpipe::ops
