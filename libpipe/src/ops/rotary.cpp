// Rotary position embedding with grouped key/value heads as ops (kernels:
// cpu/rotary.cpp, cuda/rotary.cu): the step between a rotary attention layer's
// q/k/v projection and the causal attention op, which takes one k and v per
// query head. Repeating the shared heads here keeps attention() unchanged;
// the backward sums the repeated heads' gradients back in a fixed order.
#include <string>

#include "ops/op_checks.hpp"

namespace libpipe::ops {

namespace {

struct RotaryDims {
  std::int64_t batch, seq, head_dim;
};

void check_heads(const char* op, std::int64_t heads, std::int64_t kv_heads, float theta) {
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0)
    throw Error(std::string(op) + ": heads " + std::to_string(heads) + " must be a positive multiple of kv_heads " +
                std::to_string(kv_heads));
  if (!(theta > 0.0f)) throw Error(std::string(op) + ": theta must be positive, not " + std::to_string(theta));
}

// A [B, T, heads_in_row * D] tensor with an even D.
RotaryDims check_rows(const char* op, const char* name, const Tensor& t, std::int64_t heads_in_row,
                      const char* layout) {
  require_float(op, name, t);
  if (t.shape().size() != 3 || t.shape()[2] % heads_in_row != 0 || t.shape()[2] == 0 ||
      (t.shape()[2] / heads_in_row) % 2 != 0)
    throw Error(std::string(op) + ": " + name + " " + type_of(t) + " should be [B, T, " + layout +
                "] with an even head dimension D");
  return {t.shape()[0], t.shape()[1], t.shape()[2] / heads_in_row};
}

std::string heads_layout(std::int64_t heads, std::int64_t kv_heads) {
  return "(" + std::to_string(heads) + " + 2 x " + std::to_string(kv_heads) + ") D";
}

}  // namespace

Tensor rotary_gqa(const Tensor& x, std::int64_t heads, std::int64_t kv_heads, float theta) {
  const char* op = "rotary_gqa";
  check_heads(op, heads, kv_heads, theta);
  const RotaryDims d = check_rows(op, "x", x, heads + 2 * kv_heads, heads_layout(heads, kv_heads).c_str());
  Backend& be = backend_of(op, {{"x", &x}});
  Tensor qkv = Tensor::empty({d.batch, d.seq, 3 * heads * d.head_dim}, x.dtype(), x.device());
  be.rotary_gqa_forward(in(x), out(qkv), d.batch, d.seq, heads, kv_heads, d.head_dim, theta);
  return qkv;
}

Tensor rotary_gqa_backward(const Tensor& dqkv, std::int64_t heads, std::int64_t kv_heads, float theta) {
  const char* op = "rotary_gqa_backward";
  check_heads(op, heads, kv_heads, theta);
  const RotaryDims d = check_rows(op, "dqkv", dqkv, 3 * heads, ("3 x " + std::to_string(heads) + " D").c_str());
  Backend& be = backend_of(op, {{"dqkv", &dqkv}});
  Tensor dx = Tensor::empty({d.batch, d.seq, (heads + 2 * kv_heads) * d.head_dim}, dqkv.dtype(), dqkv.device());
  be.rotary_gqa_backward(in(dqkv), out(dx), d.batch, d.seq, heads, kv_heads, d.head_dim, theta);
  return dx;
}

}  // namespace libpipe::ops
