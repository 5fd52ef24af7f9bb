// LayerNorm as ops (kernels: cpu/layernorm.cpp, cuda/layernorm.cu).
#include <string>
#include <vector>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

// ---- LayerNorm

namespace {

void check_layernorm_x(const char* op, const Tensor& x) {
  require_float(op, "x", x);
  require_rank(op, "x", x, 1);
  if (last_dim(x) == 0) throw Error(std::string(op) + ": x " + type_of(x) + " has an empty last dimension");
}

void check_stats(const char* op, const Tensor& x, const Tensor& mean, const Tensor& rstd) {
  require_f32(op, "mean", mean);
  require_f32(op, "rstd", rstd);
  const std::int64_t rows = rows_of(x);
  if (mean.numel() != rows || rstd.numel() != rows)
    throw Error(std::string(op) + ": mean " + type_of(mean) + " and rstd " + type_of(rstd) + " should have " +
                std::to_string(rows) + " elements, one per row of x " + type_of(x));
}

}  // namespace

Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, Tensor& mean, Tensor& rstd) {
  const char* op = "layernorm";
  check_layernorm_x(op, x);
  const std::int64_t cols = last_dim(x), rows = rows_of(x);
  require_float(op, "weight", weight);
  require_float(op, "bias", bias);
  require_vector(op, "weight", weight, cols, "the last dimension of x");
  require_vector(op, "bias", bias, cols, "the last dimension of x");
  Backend& be = backend_of(op, {{"x", &x}, {"weight", &weight}, {"bias", &bias}});
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  mean = Tensor::empty({rows}, DType::float32, x.device());
  rstd = Tensor::empty({rows}, DType::float32, x.device());
  be.layernorm_forward(in(x), in(weight), in(bias), out(y), f32(mean), f32(rstd), rows, cols, eps);
  return y;
}

Tensor layernorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                const Tensor& rstd) {
  const char* op = "layernorm_backward_input";
  check_layernorm_x(op, x);
  require_float(op, "dy", dy);
  require_same_shape(op, "dy", dy, "x", x);
  const std::int64_t cols = last_dim(x), rows = rows_of(x);
  require_float(op, "weight", weight);
  require_vector(op, "weight", weight, cols, "the last dimension of x");
  check_stats(op, x, mean, rstd);
  Backend& be = backend_of(op, {{"dy", &dy}, {"x", &x}, {"weight", &weight}, {"mean", &mean}, {"rstd", &rstd}});
  Tensor dx = Tensor::empty(x.shape(), dy.dtype(), x.device());
  be.layernorm_backward_input(in(dy), in(x), in(weight), f32(mean), f32(rstd), out(dx), rows, cols);
  return dx;
}

void layernorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                               Tensor& dweight, Tensor& dbias) {
  const char* op = "layernorm_backward_weight";
  check_layernorm_x(op, x);
  require_float(op, "dy", dy);
  require_same_shape(op, "dy", dy, "x", x);
  const std::int64_t cols = last_dim(x), rows = rows_of(x);
  check_stats(op, x, mean, rstd);
  require_f32(op, "dweight", dweight);
  require_f32(op, "dbias", dbias);
  require_vector(op, "dweight", dweight, cols, "the last dimension of x");
  require_vector(op, "dbias", dbias, cols, "the last dimension of x");
  Backend& be = backend_of(
      op, {{"dy", &dy}, {"x", &x}, {"mean", &mean}, {"rstd", &rstd}, {"dweight", &dweight}, {"dbias", &dbias}});
  be.layernorm_backward_weight(in(dy), in(x), f32(mean), f32(rstd), f32(dweight), f32(dbias), rows, cols);
}

}  // namespace libpipe::ops
