// Tensor-level ops: what layers, optimizers and the engine call. Each checks
// shapes, dtypes and devices (a mismatch is a libpipe::Error naming the op and
// the shapes), allocates its outputs on the inputs' device, and runs on that
// device's Backend. Shapes in comments; B = micro-batch, "..." = any leading
// dimensions, flattened to rows.
#pragma once

#include <vector>

#include "pipe/backend.hpp"
#include "pipe/export.hpp"
#include "pipe/tensor.hpp"

namespace libpipe::ops {

// ---- basics
PIPE_API void fill(Tensor& t, float value);
PIPE_API void scale(Tensor& t, float factor);
PIPE_API Tensor add(const Tensor& a, const Tensor& b);  // same shapes
PIPE_API void accumulate(Tensor& y, const Tensor& x);   // y += x, same numel
PIPE_API Tensor clone(const Tensor& t);
// `t` on `device`: t itself when it is already there, else a copy (between the host and a device).
PIPE_API Tensor to_device(const Tensor& t, Device device);
// `t` as `dtype` (float32 or bfloat16): t itself when it already is, else a converted copy (rounded to nearest
// even into bfloat16).
PIPE_API Tensor to_dtype(const Tensor& t, DType dtype);
// dst = src converted to dst's dtype (both float32 or bfloat16, same number of elements, one device).
PIPE_API void convert_into(Tensor& dst, const Tensor& src);
PIPE_API double sum_squares(const Tensor& t);
// sum_squares of each tensor (all float32, on one device), with a single wait on a device.
PIPE_API std::vector<double> sum_squares_each(const std::vector<const Tensor*>& ts);

// ---- linear: x [..., in], weight [out, in], bias [out] or undefined
PIPE_API Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);  // [..., out]
PIPE_API Tensor linear_backward_input(const Tensor& dy, const Tensor& weight);      // dx [..., in]
// dweight += dy^T x, dbias += sum dy (dbias may be undefined)
PIPE_API void linear_backward_weight(const Tensor& dy, const Tensor& x, Tensor& dweight, Tensor& dbias);
// gelu(x W^T + b), also returning the pre-activation h = x W^T + b for backward.
PIPE_API Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& pre_activation);

// ---- activations (any shape)
PIPE_API Tensor relu(const Tensor& x);
PIPE_API Tensor relu_backward(const Tensor& x, const Tensor& dy);
PIPE_API Tensor gelu(const Tensor& x);
PIPE_API Tensor gelu_backward(const Tensor& x, const Tensor& dy);

// ---- LayerNorm over the last dimension C: x [..., C], weight/bias [C]; mean/rstd [rows] are outputs for backward.
PIPE_API Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps, Tensor& mean,
                          Tensor& rstd);
PIPE_API Tensor layernorm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                         const Tensor& rstd);
PIPE_API void layernorm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                        Tensor& dweight, Tensor& dbias);

// ---- root-mean-square norm over the last dimension C: y = x / sqrt(mean(x^2) + eps) * weight, x [..., C], weight [C];
// rstd [rows] is an output for backward. Math in float32 whatever the dtypes.
PIPE_API Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& rstd);
PIPE_API Tensor rms_norm_backward_input(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd);
// dweight += sum over rows of dy * x * rstd
PIPE_API void rms_norm_backward_weight(const Tensor& dy, const Tensor& x, const Tensor& rstd, Tensor& dweight);

// ---- rotary position embedding with grouped key/value heads, feeding attention(): x [B, T, (H + 2 KV) D] holds
// q (H heads), k and v (KV heads each), heads contiguous; the result is attention()'s qkv [B, T, 3 H D], with q and
// k rotated by their position t in the sequence (rotate_half pairs: channel i with i + D/2, angle
// t * theta^(-2i/D), as Hugging Face's Llama) and each k and v head repeated for the H / KV query heads it serves.
PIPE_API Tensor rotary_gqa(const Tensor& x, std::int64_t heads, std::int64_t kv_heads, float theta);
// dx [B, T, (H + 2 KV) D] from dqkv [B, T, 3 H D]: rotated back, and summed over each group's repeated heads.
PIPE_API Tensor rotary_gqa_backward(const Tensor& dqkv, std::int64_t heads, std::int64_t kv_heads, float theta);

// ---- swiglu gate: h [..., 2F] = [gate, up] side by side -> silu(gate) * up [..., F]
PIPE_API Tensor swiglu(const Tensor& h);
PIPE_API Tensor swiglu_backward(const Tensor& h, const Tensor& dy);  // dh [..., 2F]

// ---- causal self-attention core: qkv [B, T, 3C] -> out [B, T, C]; probs is an output for backward: the
// probabilities [B, H, T, T], or where the backend runs flash attention (long sequences on a GPU) each row's output
// and log-sum-exp, float32 [B H, T, D + 1].
PIPE_API Tensor attention(const Tensor& qkv, std::int64_t heads, Tensor& probs);
PIPE_API Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                                   std::int64_t heads);  // dqkv [B, T, 3C]

// ---- losses: per-sample loss [B]
// logits [B, ..., V], labels int32 [B, ...]: loss[b] = mean over the sample's rows of -log softmax[label]
PIPE_API Tensor cross_entropy(const Tensor& logits, const Tensor& labels);
PIPE_API Tensor cross_entropy_backward(const Tensor& logits, const Tensor& labels, const Tensor& dloss);
// x, target [B, ...]: loss[b] = mean (x - target)^2
PIPE_API Tensor mse(const Tensor& x, const Tensor& target);
PIPE_API Tensor mse_backward(const Tensor& x, const Tensor& target, const Tensor& dloss);

// ---- embedding: tokens int32 [B, T], wte [V, C], wpe [P, C] (T <= P) -> [B, T, C]. An undefined wpe (and dwpe)
// is no position table: the token rows alone.
PIPE_API Tensor embedding(const Tensor& tokens, const Tensor& wte, const Tensor& wpe);
PIPE_API void embedding_backward(const Tensor& tokens, const Tensor& dout, Tensor& dwte, Tensor& dwpe);

// ---- optimizer updates (in place)
PIPE_API void sgd_momentum(Tensor& param, const Tensor& grad, Tensor& momentum_buffer, float lr, float momentum,
                           float weight_decay);
PIPE_API void adamw(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, float lr, float beta1, float beta2,
                    float eps, float weight_decay, std::int64_t step);
// adamw for many parameters at once (fused on a device: Backend::adamw_multi), each with its own weight decay.
// Where bf16_copy is set (mixed precision: param is the float32 master), it receives the updated param's bfloat16
// rounding.
struct AdamwParam {
  Tensor* param;
  const Tensor* grad;
  Tensor* m;
  Tensor* v;
  Tensor* bf16_copy;  // or null
  float weight_decay;
};
PIPE_API void adamw_multi(const std::vector<AdamwParam>& params, float lr, float beta1, float beta2, float eps,
                          std::int64_t step);

}  // namespace libpipe::ops
