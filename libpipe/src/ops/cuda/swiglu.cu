// The swiglu gate on the GPU: one thread per output element in a grid-stride
// loop over rows of [gate, up] (cpu/swiglu.cpp has the same formulas).
#include <cstdint>

#include "ops/cuda/cuda_check.hpp"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/nn_kernels.hpp"
#include "ops/cuda/storage.cuh"
#ifndef PIPE_CUDA_EMULATOR  // the backend's ops at the end of the file
#include "ops/cuda/cuda_backend.hpp"
#include "ops/float32_views.hpp"
#endif

namespace libpipe::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_kernel(const T* __restrict__ h, T* __restrict__ y, std::int64_t rows, std::int64_t cols) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    const float a = load(h, r * 2 * cols + c);
    store(y, i, a * sigmoid(a) * load(h, r * 2 * cols + cols + c));
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(const T* __restrict__ h, const T* __restrict__ dy, T* __restrict__ dh, std::int64_t rows,
                           std::int64_t cols) {
  const std::int64_t n = rows * cols;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / cols, c = i % cols;
    const float a = load(h, r * 2 * cols + c), up = load(h, r * 2 * cols + cols + c), g = load(dy, i);
    const float sig = sigmoid(a);
    store(dh, r * 2 * cols + c, g * up * (sig * (1.0f + a * (1.0f - sig))));
    store(dh, r * 2 * cols + cols + c, g * (a * sig));
  }
}

template <class T>
void forward(const CudaContext& ctx, const T* h, T* y, std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  swiglu_forward_kernel<T><<<nn::grid_for(ctx, rows * cols, kThreads), kThreads, 0, ctx.stream>>>(h, y, rows, cols);
  PIPE_CUDA_CHECK_LAUNCH("swiglu_forward_kernel");
}

template <class T>
void backward(const CudaContext& ctx, const T* h, const T* dy, T* dh, std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  swiglu_backward_kernel<T>
      <<<nn::grid_for(ctx, rows * cols, kThreads), kThreads, 0, ctx.stream>>>(h, dy, dh, rows, cols);
  PIPE_CUDA_CHECK_LAUNCH("swiglu_backward_kernel");
}

}  // namespace

void swiglu_forward(const CudaContext& ctx, const float* h, float* y, std::int64_t rows, std::int64_t cols) {
  forward(ctx, h, y, rows, cols);
}
void swiglu_forward(const CudaContext& ctx, const bf16* h, bf16* y, std::int64_t rows, std::int64_t cols) {
  forward(ctx, h, y, rows, cols);
}
void swiglu_backward(const CudaContext& ctx, const float* h, const float* dy, float* dh, std::int64_t rows,
                     std::int64_t cols) {
  backward(ctx, h, dy, dh, rows, cols);
}
void swiglu_backward(const CudaContext& ctx, const bf16* h, const bf16* dy, bf16* dh, std::int64_t rows,
                     std::int64_t cols) {
  backward(ctx, h, dy, dh, rows, cols);
}

#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::swiglu_forward(In h, Out y, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({h.dtype, y.dtype})) return cuda::swiglu_forward(ctx_, bits(h), bits(y), rows, cols);
  Float32Views v(*this, "swiglu_forward");
  cuda::swiglu_forward(ctx_, v.in(h, rows * 2 * cols), v.out(y, rows * cols), rows, cols);
  v.finish();
}

void CudaBackend::swiglu_backward(In h, In dy, Out dh, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({h.dtype, dy.dtype, dh.dtype}))
    return cuda::swiglu_backward(ctx_, bits(h), bits(dy), bits(dh), rows, cols);
  Float32Views v(*this, "swiglu_backward");
  cuda::swiglu_backward(ctx_, v.in(h, rows * 2 * cols), v.in(dy, rows * cols), v.out(dh, rows * 2 * cols), rows,
                        cols);
  v.finish();
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
