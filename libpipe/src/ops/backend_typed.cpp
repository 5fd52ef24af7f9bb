// The default mixed-precision ops of every backend (pipe/backend.hpp, "mixed
// precision"): bfloat16 inputs are widened to float32 temporaries, the float32
// method runs, and bfloat16 outputs are rounded back in one pass. float32
// arrays pass straight through, so an all-float32 call costs nothing extra.
// This is the reference the CUDA backend's native bfloat16 kernels are tested
// against.
#include <string>

#include "pipe/backend.hpp"
#include "pipe/error.hpp"

namespace libpipe {
namespace {

void require_float(DType t, const char* op) {
  if (t != DType::float32 && t != DType::bfloat16)
    throw Error(std::string(op) + ": arrays must be float32 or bfloat16, not " + dtype_name(t));
}

// The float32 values of an input: the array itself, or a widened copy that the returned tensor keeps alive.
Tensor widened(Backend& be, Backend::In x, std::int64_t n, const char* op) {
  require_float(x.dtype, op);
  if (x.dtype == DType::float32) return Tensor::borrow(const_cast<void*>(x.data), {n}, x.dtype, be.device());
  Tensor wide = Tensor::empty({n}, DType::float32, be.device());
  be.from_bf16(static_cast<const std::uint16_t*>(x.data), wide.f32(), n);
  return wide;
}

// A float32 place for an output: the array itself, or a temporary that done() rounds into it. `read` widens the
// current contents first (an output that is also an input, as in y += x).
class Narrowed {
 public:
  Narrowed(Backend& be, Backend::Out y, std::int64_t n, const char* op, bool read = false) : be_(be), y_(y), n_(n) {
    require_float(y.dtype, op);
    if (y.dtype == DType::float32)
      wide_ = Tensor::borrow(y.data, {n}, y.dtype, be.device());
    else
      wide_ = read ? widened(be, Backend::In{y.data, y.dtype}, n, op) : Tensor::empty({n}, DType::float32, be.device());
  }
  float* get() { return wide_.f32(); }
  void done() {
    if (y_.dtype == DType::bfloat16) be_.to_bf16(wide_.f32(), static_cast<std::uint16_t*>(y_.data), n_);
  }

 private:
  Backend& be_;
  Backend::Out y_;
  std::int64_t n_;
  Tensor wide_;
};

}  // namespace

void Backend::add_typed(In a, In b, Out out, std::int64_t n) {
  const Tensor wa = widened(*this, a, n, "add"), wb = widened(*this, b, n, "add");
  Narrowed y(*this, out, n, "add");
  add(wa.f32(), wb.f32(), y.get(), n);
  y.done();
}

void Backend::accumulate_typed(Out y, In x, std::int64_t n) {
  const Tensor wx = widened(*this, x, n, "accumulate");
  Narrowed wy(*this, y, n, "accumulate", true);
  accumulate(wy.get(), wx.f32(), n);
  wy.done();
}

void Backend::bias_epilogue_typed(const float* h, In bias, Out y, std::int64_t rows, std::int64_t cols) {
  const Tensor wb = widened(*this, bias, cols, "bias_epilogue");
  Narrowed wy(*this, y, rows * cols, "bias_epilogue");
  copy(wy.get(), h, rows * cols);
  add_bias(wy.get(), wb.f32(), rows, cols);
  wy.done();
}

void Backend::bias_gelu_typed(const float* h, In bias, Out pre, Out y, std::int64_t rows, std::int64_t cols) {
  const Tensor wb = widened(*this, bias, cols, "bias_gelu");
  Narrowed wpre(*this, pre, rows * cols, "bias_gelu"), wy(*this, y, rows * cols, "bias_gelu");
  copy(wpre.get(), h, rows * cols);
  bias_gelu_forward(wpre.get(), wb.f32(), wy.get(), rows, cols);
  wpre.done();
  wy.done();
}

void Backend::gelu_backward_typed(In x, In dy, Out dx, std::int64_t n) {
  const Tensor wx = widened(*this, x, n, "gelu_backward"), wdy = widened(*this, dy, n, "gelu_backward");
  Narrowed wdx(*this, dx, n, "gelu_backward");
  gelu_backward(wx.f32(), wdy.f32(), wdx.get(), n);
  wdx.done();
}

void Backend::bias_grad_typed(In dy, float* db, std::int64_t rows, std::int64_t cols) {
  const Tensor wdy = widened(*this, dy, rows * cols, "bias_grad");
  bias_grad(wdy.f32(), db, rows, cols);
}

void Backend::layernorm_forward_typed(In x, In weight, In bias, Out y, float* mean, float* rstd, std::int64_t rows,
                                      std::int64_t cols, float eps) {
  const char* op = "layernorm_forward";
  const Tensor wx = widened(*this, x, rows * cols, op), ww = widened(*this, weight, cols, op),
               wb = widened(*this, bias, cols, op);
  Narrowed wy(*this, y, rows * cols, op);
  layernorm_forward(wx.f32(), ww.f32(), wb.f32(), wy.get(), mean, rstd, rows, cols, eps);
  wy.done();
}

void Backend::layernorm_backward_input_typed(In dy, In x, In weight, const float* mean, const float* rstd, Out dx,
                                             std::int64_t rows, std::int64_t cols) {
  const char* op = "layernorm_backward_input";
  const Tensor wdy = widened(*this, dy, rows * cols, op), wx = widened(*this, x, rows * cols, op),
               ww = widened(*this, weight, cols, op);
  Narrowed wdx(*this, dx, rows * cols, op);
  layernorm_backward_input(wdy.f32(), wx.f32(), ww.f32(), mean, rstd, wdx.get(), rows, cols);
  wdx.done();
}

void Backend::layernorm_backward_weight_typed(In dy, In x, const float* mean, const float* rstd, float* dweight,
                                              float* dbias, std::int64_t rows, std::int64_t cols) {
  const char* op = "layernorm_backward_weight";
  const Tensor wdy = widened(*this, dy, rows * cols, op), wx = widened(*this, x, rows * cols, op);
  layernorm_backward_weight(wdy.f32(), wx.f32(), mean, rstd, dweight, dbias, rows, cols);
}

void Backend::attention_forward_typed(In qkv, Out out, Out probs, std::int64_t batch, std::int64_t seq,
                                      std::int64_t heads, std::int64_t head_dim) {
  const char* op = "attention_forward";
  const std::int64_t c = heads * head_dim;
  const Tensor wqkv = widened(*this, qkv, batch * seq * 3 * c, op);
  Narrowed wout(*this, out, batch * seq * c, op), wprobs(*this, probs, batch * heads * seq * seq, op);
  attention_forward(wqkv.f32(), wout.get(), wprobs.get(), batch, seq, heads, head_dim);
  wout.done();
  wprobs.done();
}

void Backend::attention_backward_typed(In dout, In qkv, In probs, Out dqkv, std::int64_t batch, std::int64_t seq,
                                       std::int64_t heads, std::int64_t head_dim) {
  const char* op = "attention_backward";
  const std::int64_t c = heads * head_dim;
  const Tensor wdout = widened(*this, dout, batch * seq * c, op), wqkv = widened(*this, qkv, batch * seq * 3 * c, op),
               wprobs = widened(*this, probs, batch * heads * seq * seq, op);
  Narrowed wdqkv(*this, dqkv, batch * seq * 3 * c, op);
  attention_backward(wdout.f32(), wqkv.f32(), wprobs.f32(), wdqkv.get(), batch, seq, heads, head_dim);
  wdqkv.done();
}

void Backend::cross_entropy_forward_typed(In logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                                          std::int64_t vocab, std::int64_t rows_per_sample) {
  const Tensor wl = widened(*this, logits, rows * vocab, "cross_entropy_forward");
  cross_entropy_forward(wl.f32(), labels, loss, rows, vocab, rows_per_sample);
}

void Backend::cross_entropy_backward_typed(In logits, const std::int32_t* labels, const float* dloss, Out dlogits,
                                           std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) {
  const char* op = "cross_entropy_backward";
  const Tensor wl = widened(*this, logits, rows * vocab, op);
  Narrowed wd(*this, dlogits, rows * vocab, op);
  cross_entropy_backward(wl.f32(), labels, dloss, wd.get(), rows, vocab, rows_per_sample);
  wd.done();
}

void Backend::embedding_forward_typed(const std::int32_t* tokens, In wte, In wpe, Out out, std::int64_t batch,
                                      std::int64_t seq, std::int64_t dim, std::int64_t vocab) {
  const char* op = "embedding_forward";
  // Only the first `seq` rows of wpe are read.
  const Tensor wt = widened(*this, wte, vocab * dim, op), wp = widened(*this, wpe, seq * dim, op);
  Narrowed wo(*this, out, batch * seq * dim, op);
  embedding_forward(tokens, wt.f32(), wp.f32(), wo.get(), batch, seq, dim, vocab);
  wo.done();
}

void Backend::embedding_backward_typed(const std::int32_t* tokens, In dout, float* dwte, float* dwpe,
                                       std::int64_t batch, std::int64_t seq, std::int64_t dim) {
  const Tensor wd = widened(*this, dout, batch * seq * dim, "embedding_backward");
  embedding_backward(tokens, wd.f32(), dwte, dwpe, batch, seq, dim);
}

}  // namespace libpipe
