// Causal multi-head attention as ops, materialised or flash (kernels:
// cpu/attention.cpp, cuda/attention.cu and cuda/flash_attention.cu).
#include <string>
#include <vector>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

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

}  // namespace libpipe::ops
