// Rotary position embedding with grouped key/value heads on the GPU (the
// semantics: pipe/ops.hpp's rotary_gqa): one thread per output element in a
// grid-stride loop. The angle is computed as the CPU backend does (float32
// t * inv_freq, cos and sin in double), so that both agree to rounding.
#include <cmath>
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

struct CosSin {
  float c, s;
};

// Channel pair i (< D/2) at position t.
__device__ __forceinline__ CosSin angle_of(std::int64_t t, std::int64_t i, std::int64_t head_dim, float theta) {
  const auto inv_freq = static_cast<float>(
      1.0 / pow(static_cast<double>(theta), static_cast<double>(2 * i) / static_cast<double>(head_dim)));
  const double angle = static_cast<double>(static_cast<float>(t) * inv_freq);
  return {static_cast<float>(cos(angle)), static_cast<float>(sin(angle))};
}

// Element d of a head rotated forward (sign 1) or back (sign -1); `head` points at the head's D values.
template <class T>
__device__ __forceinline__ float rotated(const T* head, std::int64_t d, std::int64_t half, CosSin cs, float sign) {
  if (d < half) return load(head, d) * cs.c - sign * (load(head, d + half) * cs.s);
  return load(head, d) * cs.c + sign * (load(head, d - half) * cs.s);
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    rotary_gqa_forward_kernel(const T* __restrict__ x, T* __restrict__ qkv, std::int64_t rows, std::int64_t seq,
                              std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const std::int64_t D = head_dim, half = D / 2, group = heads / kv_heads;
  const std::int64_t in_row = (heads + 2 * kv_heads) * D, out_row = 3 * heads * D, n = rows * out_row;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = e / out_row, j = e % out_row;
    const std::int64_t part = j / (heads * D), h = (j / D) % heads, d = j % D;
    const T* xr = x + row * in_row;
    float y;
    if (part == 2) {
      y = load(xr, (heads + kv_heads + h / group) * D + d);
    } else {
      const T* head = xr + (part == 0 ? h : heads + h / group) * D;
      y = rotated(head, d, half, angle_of(row % seq, d % half, D, theta), 1.0f);
    }
    store(qkv, e, y);
  }
}

// One thread per element of dx: dq rotated back; dk and dv summed over the group's heads in order (dk then
// rotated back: the rotation is linear, and the CPU backend sums first too).
template <class T>
__global__ void __launch_bounds__(kThreads)
    rotary_gqa_backward_kernel(const T* __restrict__ dqkv, T* __restrict__ dx, std::int64_t rows, std::int64_t seq,
                               std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const std::int64_t D = head_dim, half = D / 2, group = heads / kv_heads;
  const std::int64_t in_row = 3 * heads * D, out_row = (heads + 2 * kv_heads) * D, n = rows * out_row;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = e / out_row, j = e % out_row, head = j / D, d = j % D;
    const T* gr = dqkv + row * in_row;
    float y;
    if (head < heads) {
      y = rotated(gr + head * D, d, half, angle_of(row % seq, d % half, D, theta), -1.0f);
    } else if (head < heads + kv_heads) {
      const std::int64_t g = head - heads;
      const std::int64_t partner = d < half ? d + half : d - half;
      float mine = 0.0f, other = 0.0f;
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
        mine += load(gr, (heads + h) * D + d);
        other += load(gr, (heads + h) * D + partner);
      }
      const CosSin cs = angle_of(row % seq, d % half, D, theta);
      y = d < half ? mine * cs.c + other * cs.s : mine * cs.c - other * cs.s;
    } else {
      const std::int64_t g = head - heads - kv_heads;
      y = 0.0f;
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h) y += load(gr, (2 * heads + h) * D + d);
    }
    store(dx, e, y);
  }
}

template <class T>
void forward(const CudaContext& ctx, const T* x, T* qkv, std::int64_t batch, std::int64_t seq, std::int64_t heads,
             std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const std::int64_t n = batch * seq * 3 * heads * head_dim;
  if (n <= 0) return;
  rotary_gqa_forward_kernel<T><<<nn::grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
      x, qkv, batch * seq, seq, heads, kv_heads, head_dim, theta);
  PIPE_CUDA_CHECK_LAUNCH("rotary_gqa_forward_kernel");
}

template <class T>
void backward(const CudaContext& ctx, const T* dqkv, T* dx, std::int64_t batch, std::int64_t seq, std::int64_t heads,
              std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const std::int64_t n = batch * seq * (heads + 2 * kv_heads) * head_dim;
  if (n <= 0) return;
  rotary_gqa_backward_kernel<T><<<nn::grid_for(ctx, n, kThreads), kThreads, 0, ctx.stream>>>(
      dqkv, dx, batch * seq, seq, heads, kv_heads, head_dim, theta);
  PIPE_CUDA_CHECK_LAUNCH("rotary_gqa_backward_kernel");
}

}  // namespace

void rotary_gqa_forward(const CudaContext& ctx, const float* x, float* qkv, std::int64_t batch, std::int64_t seq,
                        std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  forward(ctx, x, qkv, batch, seq, heads, kv_heads, head_dim, theta);
}
void rotary_gqa_forward(const CudaContext& ctx, const bf16* x, bf16* qkv, std::int64_t batch, std::int64_t seq,
                        std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  forward(ctx, x, qkv, batch, seq, heads, kv_heads, head_dim, theta);
}
void rotary_gqa_backward(const CudaContext& ctx, const float* dqkv, float* dx, std::int64_t batch, std::int64_t seq,
                         std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  backward(ctx, dqkv, dx, batch, seq, heads, kv_heads, head_dim, theta);
}
void rotary_gqa_backward(const CudaContext& ctx, const bf16* dqkv, bf16* dx, std::int64_t batch, std::int64_t seq,
                         std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  backward(ctx, dqkv, dx, batch, seq, heads, kv_heads, head_dim, theta);
}

#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::rotary_gqa_forward(In x, Out qkv, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                     std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  bind();
  if (all_bf16({x.dtype, qkv.dtype}))
    return cuda::rotary_gqa_forward(ctx_, bits(x), bits(qkv), batch, seq, heads, kv_heads, head_dim, theta);
  const std::int64_t rows = batch * seq;
  Float32Views v(*this, "rotary_gqa_forward");
  cuda::rotary_gqa_forward(ctx_, v.in(x, rows * (heads + 2 * kv_heads) * head_dim),
                           v.out(qkv, rows * 3 * heads * head_dim), batch, seq, heads, kv_heads, head_dim, theta);
  v.finish();
}

void CudaBackend::rotary_gqa_backward(In dqkv, Out dx, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                      std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  bind();
  if (all_bf16({dqkv.dtype, dx.dtype}))
    return cuda::rotary_gqa_backward(ctx_, bits(dqkv), bits(dx), batch, seq, heads, kv_heads, head_dim, theta);
  const std::int64_t rows = batch * seq;
  Float32Views v(*this, "rotary_gqa_backward");
  cuda::rotary_gqa_backward(ctx_, v.in(dqkv, rows * 3 * heads * head_dim),
                            v.out(dx, rows * (heads + 2 * kv_heads) * head_dim), batch, seq, heads, kv_heads,
                            head_dim, theta);
  v.finish();
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
