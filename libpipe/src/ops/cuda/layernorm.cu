// LayerNorm over the last dimension on the GPU. Forward and the input
// gradient take one warp per row (rows are short: a few thousand floats stay
// in L1 between the passes); the weight gradient reduces columns in two
// deterministic passes: per-block partial sums into scratch, then one thread
// per column adds them in a fixed order.
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

// Same arithmetic as the CPU backend: two passes on x - x[0] (mean, then squared deviations), so that a large
// common offset does not drown the deviations; a third pass writes y. V = 4: vector accesses. T: float, or
// bfloat16 under mixed precision (storage.cuh; statistics stay float).
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    layernorm_forward_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                             T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, std::int64_t rows,
                             std::int64_t cols, float eps) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const T* xr = x + row * cols;
  T* yr = y + row * cols;
  const float inv_cols = 1.0f / static_cast<float>(cols);
  const float pivot = load(xr, 0);

  float s = 0.0f;
  for (std::int64_t c = static_cast<std::int64_t>(lane) * V; c < cols; c += kWarp * V) {
    float v[V];
    nn::load_vec<V>(xr + c, v);
#pragma unroll
    for (int i = 0; i < V; ++i) s += v[i] - pivot;
  }
  const float dm = nn::warp_sum(s) * inv_cols;  // mean - pivot

  float ss = 0.0f;
  for (std::int64_t c = static_cast<std::int64_t>(lane) * V; c < cols; c += kWarp * V) {
    float v[V];
    nn::load_vec<V>(xr + c, v);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float d = (v[i] - pivot) - dm;
      ss += d * d;
    }
  }
  const float rs = rsqrtf(nn::warp_sum(ss) * inv_cols + eps);

  for (std::int64_t c = static_cast<std::int64_t>(lane) * V; c < cols; c += kWarp * V) {
    float v[V], w[V], b[V], o[V];
    nn::load_vec<V>(xr + c, v);
    nn::load_vec<V>(weight + c, w);
    nn::load_vec<V>(bias + c, b);
#pragma unroll
    for (int i = 0; i < V; ++i) o[i] = ((v[i] - pivot) - dm) * rs * w[i] + b[i];
    nn::store_vec<V>(yr + c, o);
  }
  if (lane == 0) {
    mean[row] = pivot + dm;
    rstd[row] = rs;
  }
}

// dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight: one pass for both sums, one for dx.
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    layernorm_backward_input_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ weight,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    T* __restrict__ dx, std::int64_t rows, std::int64_t cols) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const T* dyr = dy + row * cols;
  const T* xr = x + row * cols;
  T* dxr = dx + row * cols;
  const float m = mean[row];
  const float rs = rstd[row];
  const float inv_cols = 1.0f / static_cast<float>(cols);

  float sg = 0.0f, sgx = 0.0f;
  for (std::int64_t c = static_cast<std::int64_t>(lane) * V; c < cols; c += kWarp * V) {
    float g[V], w[V], v[V];
    nn::load_vec<V>(dyr + c, g);
    nn::load_vec<V>(weight + c, w);
    nn::load_vec<V>(xr + c, v);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float gi = g[i] * w[i];
      sg += gi;
      sgx += gi * (v[i] - m);
    }
  }
  const float mg = nn::warp_sum(sg) * inv_cols;
  const float mgx = nn::warp_sum(sgx) * rs * inv_cols;

  for (std::int64_t c = static_cast<std::int64_t>(lane) * V; c < cols; c += kWarp * V) {
    float g[V], w[V], v[V], o[V];
    nn::load_vec<V>(dyr + c, g);
    nn::load_vec<V>(weight + c, w);
    nn::load_vec<V>(xr + c, v);
#pragma unroll
    for (int i = 0; i < V; ++i) o[i] = rs * (g[i] * w[i] - mg - (v[i] - m) * rs * mgx);
    nn::store_vec<V>(dxr + c, o);
  }
}

// Weight gradient, pass 1: block (x: 32 columns, y: 8 row lanes) sums rows [chunk * rows_per_chunk, ...) of
// its 32 columns; each row lane strides by 8 rows, then the 8 lane sums are added in order (shared memory).
// partial is [chunks, 2, cols]: dweight sums, then dbias sums.
constexpr int kColTile = 32;
constexpr int kRowLanes = 8;

template <class T>
__global__ void __launch_bounds__(kColTile * kRowLanes)
    layernorm_weight_partial_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    float* __restrict__ partial, std::int64_t rows, std::int64_t cols,
                                    std::int64_t rows_per_chunk) {
  __shared__ float s_dw[kRowLanes][kColTile + 1];
  __shared__ float s_db[kRowLanes][kColTile + 1];
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_chunk;
  const std::int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
  float dw = 0.0f, db = 0.0f;
  if (col < cols) {
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const float g = load(dy, r * cols + col);
      dw += g * ((load(x, r * cols + col) - mean[r]) * rstd[r]);
      db += g;
    }
  }
  s_dw[threadIdx.y][threadIdx.x] = dw;
  s_db[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    dw = 0.0f;
    db = 0.0f;
#pragma unroll
    for (int i = 0; i < kRowLanes; ++i) {
      dw += s_dw[i][threadIdx.x];
      db += s_db[i][threadIdx.x];
    }
    float* p = partial + static_cast<std::int64_t>(blockIdx.y) * 2 * cols;
    p[col] = dw;
    p[cols + col] = db;
  }
}

// Pass 2: one thread per column adds the chunks' sums in chunk order into dweight and dbias.
__global__ void __launch_bounds__(kThreads)
    layernorm_weight_finish_kernel(const float* __restrict__ partial, float* __restrict__ dweight,
                                   float* __restrict__ dbias, std::int64_t cols, std::int64_t chunks) {
  for (std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; col < cols;
       col += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float dw = 0.0f, db = 0.0f;
    for (std::int64_t k = 0; k < chunks; ++k) {
      dw += partial[k * 2 * cols + col];
      db += partial[k * 2 * cols + cols + col];
    }
    dweight[col] += dw;
    dbias[col] += db;
  }
}

unsigned row_blocks(std::int64_t rows) { return static_cast<unsigned>(nn::ceil_div(rows, kRowsPerBlock)); }

}  // namespace

namespace {

template <class T>
void forward(const CudaContext& ctx, const T* x, const T* weight, const T* bias, T* y, float* mean, float* rstd,
             std::int64_t rows, std::int64_t cols, float eps) {
  if (rows <= 0 || cols <= 0) return;
  const bool vec = cols % 4 == 0 && nn::vec4_aligned(x) && nn::vec4_aligned(weight) && nn::vec4_aligned(bias) &&
                   nn::vec4_aligned(y);
  if (vec)
    layernorm_forward_kernel<T, 4><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(x, weight, bias, y, mean, rstd, rows,
                                                                               cols, eps);
  else
    layernorm_forward_kernel<T, 1><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(x, weight, bias, y, mean, rstd, rows,
                                                                               cols, eps);
  PIPE_CUDA_CHECK_LAUNCH("layernorm_forward_kernel");
}

template <class T>
void backward_input(const CudaContext& ctx, const T* dy, const T* x, const T* weight, const float* mean,
                    const float* rstd, T* dx, std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const bool vec = cols % 4 == 0 && nn::vec4_aligned(dy) && nn::vec4_aligned(x) && nn::vec4_aligned(weight) &&
                   nn::vec4_aligned(dx);
  if (vec)
    layernorm_backward_input_kernel<T, 4>
        <<<row_blocks(rows), kThreads, 0, ctx.stream>>>(dy, x, weight, mean, rstd, dx, rows, cols);
  else
    layernorm_backward_input_kernel<T, 1>
        <<<row_blocks(rows), kThreads, 0, ctx.stream>>>(dy, x, weight, mean, rstd, dx, rows, cols);
  PIPE_CUDA_CHECK_LAUNCH("layernorm_backward_input_kernel");
}

template <class T>
void backward_weight(const CudaContext& ctx, const T* dy, const T* x, const float* mean, const float* rstd,
                     float* dweight, float* dbias, std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  // Chunks depend on rows only (not on the device), so every GPU sums in the same order: at least 64 rows per
  // chunk (8 per row lane), at most 512 chunks (bounds the scratch at 4 KiB per column).
  const std::int64_t rows_per_chunk = std::max<std::int64_t>(64, nn::ceil_div(rows, 512));
  const std::int64_t chunks = nn::ceil_div(rows, rows_per_chunk);
  std::shared_ptr<void> mem = nn::scratch(ctx, static_cast<std::size_t>(chunks * 2 * cols) * sizeof(float));
  float* partial = static_cast<float*>(mem.get());

  const dim3 grid(static_cast<unsigned>(nn::ceil_div(cols, kColTile)), static_cast<unsigned>(chunks));
  const dim3 block(kColTile, kRowLanes);
  layernorm_weight_partial_kernel<T><<<grid, block, 0, ctx.stream>>>(dy, x, mean, rstd, partial, rows, cols,
                                                                 rows_per_chunk);
  PIPE_CUDA_CHECK_LAUNCH("layernorm_weight_partial_kernel");
  layernorm_weight_finish_kernel<<<nn::grid_for(ctx, cols, kThreads), kThreads, 0, ctx.stream>>>(
      partial, dweight, dbias, cols, chunks);
  PIPE_CUDA_CHECK_LAUNCH("layernorm_weight_finish_kernel");
}

}  // namespace

void layernorm_forward(const CudaContext& ctx, const float* x, const float* weight, const float* bias, float* y,
                       float* mean, float* rstd, std::int64_t rows, std::int64_t cols, float eps) {
  forward(ctx, x, weight, bias, y, mean, rstd, rows, cols, eps);
}
void layernorm_forward(const CudaContext& ctx, const bf16* x, const bf16* weight, const bf16* bias, bf16* y,
                       float* mean, float* rstd, std::int64_t rows, std::int64_t cols, float eps) {
  forward(ctx, x, weight, bias, y, mean, rstd, rows, cols, eps);
}

void layernorm_backward_input(const CudaContext& ctx, const float* dy, const float* x, const float* weight,
                              const float* mean, const float* rstd, float* dx, std::int64_t rows, std::int64_t cols) {
  backward_input(ctx, dy, x, weight, mean, rstd, dx, rows, cols);
}
void layernorm_backward_input(const CudaContext& ctx, const bf16* dy, const bf16* x, const bf16* weight,
                              const float* mean, const float* rstd, bf16* dx, std::int64_t rows, std::int64_t cols) {
  backward_input(ctx, dy, x, weight, mean, rstd, dx, rows, cols);
}

void layernorm_backward_weight(const CudaContext& ctx, const float* dy, const float* x, const float* mean,
                               const float* rstd, float* dweight, float* dbias, std::int64_t rows,
                               std::int64_t cols) {
  backward_weight(ctx, dy, x, mean, rstd, dweight, dbias, rows, cols);
}
void layernorm_backward_weight(const CudaContext& ctx, const bf16* dy, const bf16* x, const float* mean,
                               const float* rstd, float* dweight, float* dbias, std::int64_t rows,
                               std::int64_t cols) {
  backward_weight(ctx, dy, x, mean, rstd, dweight, dbias, rows, cols);
}

// ---- the backend's ops (CudaBackend, pipe/backend_ops.inc) on these kernels; left out of the CUDA-on-CPU
// emulator, which tests the launchers above against the CPU backend.
#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::layernorm_forward(In x, In weight, In bias, Out y, float* mean, float* rstd, std::int64_t rows,
                                    std::int64_t cols, float eps) {
  bind();
  if (all_bf16({x.dtype, weight.dtype, bias.dtype, y.dtype}))
    return cuda::layernorm_forward(ctx_, bits(x), bits(weight), bits(bias), bits(y), mean, rstd, rows, cols, eps);
  Float32Views v(*this, "layernorm_forward");
  cuda::layernorm_forward(ctx_, v.in(x, rows * cols), v.in(weight, cols), v.in(bias, cols), v.out(y, rows * cols),
                          mean, rstd, rows, cols, eps);
  v.finish();
}

void CudaBackend::layernorm_backward_input(In dy, In x, In weight, const float* mean, const float* rstd, Out dx,
                                           std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({dy.dtype, x.dtype, weight.dtype, dx.dtype}))
    return cuda::layernorm_backward_input(ctx_, bits(dy), bits(x), bits(weight), mean, rstd, bits(dx), rows, cols);
  Float32Views v(*this, "layernorm_backward_input");
  cuda::layernorm_backward_input(ctx_, v.in(dy, rows * cols), v.in(x, rows * cols), v.in(weight, cols), mean, rstd,
                                 v.out(dx, rows * cols), rows, cols);
  v.finish();
}

void CudaBackend::layernorm_backward_weight(In dy, In x, const float* mean, const float* rstd, float* dweight,
                                            float* dbias, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({dy.dtype, x.dtype}))
    return cuda::layernorm_backward_weight(ctx_, bits(dy), bits(x), mean, rstd, dweight, dbias, rows, cols);
  Float32Views v(*this, "layernorm_backward_weight");
  cuda::layernorm_backward_weight(ctx_, v.in(dy, rows * cols), v.in(x, rows * cols), mean, rstd, dweight, dbias, rows,
                                  cols);
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
