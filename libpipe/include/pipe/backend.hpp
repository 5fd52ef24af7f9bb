// The backend: the op set written once per device. Everything above it
// (layers, optimizer, engine) calls these through ops.hpp and never touches
// BLAS or CUDA. Pointers are device pointers of the backend's device; all
// matrices are row-major and contiguous unless a leading dimension is given.
//
// The CPU backend (GEMMs on oneDNN, src/ops/cpu/cpu_gemm.cpp, plus vectorisable loops) lives in src/ops/cpu; the
// CUDA backend implements the same interface.
#pragma once

#include <cstdint>
#include <memory>

#include "pipe/export.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

class PIPE_API Backend {
 public:
  // A typed array: most ops take float32 or bfloat16 arrays (activations and parameters under --dtype bf16).
  // Plain float pointers convert implicitly, so float32 callers write be.add(a, b, y, n).
  struct In {
    const void* data;
    DType dtype;
    In(const void* d, DType t) : data(d), dtype(t) {}
    In(const float* d) : data(d), dtype(DType::float32) {}  // NOLINT(google-explicit-constructor)
  };
  struct Out {
    void* data;
    DType dtype;
    Out(void* d, DType t) : data(d), dtype(t) {}
    Out(float* d) : data(d), dtype(DType::float32) {}  // NOLINT(google-explicit-constructor)
  };

  virtual ~Backend();
  virtual Device device() const = 0;
  virtual const char* name() const = 0;
  // Waits until every op issued so far has finished (ops may run asynchronously on a device stream):
  // for timings and before the host reads what an op wrote through other means than copy_to_host.
  virtual void synchronize() {}
  // Device-side timing, so that timing work never stops the host: a mark is recorded in the device's stream of
  // work and reached when everything issued before it has run. The CPU's ops are synchronous and it returns null
  // (host clocks time them). seconds_between waits until `to` is reached.
  virtual std::shared_ptr<void> mark() { return nullptr; }
  virtual double seconds_between(const void* /*from*/, const void* /*to*/) { return 0.0; }

  // ---- memory
  virtual void fill(float* y, float value, std::int64_t n) = 0;
  virtual void copy(float* dst, const float* src, std::int64_t n) = 0;
  // Both copies return when the copy is complete (host memory may be reused at once).
  virtual void copy_to_host(void* host, const void* src, std::size_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host, std::size_t bytes) = 0;

  // ---- GEMM: C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C, accumulating in float32. A, B and C are
  // each float32 or bfloat16 (pipe/bfloat16.hpp), a bfloat16 C rounded once to nearest even. A backend runs
  // all-float32 products natively and may run bfloat16 ones natively (the GPU does); any other mix it may hand to
  // gemm_widened.
  virtual void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, In a,
                    std::int64_t lda, In b, std::int64_t ldb, float beta, Out c, std::int64_t ldc) = 0;
  // The same for `batch` independent products at fixed strides.
  virtual void gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                                    float alpha, const float* a, std::int64_t lda, std::int64_t stride_a,
                                    const float* b, std::int64_t ldb, std::int64_t stride_b, float beta, float* c,
                                    std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) = 0;

  // ---- bfloat16 storage (mixed precision, pipe/bfloat16.hpp): conversions rounding to nearest even.
  virtual void to_bf16(const float* x, std::uint16_t* y, std::int64_t n) = 0;
  virtual void from_bf16(const std::uint16_t* x, float* y, std::int64_t n) = 0;

  // ---- elementwise. Typed ops (In/Out) take float32 or bfloat16 arrays: the math is float32 and each output is
  // rounded once to its dtype (to nearest even); parameter gradients stay float32. A backend runs all-float32
  // calls on float32 kernels, may run all-bfloat16 ones on native kernels (the GPU does), and widens any other
  // mix (ops/float32_views.hpp).
  virtual void add(In a, In b, Out out, std::int64_t n) = 0;  // out = a + b
  virtual void accumulate(Out y, In x, std::int64_t n) = 0;   // y += x
  virtual void scale(float* y, float factor, std::int64_t n) = 0;  // y *= factor
  // A linear layer's epilogue: y[r, c] = h[r, c] + bias[c], h the float32 output of its GEMM (y may be h).
  virtual void bias_epilogue(const float* h, In bias, Out y, std::int64_t rows, std::int64_t cols) = 0;
  virtual void bias_grad(In dy, float* db, std::int64_t rows, std::int64_t cols) = 0;  // db[c] += sum_r dy
  virtual void relu_forward(const float* x, float* y, std::int64_t n) = 0;
  virtual void relu_backward(const float* x, const float* dy, float* dx, std::int64_t n) = 0;
  // GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  virtual void gelu_forward(const float* x, float* y, std::int64_t n) = 0;
  virtual void gelu_backward(In x, In dy, Out dx, std::int64_t n) = 0;
  // The MLP up-projection's epilogue: pre = h + bias (kept for backward; pre may be h), y = gelu(pre).
  virtual void bias_gelu(const float* h, In bias, Out pre, Out y, std::int64_t rows, std::int64_t cols) = 0;

  // ---- LayerNorm over the last dimension (rows x cols); mean and rstd [rows] are saved for backward.
  virtual void layernorm_forward(In x, In weight, In bias, Out y, float* mean, float* rstd, std::int64_t rows,
                                 std::int64_t cols, float eps) = 0;
  virtual void layernorm_backward_input(In dy, In x, In weight, const float* mean, const float* rstd, Out dx,
                                        std::int64_t rows, std::int64_t cols) = 0;
  // dweight += sum_r dy * xhat, dbias += sum_r dy
  virtual void layernorm_backward_weight(In dy, In x, const float* mean, const float* rstd, float* dweight,
                                         float* dbias, std::int64_t rows, std::int64_t cols) = 0;

  // ---- causal multi-head attention. qkv [B, T, 3C] holds q, k, v side by side (each [B, T, C], head h on
  // channels h*D..h*D+D-1, C = H*D). out [B, T, C]; probs [B, H, T, T] (softmax of the masked, 1/sqrt(D)-scaled
  // scores; entries above the diagonal are 0) is saved for backward.
  virtual void attention_forward(In qkv, Out out, Out probs, std::int64_t batch, std::int64_t seq,
                                 std::int64_t heads, std::int64_t head_dim) = 0;
  // dqkv [B, T, 3C] (overwritten) from dout [B, T, C].
  virtual void attention_backward(In dout, In qkv, In probs, Out dqkv, std::int64_t batch, std::int64_t seq,
                                  std::int64_t heads, std::int64_t head_dim) = 0;

  // ---- the same attention without the T x T matrix (FlashAttention's scheme), for long sequences: `state`
  // [B H, T, D + 1] (float32) receives each row's output and the log-sum-exp of its scaled scores, and backward
  // recomputes the probabilities from them. flash_attention_pays says when a backend takes this path (and that it
  // has one: the defaults have none).
  virtual bool flash_attention_pays(std::int64_t /*seq*/, std::int64_t /*head_dim*/) const { return false; }
  virtual void flash_attention_forward(const float* qkv, float* out, float* state, std::int64_t batch,
                                       std::int64_t seq, std::int64_t heads, std::int64_t head_dim);
  virtual void flash_attention_backward(const float* dout, const float* qkv, const float* state, float* dqkv,
                                        std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                        std::int64_t head_dim);

  // ---- softmax cross-entropy over `vocab` classes for `rows` rows of logits, grouped per sample:
  // sample b owns rows [b*rows_per_sample, (b+1)*rows_per_sample). loss[b] = mean over its rows of
  // -log softmax(logits)[label]. Labels outside [0, vocab) are an error (libpipe::Error naming row and label).
  virtual void cross_entropy_forward(In logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                                     std::int64_t vocab, std::int64_t rows_per_sample) = 0;
  // dlogits = (softmax - onehot(label)) * dloss[b] / rows_per_sample
  virtual void cross_entropy_backward(In logits, const std::int32_t* labels, const float* dloss, Out dlogits,
                                      std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) = 0;
  // Mean squared error per sample over `per_sample` elements: loss[b] = mean (x - t)^2;
  // dx = 2 (x - t) / per_sample * dloss[b].
  virtual void mse_forward(const float* x, const float* target, float* loss, std::int64_t batch,
                           std::int64_t per_sample) = 0;
  virtual void mse_backward(const float* x, const float* target, const float* dloss, float* dx, std::int64_t batch,
                            std::int64_t per_sample) = 0;

  // ---- GPT-2 embedding: out[b, t] = wte[token[b, t]] + wpe[t]. Tokens outside [0, vocab) are an error.
  virtual void embedding_forward(const std::int32_t* tokens, In wte, In wpe, Out out, std::int64_t batch,
                                 std::int64_t seq, std::int64_t dim, std::int64_t vocab) = 0;
  // dwte[token] += dout (scatter-add), dwpe[t] += sum_b dout[b, t]
  virtual void embedding_backward(const std::int32_t* tokens, In dout, float* dwte, float* dwpe, std::int64_t batch,
                                  std::int64_t seq, std::int64_t dim) = 0;

  // ---- optimizers (in place; weight decay decoupled for AdamW, L2 for SGD)
  virtual void sgd_momentum(float* param, const float* grad, float* momentum_buffer, std::int64_t n, float lr,
                            float momentum, float weight_decay) = 0;
  // step counts from 1 (bias correction).
  virtual void adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                     float beta2, float eps, float weight_decay, std::int64_t step) = 0;
  // One AdamW step of many tensors at once, with shared hyper-parameters and each tensor's own weight decay.
  // Where `param_bf16` is set (mixed precision: `param` is the float32 master), the updated value is also
  // rounded into it. The default runs adamw (and to_bf16) tensor by tensor; a device backend fuses them into a
  // few launches.
  struct AdamwTensor {
    float* param;
    const float* grad;
    float* m;
    float* v;
    std::uint16_t* param_bf16;  // or null
    std::int64_t n;
    float weight_decay;
  };
  virtual void adamw_multi(const AdamwTensor* tensors, int count, float lr, float beta1, float beta2, float eps,
                           std::int64_t step) {
    for (int i = 0; i < count; ++i) {
      const AdamwTensor& t = tensors[i];
      adamw(t.param, t.grad, t.m, t.v, t.n, lr, beta1, beta2, eps, t.weight_decay, step);
      if (t.param_bf16 != nullptr) to_bf16(t.param, t.param_bf16, t.n);
    }
  }
  // sum of x^2 in double (for the global gradient norm).
  virtual double sum_squares(const float* x, std::int64_t n) = 0;
  // out[i] = sum_squares(x[i], n[i]) for `count` arrays, each summed exactly as sum_squares does. A device
  // backend overrides it to wait once for all of them instead of once per array (one per parameter).
  virtual void sum_squares_each(const float* const* x, const std::int64_t* n, int count, double* out) {
    for (int i = 0; i < count; ++i) out[i] = sum_squares(x[i], n[i]);
  }

 protected:
  // gemm for any mix of float32 and bfloat16: widens bfloat16 operands to float32 temporaries, runs the
  // all-float32 gemm and rounds a bfloat16 C back (what the CPU does for bfloat16).
  void gemm_widened(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, In a,
                    std::int64_t lda, In b, std::int64_t ldb, float beta, Out c, std::int64_t ldc);
};

// The backend of a device; throws libpipe::Error when this build has none.
PIPE_API Backend& backend_for(Device device);

// Threads the CPU backend may use per rank (default 1: ranks share the cores).
PIPE_API void set_cpu_threads(int threads);
PIPE_API int cpu_threads();

}  // namespace libpipe
