// Root-mean-square norm over the last dimension on the GPU, laid out as layernorm.cu: one
// warp per row for the forward and the input gradient, and a deterministic
// two-pass column reduction (per-chunk partial sums, then one thread per
// column adding them in chunk order) for the weight gradient.
#include <algorithm>
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

using nn::kWarp;

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

// T: float, or bfloat16 under mixed precision (storage.cuh); the sums and rstd are float.
template <class T>
__global__ void __launch_bounds__(kThreads)
    rms_norm_forward_kernel(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ y,
                            float* __restrict__ rstd, std::int64_t rows, std::int64_t cols, float eps) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  float ss = 0.0f;
  for (std::int64_t c = lane; c < cols; c += kWarp) {
    const float v = load(xr, c);
    ss += v * v;
  }
  const float rs = rsqrtf(nn::warp_sum(ss) / static_cast<float>(cols) + eps);
  for (std::int64_t c = lane; c < cols; c += kWarp) store(yr, c, load(xr, c) * rs * load(weight, c));
  if (lane == 0) rstd[row] = rs;
}

// dx = rstd (g - x rstd^2 mean(g x)), g = dy * w
template <class T>
__global__ void __launch_bounds__(kThreads)
    rms_norm_backward_input_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ weight,
                                   const float* __restrict__ rstd, T* __restrict__ dx, std::int64_t rows,
                                   std::int64_t cols) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const T* dyr = dy + row * cols;
  const T* xr = x + row * cols;
  T* dxr = dx + row * cols;
  const float rs = rstd[row];
  float sgx = 0.0f;
  for (std::int64_t c = lane; c < cols; c += kWarp) sgx += load(dyr, c) * load(weight, c) * load(xr, c);
  const float k = nn::warp_sum(sgx) / static_cast<float>(cols) * rs * rs;
  for (std::int64_t c = lane; c < cols; c += kWarp)
    store(dxr, c, rs * (load(dyr, c) * load(weight, c) - load(xr, c) * k));
}

// Weight gradient, pass 1: block (x: 32 columns, y: 8 row lanes) sums rows [chunk * rows_per_chunk, ...) of its
// 32 columns; the 8 lane sums are added in order. partial is [chunks, cols].
constexpr int kColTile = 32;
constexpr int kRowLanes = 8;

template <class T>
__global__ void __launch_bounds__(kColTile * kRowLanes)
    rms_norm_weight_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x, const float* __restrict__ rstd,
                                   float* __restrict__ partial, std::int64_t rows, std::int64_t cols,
                                   std::int64_t rows_per_chunk) {
  __shared__ float s_dw[kRowLanes][kColTile + 1];
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_chunk;
  const std::int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float dw = 0.0f;
  if (col < cols)
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes)
      dw += load(dy, r * cols + col) * (load(x, r * cols + col) * rstd[r]);
  s_dw[threadIdx.y][threadIdx.x] = dw;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    dw = 0.0f;
#pragma unroll
    for (int i = 0; i < kRowLanes; ++i) dw += s_dw[i][threadIdx.x];
    partial[static_cast<std::int64_t>(blockIdx.y) * cols + col] = dw;
  }
}

// Pass 2: one thread per column adds the chunks' sums in chunk order into dweight.
__global__ void __launch_bounds__(kThreads)
    rms_norm_weight_finish_kernel(const float* __restrict__ partial, float* __restrict__ dweight, std::int64_t cols,
                                  std::int64_t chunks) {
  for (std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < cols;
       col += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float dw = 0.0f;
    for (std::int64_t k = 0; k < chunks; ++k) dw += partial[k * cols + col];
    dweight[col] += dw;
  }
}

unsigned row_blocks(std::int64_t rows) { return static_cast<unsigned>(nn::ceil_div(rows, kRowsPerBlock)); }

template <class T>
void forward(const CudaContext& ctx, const T* x, const T* weight, T* y, float* rstd, std::int64_t rows,
             std::int64_t cols, float eps) {
  if (rows <= 0 || cols <= 0) return;
  rms_norm_forward_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(x, weight, y, rstd, rows, cols, eps);
  PIPE_CUDA_CHECK_LAUNCH("rms_norm_forward_kernel");
}

template <class T>
void backward_input(const CudaContext& ctx, const T* dy, const T* x, const T* weight, const float* rstd, T* dx,
                    std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  rms_norm_backward_input_kernel<T>
      <<<row_blocks(rows), kThreads, 0, ctx.stream>>>(dy, x, weight, rstd, dx, rows, cols);
  PIPE_CUDA_CHECK_LAUNCH("rms_norm_backward_input_kernel");
}

template <class T>
void backward_weight(const CudaContext& ctx, const T* dy, const T* x, const float* rstd, float* dweight,
                     std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  // Chunks depend on rows only (not on the device), so every GPU sums in the same order.
  const std::int64_t rows_per_chunk = std::max<std::int64_t>(64, nn::ceil_div(rows, 512));
  const std::int64_t chunks = nn::ceil_div(rows, rows_per_chunk);
  std::shared_ptr<void> mem = nn::scratch(ctx, static_cast<std::size_t>(chunks * cols) * sizeof(float));
  float* partial = static_cast<float*>(mem.get());
  const dim3 grid(static_cast<unsigned>(nn::ceil_div(cols, kColTile)), static_cast<unsigned>(chunks));
  const dim3 block(kColTile, kRowLanes);
  rms_norm_weight_partial_kernel<T><<<grid, block, 0, ctx.stream>>>(dy, x, rstd, partial, rows, cols,
                                                                   rows_per_chunk);
  PIPE_CUDA_CHECK_LAUNCH("rms_norm_weight_partial_kernel");
  rms_norm_weight_finish_kernel<<<nn::grid_for(ctx, cols, kThreads), kThreads, 0, ctx.stream>>>(partial, dweight,
                                                                                                cols, chunks);
  PIPE_CUDA_CHECK_LAUNCH("rms_norm_weight_finish_kernel");
}

}  // namespace

void rms_norm_forward(const CudaContext& ctx, const float* x, const float* weight, float* y, float* rstd,
                      std::int64_t rows, std::int64_t cols, float eps) {
  forward(ctx, x, weight, y, rstd, rows, cols, eps);
}
void rms_norm_forward(const CudaContext& ctx, const bf16* x, const bf16* weight, bf16* y, float* rstd,
                      std::int64_t rows, std::int64_t cols, float eps) {
  forward(ctx, x, weight, y, rstd, rows, cols, eps);
}
void rms_norm_backward_input(const CudaContext& ctx, const float* dy, const float* x, const float* weight,
                             const float* rstd, float* dx, std::int64_t rows, std::int64_t cols) {
  backward_input(ctx, dy, x, weight, rstd, dx, rows, cols);
}
void rms_norm_backward_input(const CudaContext& ctx, const bf16* dy, const bf16* x, const bf16* weight,
                             const float* rstd, bf16* dx, std::int64_t rows, std::int64_t cols) {
  backward_input(ctx, dy, x, weight, rstd, dx, rows, cols);
}
void rms_norm_backward_weight(const CudaContext& ctx, const float* dy, const float* x, const float* rstd,
                              float* dweight, std::int64_t rows, std::int64_t cols) {
  backward_weight(ctx, dy, x, rstd, dweight, rows, cols);
}
void rms_norm_backward_weight(const CudaContext& ctx, const bf16* dy, const bf16* x, const float* rstd,
                              float* dweight, std::int64_t rows, std::int64_t cols) {
  backward_weight(ctx, dy, x, rstd, dweight, rows, cols);
}

// ---- the backend's ops (CudaBackend, pipe/backend_ops.inc) on these kernels; left out of the CUDA-on-CPU
// emulator, which tests the launchers above against the CPU backend.
#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::rms_norm_forward(In x, In weight, Out y, float* rstd, std::int64_t rows, std::int64_t cols,
                                   float eps) {
  bind();
  if (all_bf16({x.dtype, weight.dtype, y.dtype}))
    return cuda::rms_norm_forward(ctx_, bits(x), bits(weight), bits(y), rstd, rows, cols, eps);
  Float32Views v(*this, "rms_norm_forward");
  cuda::rms_norm_forward(ctx_, v.in(x, rows * cols), v.in(weight, cols), v.out(y, rows * cols), rstd, rows, cols,
                         eps);
  v.finish();
}

void CudaBackend::rms_norm_backward_input(In dy, In x, In weight, const float* rstd, Out dx, std::int64_t rows,
                                          std::int64_t cols) {
  bind();
  if (all_bf16({dy.dtype, x.dtype, weight.dtype, dx.dtype}))
    return cuda::rms_norm_backward_input(ctx_, bits(dy), bits(x), bits(weight), rstd, bits(dx), rows, cols);
  Float32Views v(*this, "rms_norm_backward_input");
  cuda::rms_norm_backward_input(ctx_, v.in(dy, rows * cols), v.in(x, rows * cols), v.in(weight, cols), rstd,
                                v.out(dx, rows * cols), rows, cols);
  v.finish();
}

void CudaBackend::rms_norm_backward_weight(In dy, In x, const float* rstd, float* dweight, std::int64_t rows,
                                           std::int64_t cols) {
  bind();
  if (all_bf16({dy.dtype, x.dtype}))
    return cuda::rms_norm_backward_weight(ctx_, bits(dy), bits(x), rstd, dweight, rows, cols);
  Float32Views v(*this, "rms_norm_backward_weight");
  cuda::rms_norm_backward_weight(ctx_, v.in(dy, rows * cols), v.in(x, rows * cols), rstd, dweight, rows, cols);
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
