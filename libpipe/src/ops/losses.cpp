// Losses as ops: softmax cross-entropy and mean squared error (kernels:
// cpu/losses.cpp, cuda/losses.cu).
#include <string>
#include <vector>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

// ---- losses

namespace {

struct CrossEntropyDims {
  std::int64_t batch, rows, vocab, rows_per_sample;
};

CrossEntropyDims check_cross_entropy(const char* op, const Tensor& logits, const Tensor& labels) {
  require_float(op, "logits", logits);
  require_dtype(op, "labels", labels, DType::int32);
  require_rank(op, "logits", logits, 2);
  const Shape& ls = logits.shape();
  const Shape want(ls.begin(), ls.end() - 1);
  if (labels.shape() != want)
    throw Error(std::string(op) + ": labels " + type_of(labels) + " do not match logits " + type_of(logits) +
                " (expected labels " + shape_str(want) + ")");
  const std::int64_t vocab = ls.back();
  if (vocab <= 0) throw Error(std::string(op) + ": logits " + type_of(logits) + " have no classes");
  const std::int64_t batch = ls[0], rows = labels.numel();
  return {batch, rows, vocab, batch == 0 ? 0 : rows / batch};
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  const CrossEntropyDims d = check_cross_entropy("cross_entropy", logits, labels);
  Backend& be = backend_of("cross_entropy", {{"logits", &logits}, {"labels", &labels}});
  Tensor loss = Tensor::empty({d.batch}, DType::float32, logits.device());
  if (d.rows_per_sample == 0) {  // samples with no rows: the mean over nothing, taken as 0
    be.fill(f32(loss), 0.0f, d.batch);
    return loss;
  }
  be.cross_entropy_forward(in(logits), labels.i32(), f32(loss), d.rows, d.vocab, d.rows_per_sample);
  return loss;
}

Tensor cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss) {
  const char* op = "cross_entropy_backward";
  const CrossEntropyDims d = check_cross_entropy(op, logits, labels);
  require_f32(op, "dloss", dloss);
  require_vector(op, "dloss", dloss, d.batch, "one per sample of logits");
  Backend& be = backend_of(op, {{"logits", &logits}, {"labels", &labels}, {"dloss", &dloss}});
  Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
  if (d.rows_per_sample > 0)
    be.cross_entropy_backward(in(logits), labels.i32(), f32(dloss), out(dlogits), d.rows, d.vocab,
                                    d.rows_per_sample);
  return dlogits;
}

namespace {

std::int64_t check_mse(const char* op, const Tensor& x, const Tensor& target) {
  require_float(op, "x", x);
  require_float(op, "target", target);
  require_rank(op, "x", x, 1);
  require_same_shape(op, "x", x, "target", target);
  return x.shape()[0];
}

}  // namespace

Tensor mse(const Tensor& x, const Tensor& target) {
  const std::int64_t batch = check_mse("mse", x, target);
  Backend& be = backend_of("mse", {{"x", &x}, {"target", &target}});
  Tensor loss = Tensor::empty({batch}, DType::float32, x.device());
  be.mse_forward(f32(wide(x)), f32(wide(target)), f32(loss), batch, batch == 0 ? 0 : x.numel() / batch);
  return loss;
}

Tensor mse_backward(const Tensor& x, const Tensor& target, const Tensor& dloss) {
  const char* op = "mse_backward";
  const std::int64_t batch = check_mse(op, x, target);
  require_f32(op, "dloss", dloss);
  require_vector(op, "dloss", dloss, batch, "one per sample of x");
  Backend& be = backend_of(op, {{"x", &x}, {"target", &target}, {"dloss", &dloss}});
  Tensor dx = Tensor::empty(x.shape(), DType::float32, x.device());
  be.mse_backward(f32(wide(x)), f32(wide(target)), f32(dloss), f32(dx), batch, batch == 0 ? 0 : x.numel() / batch);
  return to_dtype(dx, x.dtype());
}

}  // namespace libpipe::ops
