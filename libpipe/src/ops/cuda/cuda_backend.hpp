// The CUDA backend: every op of pipe/backend.hpp on one GPU. All work runs in
// issue order on one non-blocking compute stream (so the caching allocator can
// reuse freed blocks without synchronising); GEMMs are cuBLAS's on that stream;
// everything else is this directory's kernels. One instance per process, made
// by detail::cuda_backend() (cuda_runtime.cpp) and never destroyed: tensors
// may be freed after static destruction, and CUDA must not be called then.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <string>

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

  // Every op of pipe/backend_ops.inc. Memory and GEMMs are cuda_backend.cpp's: native cuBLAS GEMMs when every
  // operand is float32, or A and B are bfloat16 (the tensor cores, fp32 accumulation) into a float32 or bfloat16 C;
  // otherwise gemm_widened. The other ops sit at the end of their family's kernel file (elementwise.cu,
  // layernorm.cu, attention.cu, losses.cu, embedding.cu, optimizer.cu): typed ops take native bfloat16 kernels when
  // every array of the call is bfloat16 (what --dtype bf16 passes), the float32 kernels when every array is
  // float32, and those on Float32Views for any other mix.
#define PIPE_BACKEND_OP(ret, name, params) ret name params override;
#include "pipe/backend_ops.inc"
#undef PIPE_BACKEND_OP

  // flash_attention.cu. PIPE_ATTENTION=flash|materialized forces a path; by default flash from 2048 tokens on,
  // where the materialised probabilities (B H T^2 values per layer, kept for backward) outgrow the tensor-core
  // GEMMs' speed advantage.
  bool flash_attention_pays(std::int64_t seq, std::int64_t head_dim) const override;
  void flash_attention_forward(const float* qkv, float* out, float* state, std::int64_t batch, std::int64_t seq,
                               std::int64_t heads, std::int64_t head_dim) override;
  void flash_attention_backward(const float* dout, const float* qkv, const float* state, float* dqkv,
                                std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                std::int64_t head_dim) override;
  // optimizer.cu
  void adamw_multi(const AdamwTensor* tensors, int count, float lr, float beta1, float beta2, float eps,
                   std::int64_t step) override;
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

// For the typed ops' overrides: whether every array of a call is bfloat16, and a bfloat16 array's bits.
inline bool all_bf16(std::initializer_list<DType> types) {
  for (DType t : types)
    if (t != DType::bfloat16) return false;
  return true;
}
inline const std::uint16_t* bits(Backend::In x) { return static_cast<const std::uint16_t*>(x.data); }
inline std::uint16_t* bits(Backend::Out x) { return static_cast<std::uint16_t*>(x.data); }

}  // namespace libpipe::cuda
