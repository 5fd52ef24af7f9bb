// The backend: the op set written once per device. Everything above it
// (layers, optimizer, engine) calls these through ops.hpp and never touches
// BLAS or CUDA. Pointers are device pointers of the backend's device; all
// matrices are row-major and contiguous unless a leading dimension is given.
// The op list itself is pipe/backend_ops.inc.
//
// The CPU backend (GEMMs on oneDNN, src/ops/cpu/cpu_gemm.cpp, plus vectorisable loops) lives in src/ops/cpu; the
// CUDA backend implements the same interface in src/ops/cuda.
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

  // ---- the ops every backend implements, documented in pipe/backend_ops.inc (one entry per op, which each
  // backend's class reads again to declare its overrides)
#define PIPE_BACKEND_OP(ret, name, params) virtual ret name params = 0;
#include "pipe/backend_ops.inc"
#undef PIPE_BACKEND_OP

  // ---- ops with a default, which a backend may override.
  //
  // The same attention without the T x T matrix (FlashAttention's scheme), for long sequences: `state`
  // [B H, T, D + 1] (float32) receives each row's output and the log-sum-exp of its scaled scores, and backward
  // recomputes the probabilities from them. flash_attention_pays says when a backend takes this path (and that it
  // has one: the defaults have none).
  virtual bool flash_attention_pays(std::int64_t /*seq*/, std::int64_t /*head_dim*/) const { return false; }
  virtual void flash_attention_forward(const float* qkv, float* out, float* state, std::int64_t batch,
                                       std::int64_t seq, std::int64_t heads, std::int64_t head_dim);
  virtual void flash_attention_backward(const float* dout, const float* qkv, const float* state, float* dqkv,
                                        std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                        std::int64_t head_dim);

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

// Whether `device`'s backend runs causal attention of these sizes as flash attention (its flash_attention_pays),
// answered without the device: for planning. PIPE_ATTENTION=flash|materialized forces either answer.
PIPE_API bool flash_attention_runs(Device device, std::int64_t seq, std::int64_t head_dim);

// Threads the CPU backend may use per rank (default 1: ranks share the cores).
PIPE_API void set_cpu_threads(int threads);
PIPE_API int cpu_threads();

}  // namespace libpipe
