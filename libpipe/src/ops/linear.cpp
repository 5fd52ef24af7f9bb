// Linear layers as ops: y = x W^T (+ b), its two backwards and the fused
// linear + GELU of the MLP; GEMMs through Backend::gemm (kernels:
// cpu/cpu_backend.cpp, cuda/cuda_backend.cpp) with the bias epilogues of
// cpu/elementwise.cpp and cuda/elementwise.cu.
#include <string>
#include <vector>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

// ---- linear

namespace {

// x [..., in] against weight [out, in]; returns rows.
std::int64_t check_linear(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  require_float(op, "x", x);
  require_float(op, "weight", weight);
  require_rank(op, "x", x, 1);
  if (weight.shape().size() != 2) throw Error(std::string(op) + ": weight " + type_of(weight) + " is not 2-D");
  const std::int64_t out_f = weight.shape()[0], in_f = weight.shape()[1];
  if (last_dim(x) != in_f)
    throw Error(std::string(op) + ": x " + type_of(x) + " does not match weight " + shape_str(weight.shape()) +
                " (in_features " + std::to_string(in_f) + ")");
  if (bias.defined()) {
    require_float(op, "bias", bias);
    require_vector(op, "bias", bias, out_f, "out_features");
  }
  return rows_of(x);
}

// h = x W^T in float32 (the GEMM's own output type when x is float32, a float32 temporary for the epilogue
// otherwise).
Tensor linear_product(Backend& be, const Tensor& x, const Tensor& weight, std::int64_t rows) {
  const std::int64_t out_f = weight.shape()[0], in_f = weight.shape()[1];
  Tensor h = Tensor::empty(with_last(x.shape(), out_f), DType::float32, x.device());
  be.gemm(false, true, rows, out_f, in_f, 1.0f, in(x), in_f, in(weight), in_f, 0.0f, out(h), out_f);
  return h;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const std::int64_t rows = check_linear("linear", x, weight, bias);
  const std::int64_t out_f = weight.shape()[0], in_f = weight.shape()[1];
  Backend& be = bias.defined() ? backend_of("linear", {{"x", &x}, {"weight", &weight}, {"bias", &bias}})
                               : backend_of("linear", {{"x", &x}, {"weight", &weight}});
  if (!bias.defined()) {  // x W^T, written in x's dtype by the GEMM itself
    Tensor y = Tensor::empty(with_last(x.shape(), out_f), x.dtype(), x.device());
    be.gemm(false, true, rows, out_f, in_f, 1.0f, in(x), in_f, in(weight), in_f, 0.0f, out(y), out_f);
    return y;
  }
  Tensor h = linear_product(be, x, weight, rows);
  if (x.dtype() == DType::float32 && bias.dtype() == DType::float32) {
    be.bias_epilogue(f32(h), in(bias), out(h), rows, out_f);  // in place
    return h;
  }
  Tensor y = Tensor::empty(h.shape(), x.dtype(), x.device());
  be.bias_epilogue(f32(h), in(bias), out(y), rows, out_f);
  return y;
}

Tensor linear_backward_input(const Tensor& dy, const Tensor& weight) {
  const char* op = "linear_backward_input";
  require_float(op, "dy", dy);
  require_float(op, "weight", weight);
  require_rank(op, "dy", dy, 1);
  if (weight.shape().size() != 2) throw Error(std::string(op) + ": weight " + type_of(weight) + " is not 2-D");
  const std::int64_t out_f = weight.shape()[0], in_f = weight.shape()[1];
  if (last_dim(dy) != out_f)
    throw Error(std::string(op) + ": dy " + type_of(dy) + " does not match weight " + shape_str(weight.shape()) +
                " (out_features " + std::to_string(out_f) + ")");
  Backend& be = backend_of(op, {{"dy", &dy}, {"weight", &weight}});
  const std::int64_t rows = rows_of(dy);
  Tensor dx = Tensor::empty(with_last(dy.shape(), in_f), dy.dtype(), dy.device());
  be.gemm(false, false, rows, in_f, out_f, 1.0f, in(dy), out_f, in(weight), in_f, 0.0f, out(dx), in_f);  // dy W
  return dx;
}

void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dweight, Tensor& dbias) {
  const char* op = "linear_backward_weight";
  require_float(op, "dy", dy);
  require_float(op, "x", x);
  require_f32(op, "dweight", dweight);
  require_rank(op, "dy", dy, 1);
  require_rank(op, "x", x, 1);
  if (dweight.shape().size() != 2) throw Error(std::string(op) + ": dweight " + type_of(dweight) + " is not 2-D");
  const std::int64_t out_f = dweight.shape()[0], in_f = dweight.shape()[1];
  if (last_dim(dy) != out_f || last_dim(x) != in_f || rows_of(dy) != rows_of(x))
    throw Error(std::string(op) + ": dy " + type_of(dy) + " and x " + type_of(x) + " do not match dweight " +
                shape_str(dweight.shape()) + " (rows of dy and x must agree; dy [..., " + std::to_string(out_f) +
                "], x [..., " + std::to_string(in_f) + "])");
  if (dbias.defined()) {
    require_f32(op, "dbias", dbias);
    require_vector(op, "dbias", dbias, out_f, "out_features");
  }
  Backend& be = dbias.defined() ? backend_of(op, {{"dy", &dy}, {"x", &x}, {"dweight", &dweight}, {"dbias", &dbias}})
                                : backend_of(op, {{"dy", &dy}, {"x", &x}, {"dweight", &dweight}});
  const std::int64_t rows = rows_of(dy);
  be.gemm(true, false, out_f, in_f, rows, 1.0f, in(dy), out_f, in(x), in_f, 1.0f, out(dweight), in_f);  // += dy^T x
  if (dbias.defined()) be.bias_grad(in(dy), f32(dbias), rows, out_f);
}

Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& pre_activation) {
  const std::int64_t rows = check_linear("linear_gelu", x, weight, bias);
  const std::int64_t out_f = weight.shape()[0];
  Backend& be = bias.defined() ? backend_of("linear_gelu", {{"x", &x}, {"weight", &weight}, {"bias", &bias}})
                               : backend_of("linear_gelu", {{"x", &x}, {"weight", &weight}});
  Tensor h = linear_product(be, x, weight, rows);
  if (!bias.defined()) {
    Tensor y = Tensor::empty(h.shape(), DType::float32, x.device());
    be.gelu_forward(f32(h), f32(y), h.numel());
    pre_activation = to_dtype(h, x.dtype());
    return to_dtype(y, x.dtype());
  }
  Tensor y = Tensor::empty(h.shape(), x.dtype(), x.device());
  if (x.dtype() == DType::float32 && bias.dtype() == DType::float32) {
    be.bias_gelu(f32(h), in(bias), out(h), out(y), rows, out_f);  // h += b; y = gelu(h), one pass
    pre_activation = h;
    return y;
  }
  pre_activation = Tensor::empty(h.shape(), x.dtype(), x.device());
  be.bias_gelu(f32(h), in(bias), out(pre_activation), out(y), rows, out_f);
  return y;
}

}  // namespace libpipe::ops
