// The CUDA backend: every op of pipe/backend.hpp on one GPU. All work runs in
// issue order on one non-blocking compute stream (so the caching allocator can
// reuse freed blocks without synchronising); GEMMs are cuBLAS's on that stream;
// everything else is this directory's kernels. One instance per process, made
// by detail::cuda_backend() (cuda_runtime.cpp) and never destroyed: tensors
// may be freed after static destruction, and CUDA must not be called then.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "ops/cuda/cuda_allocator.hpp"
#include "ops/cuda/cuda_context.hpp"
#include "pipe/backend.hpp"

namespace libpipe::cuda {

class CudaBackend final : public Backend {
 public:
  // Binds the calling thread to `device` and sets up the stream, allocator and cuBLAS. `where` names the GPU in
  // messages ("GPU 0 (NVIDIA H200)").
  CudaBackend(int device, const std::string& where);
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::cuda; }
  const char* name() const override { return "cuda"; }
  void synchronize() override;
  std::shared_ptr<void> mark() override;  // a cudaEvent_t recorded on the compute stream
  double seconds_between(const void* from, const void* to) override;

  int device_index() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  CudaAllocator& allocator() { return *allocator_; }
  const CudaContext& context() const { return ctx_; }

  void fill(float* y, float value, std::int64_t n) override;
  void copy(float* dst, const float* src, std::int64_t n) override;
  void copy_to_host(void* host, const void* src, std::size_t bytes) override;
  void copy_from_host(void* dst, const void* host, std::size_t bytes) override;

  // Native cuBLAS GEMMs when every operand is float32, or A and B are bfloat16 (the tensor cores, fp32
  // accumulation) into a float32 or bfloat16 C; otherwise gemm_widened.
  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, In a,
            std::int64_t lda, In b, std::int64_t ldb, float beta, Out c, std::int64_t ldc) override;
  void gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                            const float* a, std::int64_t lda, std::int64_t stride_a, const float* b, std::int64_t ldb,
                            std::int64_t stride_b, float beta, float* c, std::int64_t ldc, std::int64_t stride_c,
                            std::int64_t batch) override;

  void to_bf16(const float* x, std::uint16_t* y, std::int64_t n) override;
  void from_bf16(const std::uint16_t* x, float* y, std::int64_t n) override;

  // Typed ops: native bfloat16 kernels when every array of the call is bfloat16 (what --dtype bf16 passes), the
  // float32 kernels when every array is float32, and those on Float32Views for any other mix.
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
  void layernorm_forward(In x, In weight, In bias, Out y, float* mean, float* rstd, std::int64_t rows,
                         std::int64_t cols, float eps) override;
  void layernorm_backward_input(In dy, In x, In weight, const float* mean, const float* rstd, Out dx,
                                std::int64_t rows, std::int64_t cols) override;
  void layernorm_backward_weight(In dy, In x, const float* mean, const float* rstd, float* dweight, float* dbias,
                                 std::int64_t rows, std::int64_t cols) override;
  void attention_forward(In qkv, Out out, Out probs, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                         std::int64_t head_dim) override;
  void attention_backward(In dout, In qkv, In probs, Out dqkv, std::int64_t batch, std::int64_t seq,
                          std::int64_t heads, std::int64_t head_dim) override;

  // PIPE_ATTENTION=flash|materialized forces a path; by default flash from 2048 tokens on, where the materialised
  // probabilities (B H T^2 values per layer, kept for backward) outgrow the tensor-core GEMMs' speed advantage.
  bool flash_attention_pays(std::int64_t seq, std::int64_t head_dim) const override;
  void flash_attention_forward(const float* qkv, float* out, float* state, std::int64_t batch, std::int64_t seq,
                               std::int64_t heads, std::int64_t head_dim) override;
  void flash_attention_backward(const float* dout, const float* qkv, const float* state, float* dqkv,
                                std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                std::int64_t head_dim) override;

  void cross_entropy_forward(In logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                             std::int64_t vocab, std::int64_t rows_per_sample) override;
  void cross_entropy_backward(In logits, const std::int32_t* labels, const float* dloss, Out dlogits,
                              std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) override;
  void mse_forward(const float* x, const float* target, float* loss, std::int64_t batch,
                   std::int64_t per_sample) override;
  void mse_backward(const float* x, const float* target, const float* dloss, float* dx, std::int64_t batch,
                    std::int64_t per_sample) override;
  void embedding_forward(const std::int32_t* tokens, In wte, In wpe, Out out, std::int64_t batch, std::int64_t seq,
                         std::int64_t dim, std::int64_t vocab) override;
  void embedding_backward(const std::int32_t* tokens, In dout, float* dwte, float* dwpe, std::int64_t batch,
                          std::int64_t seq, std::int64_t dim) override;

  void sgd_momentum(float* param, const float* grad, float* momentum_buffer, std::int64_t n, float lr, float momentum,
                    float weight_decay) override;
  void adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1, float beta2,
             float eps, float weight_decay, std::int64_t step) override;
  void adamw_multi(const AdamwTensor* tensors, int count, float lr, float beta1, float beta2, float eps,
                   std::int64_t step) override;
  double sum_squares(const float* x, std::int64_t n) override;
  void sum_squares_each(const float* const* x, const std::int64_t* n, int count, double* out) override;

 private:
  // CUDA's current device is per thread: every entry point makes ours current first.
  void bind() const { use_device(device_); }

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  CudaAllocator* allocator_ = nullptr;  // never destroyed, like the backend
  CudaContext ctx_;
};

}  // namespace libpipe::cuda
