// The CPU backend: GEMMs on oneDNN (cpu_gemm.cpp), everything else as plain loops that the
// compiler vectorises (see cpu_math.hpp). One instance per process
// (backend_for(Device::cpu)); it holds no state beyond scratch space, so it
// is safe to call from several threads as long as they do not share outputs.
#pragma once

#include "pipe/backend.hpp"

namespace libpipe::cpu {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  const char* name() const override { return "cpu"; }

  void fill(float* y, float value, std::int64_t n) override;
  void copy(float* dst, const float* src, std::int64_t n) override;
  void copy_to_host(void* host, const void* src, std::size_t bytes) override;
  void copy_from_host(void* dst, const void* host, std::size_t bytes) override;

  // float32 on oneDNN; bfloat16 widened (gemm_widened).
  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, In a,
            std::int64_t lda, In b, std::int64_t ldb, float beta, Out c, std::int64_t ldc) override;
  void gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                            const float* a, std::int64_t lda, std::int64_t stride_a, const float* b, std::int64_t ldb,
                            std::int64_t stride_b, float beta, float* c, std::int64_t ldc, std::int64_t stride_c,
                            std::int64_t batch) override;

  void to_bf16(const float* x, std::uint16_t* y, std::int64_t n) override;
  void from_bf16(const std::uint16_t* x, float* y, std::int64_t n) override;

  // Typed ops run the float32 kernels on Float32Views (ops/float32_views.hpp): bfloat16 arrays are widened and
  // rounded back, so the CPU is the reference that native bfloat16 kernels are tested against.
  // elementwise.cpp
  void add(In a, In b, Out out, std::int64_t n) override;
  void accumulate(Out y, In x, std::int64_t n) override;
  void scale(float* y, float factor, std::int64_t n) override;
  void bias_epilogue(const float* h, In bias, Out y, std::int64_t rows, std::int64_t cols) override;
  void bias_grad(In dy, float* db, std::int64_t rows, std::int64_t cols) override;
  void relu_forward(const float* x, float* y, std::int64_t n) override;
  void relu_backward(const float* x, const float* dy, float* dx, std::int64_t n) override;
  void gelu_forward(const float* x, float* y, std::int64_t n) override;
  void gelu_backward(In x, In dy, Out dx, std::int64_t n) override;
  void bias_gelu(const float* h, In bias, Out pre, Out y, std::int64_t rows, std::int64_t cols) override;

  // layernorm.cpp
  void layernorm_forward(In x, In weight, In bias, Out y, float* mean, float* rstd, std::int64_t rows,
                         std::int64_t cols, float eps) override;
  void layernorm_backward_input(In dy, In x, In weight, const float* mean, const float* rstd, Out dx,
                                std::int64_t rows, std::int64_t cols) override;
  void layernorm_backward_weight(In dy, In x, const float* mean, const float* rstd, float* dweight, float* dbias,
                                 std::int64_t rows, std::int64_t cols) override;

  // attention.cpp
  void attention_forward(In qkv, Out out, Out probs, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                         std::int64_t head_dim) override;
  void attention_backward(In dout, In qkv, In probs, Out dqkv, std::int64_t batch, std::int64_t seq,
                          std::int64_t heads, std::int64_t head_dim) override;

  // losses.cpp
  void cross_entropy_forward(In logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                             std::int64_t vocab, std::int64_t rows_per_sample) override;
  void cross_entropy_backward(In logits, const std::int32_t* labels, const float* dloss, Out dlogits,
                              std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) override;
  void mse_forward(const float* x, const float* target, float* loss, std::int64_t batch,
                   std::int64_t per_sample) override;
  void mse_backward(const float* x, const float* target, const float* dloss, float* dx, std::int64_t batch,
                    std::int64_t per_sample) override;

  // embedding.cpp
  void embedding_forward(const std::int32_t* tokens, In wte, In wpe, Out out, std::int64_t batch, std::int64_t seq,
                         std::int64_t dim, std::int64_t vocab) override;
  void embedding_backward(const std::int32_t* tokens, In dout, float* dwte, float* dwpe, std::int64_t batch,
                          std::int64_t seq, std::int64_t dim) override;

  // optimizer.cpp
  void sgd_momentum(float* param, const float* grad, float* momentum_buffer, std::int64_t n, float lr, float momentum,
                    float weight_decay) override;
  void adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1, float beta2,
             float eps, float weight_decay, std::int64_t step) override;
  double sum_squares(const float* x, std::int64_t n) override;
};

// The one CPU backend of the process.
CpuBackend& cpu_backend();

// The instruction sets the kernels are compiled for (cpu_math.hpp).
enum class Isa { baseline, avx2, avx512 };

// The one the kernels run with: the best this CPU supports, or PIPE_CPU_ISA (avx512, avx2 or baseline; to
// test every path on one machine). Decided at first use; throws libpipe::Error for a value that is unknown or
// beyond this CPU.
Isa cpu_isa();
const char* isa_name(Isa isa);

}  // namespace libpipe::cpu
