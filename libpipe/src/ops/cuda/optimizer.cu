// Optimizer updates and the squared-norm reduction of the CUDA backend. The
// updates are the CPU backend's formulas in the same order of operations;
// square root and division are IEEE-rounded (the fast-math build would
// otherwise approximate them), so results match the CPU's to the rounding of
// fused multiply-adds.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ops/cuda/cuda_kernels.hpp"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/storage.cuh"
#ifndef PIPE_CUDA_EMULATOR  // the backend's ops at the end of the file
#include "ops/cuda/cuda_backend.hpp"
#include "ops/float32_views.hpp"
#include "pipe/error.hpp"
#endif

namespace libpipe::cuda {
namespace {

// PyTorch's SGD (dampening 0, not Nesterov), L2 weight decay.
struct Sgd {
  float* param;
  const float* grad;
  float* buffer;
  float lr, momentum, weight_decay;

  __device__ void update(float& p, float grad_in, float& buf) const {
    const float g = grad_in + weight_decay * p;
    const float b = momentum * buf + g;
    buf = b;
    p -= lr * b;
  }
  __device__ void one(std::int64_t j) const {
    float p = param[j], b = buffer[j];
    update(p, grad[j], b);
    param[j] = p;
    buffer[j] = b;
  }
  __device__ void vec4(std::int64_t i) const {
    float4 p = reinterpret_cast<float4*>(param)[i];
    float4 b = reinterpret_cast<float4*>(buffer)[i];
    const float4 g = reinterpret_cast<const float4*>(grad)[i];
    update(p.x, g.x, b.x);
    update(p.y, g.y, b.y);
    update(p.z, g.z, b.z);
    update(p.w, g.w, b.w);
    reinterpret_cast<float4*>(param)[i] = p;
    reinterpret_cast<float4*>(buffer)[i] = b;
  }
};

// PyTorch's AdamW: decoupled decay, bias corrections folded into step_size and inv_sqrt_bc2 on the host.
struct AdamW {
  float* param;
  const float* grad;
  float* m;
  float* v;
  float beta1, beta2, one_minus_b1, one_minus_b2, eps, decay, step_size, inv_sqrt_bc2;

  __device__ void update(float& p, float g, float& m_io, float& v_io) const {
    const float mi = beta1 * m_io + one_minus_b1 * g;
    const float vi = beta2 * v_io + one_minus_b2 * (g * g);
    m_io = mi;
    v_io = vi;
    p = p * decay - __fdiv_rn(step_size * mi, __fsqrt_rn(vi) * inv_sqrt_bc2 + eps);
  }
  __device__ void one(std::int64_t j) const {
    float p = param[j], mj = m[j], vj = v[j];
    update(p, grad[j], mj, vj);
    param[j] = p;
    m[j] = mj;
    v[j] = vj;
  }
  __device__ void vec4(std::int64_t i) const {
    float4 p = reinterpret_cast<float4*>(param)[i];
    float4 mi = reinterpret_cast<float4*>(m)[i];
    float4 vi = reinterpret_cast<float4*>(v)[i];
    const float4 g = reinterpret_cast<const float4*>(grad)[i];
    update(p.x, g.x, mi.x, vi.x);
    update(p.y, g.y, mi.y, vi.y);
    update(p.z, g.z, mi.z, vi.z);
    update(p.w, g.w, mi.w, vi.w);
    reinterpret_cast<float4*>(param)[i] = p;
    reinterpret_cast<float4*>(m)[i] = mi;
    reinterpret_cast<float4*>(v)[i] = vi;
  }
};

// ---- sum of squares

constexpr int kSumThreads = 256;
// A grid that does not depend on the GPU (so neither does the result), with enough threads to keep the
// largest GPUs' memory busy (262144 threads; an H100 holds 270336).
constexpr int kSumMaxBlocks = 1024;

// The block's total in a fixed order, valid in thread 0. blockDim.x must be kSumThreads.
__device__ double block_sum(double value) {
  __shared__ double warp_sums[kSumThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = value;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kSumThreads / 32; ++w) total += warp_sums[w];
  return total;
}

// partial[block] = sum of x^2 over the block's share (float4 over the first 4 * n4 floats, scalars after).
__global__ void __launch_bounds__(kSumThreads)
    sum_squares_kernel(const float* x, std::int64_t n4, std::int64_t n, double* partial) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  double acc = 0.0;
  for (std::int64_t i = start; i < n4; i += stride) {
    const float4 q = reinterpret_cast<const float4*>(x)[i];
    const double a = q.x, b = q.y, c = q.z, d = q.w;
    acc += a * a;
    acc += b * b;
    acc += c * c;
    acc += d * d;
  }
  for (std::int64_t j = 4 * n4 + start; j < n; j += stride) {
    const double a = x[j];
    acc += a * a;
  }
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kSumThreads) sum_partials_kernel(const double* partial, int count, double* out) {
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += kSumThreads) acc += partial[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *out = total;
}

}  // namespace

void sgd_momentum(const CudaContext& ctx, float* param, const float* grad, float* momentum_buffer, std::int64_t n,
                  float lr, float momentum, float weight_decay) {
  launch_elementwise(ctx, Sgd{param, grad, momentum_buffer, lr, momentum, weight_decay}, n,
                     aligned16(param) && aligned16(grad) && aligned16(momentum_buffer), "sgd_momentum");
}

// ---- fused multi-tensor AdamW
//
// The entries travel as the kernel's by-value argument (no upload, no wait): 64 of them, 3.6 KB, fit the 4 KB
// parameter space of every architecture. Every block walks every tensor of its launch, grid-striding through
// each in turn, so that one huge tensor (the token embedding) and a hundred small ones (biases, norms) spread
// over the whole GPU alike. Per element the arithmetic is the single-tensor kernel's (AdamW::update), so both
// paths give the same bits.

namespace {

constexpr int kAdamwBatch = 64;

struct AdamwEntry {
  float* param;
  const float* grad;
  float* m;
  float* v;
  std::uint16_t* bf16;
  std::int64_t n;
  float decay;
};

struct AdamwBatch {
  AdamwEntry e[kAdamwBatch];
  int count;
};
static_assert(sizeof(AdamwBatch) + 6 * sizeof(float) <= 4096, "kernel parameters are limited to 4 KB");

__global__ void __launch_bounds__(kThreads) adamw_multi_kernel(const AdamwBatch batch, float beta1, float beta2,
                                                                float eps, float step_size, float inv_sqrt_bc2) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int t = 0; t < batch.count; ++t) {
    const AdamwEntry& e = batch.e[t];
    const AdamW op{e.param, e.grad, e.m, e.v, beta1, beta2, 1.0f - beta1, 1.0f - beta2, eps, e.decay, step_size,
                   inv_sqrt_bc2};
    for (std::int64_t j = start; j < e.n; j += stride) {
      op.one(j);
      if (e.bf16 != nullptr) e.bf16[j] = round_to_bf16(e.param[j]);
    }
  }
}

}  // namespace

void adamw_multi(const CudaContext& ctx, const AdamwMultiEntry* tensors, int count, float beta1, float beta2,
                 float eps, float step_size, float inv_sqrt_bc2) {
  for (int first = 0; first < count; first += kAdamwBatch) {
    AdamwBatch batch{};
    batch.count = std::min(kAdamwBatch, count - first);
    std::int64_t largest = 0;
    for (int i = 0; i < batch.count; ++i) {
      const AdamwMultiEntry& t = tensors[first + i];
      batch.e[i] = AdamwEntry{t.param, t.grad, t.m, t.v, t.param_bf16, t.n, t.decay};
      largest = std::max(largest, t.n);
    }
    if (largest == 0) continue;
    adamw_multi_kernel<<<grid_for(ctx, largest), kThreads, 0, ctx.stream>>>(batch, beta1, beta2, eps, step_size,
                                                                           inv_sqrt_bc2);
    PIPE_CUDA_CHECK_LAUNCH("adamw_multi");
  }
}

void adamw(const CudaContext& ctx, float* param, const float* grad, float* m, float* v, std::int64_t n, float beta1,
           float beta2, float eps, float decay, float step_size, float inv_sqrt_bc2) {
  const AdamW op{param, grad, m, v, beta1, beta2, 1.0f - beta1, 1.0f - beta2, eps, decay, step_size, inv_sqrt_bc2};
  launch_elementwise(ctx, op, n, aligned16(param) && aligned16(grad) && aligned16(m) && aligned16(v), "adamw");
}

namespace {

// Enqueues the sum of squares of x[0, n) into *result (device); n > 0. The grid depends only on n and
// x's alignment, so the sum is the same on every GPU.
void enqueue_sum_squares(const CudaContext& ctx, const float* x, std::int64_t n, double* result) {
  const std::int64_t n4 = aligned16(x) ? n / 4 : 0;
  const std::int64_t items = std::max(n4, n - 4 * n4);
  const int blocks = static_cast<int>(std::min<std::int64_t>(ceil_div(items, kSumThreads), kSumMaxBlocks));
  if (blocks == 1) {  // one block writes its total directly
    sum_squares_kernel<<<1, kSumThreads, 0, ctx.stream>>>(x, n4, n, result);
    PIPE_CUDA_CHECK_LAUNCH("sum_squares");
    return;
  }
  // Block partials, then the total. The scratch may be dropped once the last kernel using it is enqueued.
  const std::shared_ptr<void> scratch = ctx.scratch(static_cast<std::size_t>(blocks) * sizeof(double));
  double* partial = static_cast<double*>(scratch.get());
  sum_squares_kernel<<<blocks, kSumThreads, 0, ctx.stream>>>(x, n4, n, partial);
  PIPE_CUDA_CHECK_LAUNCH("sum_squares");
  sum_partials_kernel<<<1, kSumThreads, 0, ctx.stream>>>(partial, blocks, result);
  PIPE_CUDA_CHECK_LAUNCH("sum_squares (block totals)");
}

}  // namespace

double sum_squares(const CudaContext& ctx, const float* x, std::int64_t n) {
  double total = 0.0;
  sum_squares_each(ctx, &x, &n, 1, &total);
  return total;
}

void sum_squares_each(const CudaContext& ctx, const float* const* x, const std::int64_t* n, int count, double* out) {
  if (count <= 0) return;
  const std::shared_ptr<void> results = ctx.scratch(static_cast<std::size_t>(count) * sizeof(double));
  auto* result = static_cast<double*>(results.get());
  PIPE_CUDA_CHECK(cudaMemsetAsync(result, 0, static_cast<std::size_t>(count) * sizeof(double), ctx.stream));
  for (int i = 0; i < count; ++i)
    if (n[i] > 0) enqueue_sum_squares(ctx, x[i], n[i], result + i);
  PIPE_CUDA_CHECK(cudaMemcpyAsync(out, result, static_cast<std::size_t>(count) * sizeof(double),
                                  cudaMemcpyDeviceToHost, ctx.stream));
  PIPE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

// ---- the backend's ops (CudaBackend, pipe/backend_ops.inc) on these kernels; left out of the CUDA-on-CPU
// emulator, which tests the launchers above against the CPU backend.
#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::sgd_momentum(float* param, const float* grad, float* momentum_buffer, std::int64_t n, float lr,
                               float momentum, float weight_decay) {
  bind();
  cuda::sgd_momentum(ctx_, param, grad, momentum_buffer, n, lr, momentum, weight_decay);
}

// The scalars are folded on the host exactly as the CPU backend does.
void CudaBackend::adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                        float beta2, float eps, float weight_decay, std::int64_t step) {
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  bind();
  cuda::adamw(ctx_, param, grad, m, v, n, beta1, beta2, eps, 1.0f - lr * weight_decay, static_cast<float>(lr / bc1),
              static_cast<float>(1.0 / std::sqrt(bc2)));
}

void CudaBackend::adamw_multi(const AdamwTensor* tensors, int count, float lr, float beta1, float beta2, float eps,
                              std::int64_t step) {
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  std::vector<cuda::AdamwMultiEntry> entries;
  entries.reserve(static_cast<std::size_t>(std::max(count, 0)));
  for (int i = 0; i < count; ++i) {
    const AdamwTensor& t = tensors[i];
    entries.push_back({t.param, t.grad, t.m, t.v, t.param_bf16, t.n, 1.0f - lr * t.weight_decay});
  }
  bind();
  cuda::adamw_multi(ctx_, entries.data(), count, beta1, beta2, eps, static_cast<float>(lr / bc1),
                    static_cast<float>(1.0 / std::sqrt(bc2)));
}

double CudaBackend::sum_squares(const float* x, std::int64_t n) {
  bind();
  return cuda::sum_squares(ctx_, x, n);
}

void CudaBackend::sum_squares_each(const float* const* x, const std::int64_t* n, int count, double* out) {
  bind();
  cuda::sum_squares_each(ctx_, x, n, count, out);
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
