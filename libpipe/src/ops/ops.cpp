// Tensor-level ops: check what the caller handed in (defined, dtype, one
// device, shapes), allocate outputs with Tensor::empty on that device, and run
// the device's Backend. Nothing here touches tensor memory, so the same code
// serves every device. Errors name the op and the shapes involved.
//
// Mixed precision: activations and parameters may be float32 or bfloat16. The
// math is float32 throughout and outputs take the dtype of the activation they
// come from. GEMMs take bfloat16 operands (Backend::gemm_typed, fp32
// accumulation); the hot ops go through the backend's mixed-precision methods
// (Backend::*_typed: native bfloat16 kernels on a GPU, widening on the CPU);
// the rare ones (ReLU, plain GELU, MSE, fill, scale, flash attention) widen
// here. Loss values, LayerNorm statistics and parameter gradients are always
// float32.
#include "pipe/ops.hpp"

#include <initializer_list>
#include <string>

#include "pipe/error.hpp"

namespace libpipe::ops {
namespace {

std::string type_of(const Tensor& t) { return type_str(TensorType{t.shape(), t.dtype()}); }

void require_defined(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) throw Error(std::string(op) + ": " + name + " is an undefined tensor");
}

void require_dtype(const char* op, const char* name, const Tensor& t, DType dtype) {
  require_defined(op, name, t);
  if (t.dtype() != dtype)
    throw Error(std::string(op) + ": " + name + " is " + type_of(t) + ", expected " + dtype_name(dtype));
}

void require_f32(const char* op, const char* name, const Tensor& t) { require_dtype(op, name, t, DType::float32); }

bool is_float(DType d) { return d == DType::float32 || d == DType::bfloat16; }

// float32 or bfloat16 (an activation or parameter under mixed precision).
void require_float(const char* op, const char* name, const Tensor& t) {
  require_defined(op, name, t);
  if (!is_float(t.dtype()))
    throw Error(std::string(op) + ": " + name + " is " + type_of(t) + ", expected float32 or bfloat16");
}

// The float32 values of a float32 or bfloat16 tensor: itself, or a widened copy.
Tensor wide(const Tensor& t) { return to_dtype(t, DType::float32); }

// A tensor as an input or output of the backend's mixed-precision methods.
Backend::In in(const Tensor& t) { return {t.data(), t.dtype()}; }
Backend::Out out(Tensor& t) { return {t.data(), t.dtype()}; }

// At least `dims` dimensions; the last one must be non-zero when rows are formed from it.
void require_rank(const char* op, const char* name, const Tensor& t, std::size_t dims) {
  if (t.shape().size() < dims)
    throw Error(std::string(op) + ": " + name + " " + type_of(t) + " needs at least " + std::to_string(dims) +
                " dimension" + (dims == 1 ? "" : "s"));
}

// All tensors on the first one's device; returns its backend.
Backend& backend_of(const char* op, std::initializer_list<std::pair<const char*, const Tensor*>> tensors) {
  const auto& first = *tensors.begin();
  const Device device = first.second->device();
  for (const auto& [name, t] : tensors)
    if (t->device() != device)
      throw Error(std::string(op) + ": " + name + " is on " + device_name(t->device()) + " but " + first.first +
                  " is on " + device_name(device));
  return backend_for(device);
}

std::int64_t last_dim(const Tensor& t) { return t.shape().back(); }
std::int64_t rows_of(const Tensor& t) {
  const std::int64_t cols = last_dim(t);
  return cols == 0 ? 0 : t.numel() / cols;
}

// shape with its last dimension replaced.
Shape with_last(Shape shape, std::int64_t last) {
  shape.back() = last;
  return shape;
}

void require_same_shape(const char* op, const char* name_a, const Tensor& a, const char* name_b, const Tensor& b) {
  if (a.shape() != b.shape())
    throw Error(std::string(op) + ": " + name_a + " " + type_of(a) + " and " + name_b + " " + type_of(b) +
                " differ in shape");
}

void require_vector(const char* op, const char* name, const Tensor& t, std::int64_t n, const char* what) {
  if (t.shape() != Shape{n})
    throw Error(std::string(op) + ": " + name + " " + type_of(t) + " should be [" + std::to_string(n) + "] (" + what +
                ")");
}

float* f32(Tensor& t) { return t.f32(); }
const float* f32(const Tensor& t) { return t.f32(); }

}  // namespace

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
  be.gemm_typed(false, true, rows, out_f, in_f, 1.0f, x.data(), x.dtype(), in_f, weight.data(), weight.dtype(), in_f,
                0.0f, h.data(), DType::float32, out_f);
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
    be.gemm_typed(false, true, rows, out_f, in_f, 1.0f, x.data(), x.dtype(), in_f, weight.data(), weight.dtype(), in_f,
                  0.0f, y.data(), y.dtype(), out_f);
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
  be.gemm_typed(false, false, rows, in_f, out_f, 1.0f, dy.data(), dy.dtype(), out_f, weight.data(), weight.dtype(),
                in_f, 0.0f, dx.data(), dx.dtype(), in_f);  // dy W
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
  be.gemm_typed(true, false, out_f, in_f, rows, 1.0f, dy.data(), dy.dtype(), out_f, x.data(), x.dtype(), in_f, 1.0f,
                dweight.data(), DType::float32, in_f);  // += dy^T x
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

// ---- attention

namespace {

struct AttentionDims {
  std::int64_t batch, seq, heads, head_dim;
};

AttentionDims check_qkv(const char* op, const Tensor& qkv, std::int64_t heads) {
  require_float(op, "qkv", qkv);
  if (qkv.shape().size() != 3) throw Error(std::string(op) + ": qkv " + type_of(qkv) + " should be [B, T, 3C]");
  const std::int64_t three_c = qkv.shape()[2];
  if (heads <= 0 || three_c % 3 != 0 || (three_c / 3) % heads != 0 || three_c == 0)
    throw Error(std::string(op) + ": qkv " + type_of(qkv) + " with " + std::to_string(heads) +
                " heads: the last dimension must be 3C with C a positive multiple of heads");
  return {qkv.shape()[0], qkv.shape()[1], heads, three_c / 3 / heads};
}

// What attention saved for backward: the probabilities [B, H, T, T], or, from the flash path, each row's output
// and log-sum-exp [B H, T, D + 1] (float32). Returns true for the flash state.
bool check_probs(const char* op, const Tensor& probs, const AttentionDims& d) {
  require_float(op, "probs", probs);
  const Shape want{d.batch, d.heads, d.seq, d.seq};
  const Shape flash{d.batch * d.heads, d.seq, d.head_dim + 1};
  if (probs.shape() == flash && probs.dtype() == DType::float32) return true;
  if (probs.shape() != want)
    throw Error(std::string(op) + ": probs " + type_of(probs) + " should be " + shape_str(want) +
                " [B, H, T, T] (or, saved by flash attention, float32" + shape_str(flash) + ")");
  return false;
}

}  // namespace

Tensor attention(const Tensor& qkv, std::int64_t heads, Tensor& probs) {
  const AttentionDims d = check_qkv("attention", qkv, heads);
  Backend& be = backend_of("attention", {{"qkv", &qkv}});
  const std::int64_t C = d.heads * d.head_dim;
  if (be.flash_attention_pays(d.seq, d.head_dim)) {  // long sequences: no T x T matrix
    Tensor o = Tensor::empty({d.batch, d.seq, C}, DType::float32, qkv.device());
    probs = Tensor::empty({d.batch * d.heads, d.seq, d.head_dim + 1}, DType::float32, qkv.device());
    be.flash_attention_forward(f32(wide(qkv)), f32(o), f32(probs), d.batch, d.seq, d.heads, d.head_dim);
    return to_dtype(o, qkv.dtype());
  }
  // The probabilities are kept for backward in the activations' dtype.
  Tensor y = Tensor::empty({d.batch, d.seq, C}, qkv.dtype(), qkv.device());
  probs = Tensor::empty({d.batch, d.heads, d.seq, d.seq}, qkv.dtype(), qkv.device());
  be.attention_forward(in(qkv), out(y), out(probs), d.batch, d.seq, d.heads, d.head_dim);
  return y;
}

Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs, std::int64_t heads) {
  const char* op = "attention_backward";
  const AttentionDims d = check_qkv(op, qkv, heads);
  const bool flash = check_probs(op, probs, d);
  require_float(op, "dout", dout);
  const Shape want{d.batch, d.seq, d.heads * d.head_dim};
  if (dout.shape() != want)
    throw Error(std::string(op) + ": dout " + type_of(dout) + " should be " + shape_str(want) + " for qkv " +
                type_of(qkv));
  Backend& be = backend_of(op, {{"dout", &dout}, {"qkv", &qkv}, {"probs", &probs}});
  if (flash) {
    Tensor dqkv = Tensor::empty(qkv.shape(), DType::float32, qkv.device());
    be.flash_attention_backward(f32(wide(dout)), f32(wide(qkv)), f32(probs), f32(dqkv), d.batch, d.seq, d.heads,
                                d.head_dim);
    return to_dtype(dqkv, dout.dtype());
  }
  Tensor dqkv = Tensor::empty(qkv.shape(), dout.dtype(), qkv.device());
  be.attention_backward(in(dout), in(qkv), in(probs), out(dqkv), d.batch, d.seq, d.heads, d.head_dim);
  return dqkv;
}

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

// ---- embedding

namespace {

void check_embedding_tables(const char* op, const Tensor& tokens, const Tensor& wte, const Tensor& wpe) {
  require_dtype(op, "tokens", tokens, DType::int32);
  if (tokens.shape().size() != 2) throw Error(std::string(op) + ": tokens " + type_of(tokens) + " should be [B, T]");
  require_float(op, "wte", wte);
  require_float(op, "wpe", wpe);
  if (wte.shape().size() != 2 || wpe.shape().size() != 2 || wte.shape()[1] != wpe.shape()[1])
    throw Error(std::string(op) + ": wte " + type_of(wte) + " and wpe " + type_of(wpe) +
                " should be [V, C] and [P, C] with the same C");
  if (tokens.shape()[1] > wpe.shape()[0])
    throw Error(std::string(op) + ": tokens " + type_of(tokens) + " have " + std::to_string(tokens.shape()[1]) +
                " positions but wpe " + type_of(wpe) + " holds only " + std::to_string(wpe.shape()[0]));
}

}  // namespace

Tensor embedding(const Tensor& tokens, const Tensor& wte, const Tensor& wpe) {
  check_embedding_tables("embedding", tokens, wte, wpe);
  Backend& be = backend_of("embedding", {{"tokens", &tokens}, {"wte", &wte}, {"wpe", &wpe}});
  const std::int64_t batch = tokens.shape()[0], seq = tokens.shape()[1];
  const std::int64_t vocab = wte.shape()[0], dim = wte.shape()[1];
  Tensor y = Tensor::empty({batch, seq, dim}, wte.dtype(), tokens.device());  // the parameters' dtype
  be.embedding_forward(tokens.i32(), in(wte), in(wpe), out(y), batch, seq, dim, vocab);
  return y;
}

void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor& dwpe) {
  const char* op = "embedding_backward";
  check_embedding_tables(op, tokens, dwte, dwpe);
  require_f32(op, "dwte", dwte);
  require_f32(op, "dwpe", dwpe);
  require_float(op, "dout", dout);
  const std::int64_t batch = tokens.shape()[0], seq = tokens.shape()[1], dim = dwte.shape()[1];
  const Shape want{batch, seq, dim};
  if (dout.shape() != want)
    throw Error(std::string(op) + ": dout " + type_of(dout) + " should be " + shape_str(want) + " for tokens " +
                type_of(tokens) + " and dwte " + type_of(dwte));
  Backend& be = backend_of(op, {{"tokens", &tokens}, {"dout", &dout}, {"dwte", &dwte}, {"dwpe", &dwpe}});
  // Tokens were range-checked by the forward that produced dout.
  be.embedding_backward(tokens.i32(), in(dout), f32(dwte), f32(dwpe), batch, seq, dim);
}

// ---- optimizers

void sgd_momentum(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, float lr, float momentum,
                  float weight_decay) {
  const char* op = "sgd_momentum";
  require_f32(op, "param", param);
  require_f32(op, "grad", grad);
  require_f32(op, "momentum_buffer", momentum_buffer);
  require_same_shape(op, "param", param, "grad", grad);
  require_same_shape(op, "param", param, "momentum_buffer", momentum_buffer);
  Backend& be = backend_of(op, {{"param", &param}, {"grad", &grad}, {"momentum_buffer", &momentum_buffer}});
  be.sgd_momentum(f32(param), f32(grad), f32(momentum_buffer), param.numel(), lr, momentum, weight_decay);
}

void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, float lr, float beta1, float beta2, float eps,
           float weight_decay, std::int64_t step) {
  const char* op = "adamw";
  require_f32(op, "param", param);
  require_f32(op, "grad", grad);
  require_f32(op, "m", m);
  require_f32(op, "v", v);
  require_same_shape(op, "param", param, "grad", grad);
  require_same_shape(op, "param", param, "m", m);
  require_same_shape(op, "param", param, "v", v);
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  Backend& be = backend_of(op, {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}});
  be.adamw(f32(param), f32(grad), f32(m), f32(v), param.numel(), lr, beta1, beta2, eps, weight_decay, step);
}

void adamw_multi(const std::vector<AdamwParam>& params, float lr, float beta1, float beta2, float eps,
                 std::int64_t step) {
  const char* op = "adamw_multi";
  if (params.empty()) return;
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  std::vector<Backend::AdamwTensor> tensors;
  for (const AdamwParam& p : params) {
    require_f32(op, "param", *p.param);
    require_f32(op, "grad", *p.grad);
    require_f32(op, "m", *p.m);
    require_f32(op, "v", *p.v);
    require_same_shape(op, "param", *p.param, "grad", *p.grad);
    require_same_shape(op, "param", *p.param, "m", *p.m);
    require_same_shape(op, "param", *p.param, "v", *p.v);
    const Tensor& first = *params.front().param;
    if (p.bf16_copy != nullptr) {
      require_dtype(op, "bf16_copy", *p.bf16_copy, DType::bfloat16);
      require_same_shape(op, "param", *p.param, "bf16_copy", *p.bf16_copy);
      backend_of(op, {{"the first param", &first}, {"bf16_copy", p.bf16_copy}});
    }
    backend_of(op, {{"the first param", &first}, {"param", p.param}, {"grad", p.grad}, {"m", p.m}, {"v", p.v}});
    tensors.push_back({f32(*p.param), f32(*p.grad), f32(*p.m), f32(*p.v),
                       p.bf16_copy != nullptr ? p.bf16_copy->bf16() : nullptr, p.param->numel(), p.weight_decay});
  }
  backend_for(params.front().param->device())
      .adamw_multi(tensors.data(), static_cast<int>(tensors.size()), lr, beta1, beta2, eps, step);
}

}  // namespace libpipe::ops
