// Losses on the GPU: softmax cross-entropy and mean squared error.
//
// Rows are handled by a "group" of threads: a warp (several rows per block)
// when rows are short, a whole block when they are long (GPT's 50k-entry
// vocabulary). Per-sample means are deterministic: cross-entropy writes one
// loss per row to scratch, then one warp per sample adds them in a fixed
// order (in double, as the CPU backend does); no float atomics anywhere.
//
// Out-of-range labels are found on the device (the first offending row, by
// atomicMin on an integer) and reported with the CPU backend's exact message
// after one small copy back.
#include <cstdint>
#include <string>

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

constexpr int kWarpThreads = 256;   // block size when a warp owns a row: 8 rows per block
constexpr int kBlockThreads = 512;  // block size when a block owns a row
constexpr std::int64_t kMaxGrid = 1 << 30;

// The rows a thread works on, and reductions over the threads sharing a row. kGroup = kWarp: a warp per row;
// otherwise the block. Rows are visited in a grid-stride loop that is uniform over the group, so the group
// reductions (shuffles, or barriers for a block) are always reached by every member.
template <int kGroup>
struct RowGroup {
  std::int64_t first, step;
  int tid;
  __device__ RowGroup() {
    if constexpr (kGroup == kWarp) {
      const int per_block = blockDim.x / kWarp;
      first = static_cast<std::int64_t>(blockIdx.x) * per_block + threadIdx.x / kWarp;
      step = static_cast<std::int64_t>(gridDim.x) * per_block;
      tid = threadIdx.x % kWarp;
    } else {
      first = blockIdx.x;
      step = gridDim.x;
      tid = threadIdx.x;
    }
  }
  template <typename T>
  __device__ T sum(T v, T* smem) const {
    if constexpr (kGroup == kWarp)
      return nn::warp_sum(v);
    else
      return nn::block_sum(v, smem);
  }
  __device__ float max(float v, float* smem) const {
    if constexpr (kGroup == kWarp)
      return nn::warp_max(v);
    else
      return nn::block_max(v, smem);
  }
};

template <int kGroup>
constexpr int threads_for() {
  return kGroup == kWarp ? kWarpThreads : kGroup;
}

template <int kGroup>
unsigned groups_grid(std::int64_t groups) {
  const std::int64_t per_block = kGroup == kWarp ? kWarpThreads / kWarp : 1;
  const std::int64_t blocks = nn::ceil_div(groups, per_block);
  return static_cast<unsigned>(blocks < kMaxGrid ? blocks : kMaxGrid);
}

// Max and sum of exp(z - max) over a row, numerically stable: each thread keeps an online (max, sum) pair over
// its columns (one exp per element), then the group combines the pairs. A thread without columns has sum 0 and
// contributes nothing.
template <int kGroup, class T>
__device__ __forceinline__ void row_max_sumexp(const RowGroup<kGroup>& g, const T* z, std::int64_t n, float* smem,
                                               float& mx, float& sum) {
  float m = -FLT_MAX, s = 0.0f;
  for (std::int64_t j = g.tid; j < n; j += kGroup) {
    const float x = load(z, j);
    const float e = expf(fminf(m, x) - fmaxf(m, x));  // exp(-|x - m|)
    s = x > m ? s * e + 1.0f : s + e;
    m = fmaxf(m, x);
  }
  mx = g.max(m, smem);
  sum = g.sum(s * expf(m - mx), smem);
}

// row_loss[r] = log(sum exp(z - max)) - (z[label] - max); a bad label flags its row and leaves 0. T: the logits'
// storage, float or bfloat16 (storage.cuh).
template <int kGroup, class T>
__global__ void __launch_bounds__(threads_for<kGroup>())
    cross_entropy_forward_kernel(const T* __restrict__ logits, const std::int32_t* __restrict__ labels,
                                 float* __restrict__ row_loss, std::int64_t rows, std::int64_t vocab,
                                 unsigned long long* bad_row) {
  __shared__ float smem[kWarp];
  const RowGroup<kGroup> g;
  for (std::int64_t row = g.first; row < rows; row += g.step) {
    const T* z = logits + row * vocab;
    float mx, sum;
    row_max_sumexp(g, z, vocab, smem, mx, sum);
    if (g.tid == 0) {
      const std::int32_t label = labels[row];
      if (label < 0 || label >= vocab) {
        atomicMin(bad_row, static_cast<unsigned long long>(row));
        row_loss[row] = 0.0f;
      } else {
        row_loss[row] = logf(sum) - (load(z, label) - mx);
      }
    }
  }
}

// loss[b] = mean of row_loss over the sample's rows: one warp per sample, in double.
__global__ void __launch_bounds__(kWarpThreads)
    sample_mean_kernel(const float* __restrict__ row_loss, float* __restrict__ loss, std::int64_t batch,
                       std::int64_t rows_per_sample) {
  const RowGroup<kWarp> g;
  for (std::int64_t b = g.first; b < batch; b += g.step) {
    const float* r = row_loss + b * rows_per_sample;
    double acc = 0.0;
    for (std::int64_t i = g.tid; i < rows_per_sample; i += kWarp) acc += static_cast<double>(r[i]);
    acc = nn::warp_sum(acc);
    if (g.tid == 0) loss[b] = static_cast<float>(acc / static_cast<double>(rows_per_sample));
  }
}

// dlogits = (softmax - onehot(label)) * dloss[b] / rows_per_sample; a bad label flags its row (and matches no
// column, so nothing is written out of range).
template <int kGroup, class T>
__global__ void __launch_bounds__(threads_for<kGroup>())
    cross_entropy_backward_kernel(const T* __restrict__ logits, const std::int32_t* __restrict__ labels,
                                  const float* __restrict__ dloss, T* __restrict__ dlogits, std::int64_t rows,
                                  std::int64_t vocab, std::int64_t rows_per_sample, unsigned long long* bad_row) {
  __shared__ float smem[kWarp];
  const RowGroup<kGroup> g;
  for (std::int64_t row = g.first; row < rows; row += g.step) {
    const T* z = logits + row * vocab;
    T* dz = dlogits + row * vocab;
    float mx, sum;
    row_max_sumexp(g, z, vocab, smem, mx, sum);
    const std::int32_t label = labels[row];
    if (g.tid == 0 && (label < 0 || label >= vocab)) atomicMin(bad_row, static_cast<unsigned long long>(row));
    const float grad = dloss[row / rows_per_sample] / static_cast<float>(rows_per_sample);
    const float f = grad / sum;
    for (std::int64_t j = g.tid; j < vocab; j += kGroup) {
      const float p = expf(load(z, j) - mx) * f;
      store(dz, j, j == label ? p - grad : p);
    }
  }
}

// loss[b] = mean over the sample of (x - t)^2, in double.
template <int kGroup>
__global__ void __launch_bounds__(threads_for<kGroup>())
    mse_forward_kernel(const float* __restrict__ x, const float* __restrict__ target, float* __restrict__ loss,
                       std::int64_t batch, std::int64_t per_sample) {
  __shared__ double smem[kWarp];
  const RowGroup<kGroup> g;
  for (std::int64_t b = g.first; b < batch; b += g.step) {
    const float* xb = x + b * per_sample;
    const float* tb = target + b * per_sample;
    double acc = 0.0;
    for (std::int64_t i = g.tid; i < per_sample; i += kGroup) {
      const double d = static_cast<double>(xb[i]) - static_cast<double>(tb[i]);
      acc += d * d;
    }
    acc = g.sum(acc, smem);
    if (g.tid == 0) loss[b] = per_sample > 0 ? static_cast<float>(acc / static_cast<double>(per_sample)) : 0.0f;
  }
}

// dx = (x - t) * 2 dloss[b] / per_sample.
__global__ void __launch_bounds__(kWarpThreads)
    mse_backward_kernel(const float* __restrict__ x, const float* __restrict__ target,
                        const float* __restrict__ dloss, float* __restrict__ dx, std::int64_t n,
                        std::int64_t per_sample) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float f = 2.0f * dloss[i / per_sample] / static_cast<float>(per_sample);
    dx[i] = (x[i] - target[i]) * f;
  }
}

// Rows up to this many classes take a warp each; longer ones a block.
constexpr std::int64_t kWarpMaxVocab = 1024;

[[noreturn]] void throw_bad_label(const CudaContext& ctx, const char* op, const std::int32_t* labels,
                                  std::int64_t row, std::int64_t vocab) {
  const std::int32_t label = nn::read_int(ctx, labels + row);
  throw Error(std::string(op) + ": label " + std::to_string(label) + " at row " + std::to_string(row) +
              " is outside [0, " + std::to_string(vocab) + ")");
}

}  // namespace

namespace {

template <class T>
void cross_entropy_forward_impl(const CudaContext& ctx, const T* logits, const std::int32_t* labels, float* loss,
                                std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) {
  if (rows <= 0 || vocab <= 0 || rows_per_sample <= 0) return;
  const std::int64_t batch = rows / rows_per_sample;
  nn::RowFlag bad(ctx);
  std::shared_ptr<void> mem = nn::scratch(ctx, static_cast<std::size_t>(rows) * sizeof(float));
  float* row_loss = static_cast<float*>(mem.get());
  if (vocab <= kWarpMaxVocab)
    cross_entropy_forward_kernel<kWarp, T><<<groups_grid<kWarp>(rows), kWarpThreads, 0, ctx.stream>>>(
        logits, labels, row_loss, rows, vocab, bad.get());
  else
    cross_entropy_forward_kernel<kBlockThreads, T>
        <<<groups_grid<kBlockThreads>(rows), kBlockThreads, 0, ctx.stream>>>(logits, labels, row_loss, rows, vocab,
                                                                             bad.get());
  PIPE_CUDA_CHECK_LAUNCH("cross_entropy_forward_kernel");
  // Fewer rows than one sample: no loss to write (the CPU writes none either), and a grid of 0 blocks would be
  // an invalid launch. The labels are still checked.
  if (batch > 0) {
    sample_mean_kernel<<<groups_grid<kWarp>(batch), kWarpThreads, 0, ctx.stream>>>(row_loss, loss, batch,
                                                                                   rows_per_sample);
    PIPE_CUDA_CHECK_LAUNCH("sample_mean_kernel");
  }
  const std::int64_t row = bad.read();
  if (row >= 0) throw_bad_label(ctx, "cross_entropy", labels, row, vocab);
}

template <class T>
void cross_entropy_backward_impl(const CudaContext& ctx, const T* logits, const std::int32_t* labels,
                                 const float* dloss, T* dlogits, std::int64_t rows, std::int64_t vocab,
                                 std::int64_t rows_per_sample) {
  if (rows <= 0 || vocab <= 0 || rows_per_sample <= 0) return;
  nn::RowFlag bad(ctx);
  if (vocab <= kWarpMaxVocab)
    cross_entropy_backward_kernel<kWarp, T><<<groups_grid<kWarp>(rows), kWarpThreads, 0, ctx.stream>>>(
        logits, labels, dloss, dlogits, rows, vocab, rows_per_sample, bad.get());
  else
    cross_entropy_backward_kernel<kBlockThreads, T>
        <<<groups_grid<kBlockThreads>(rows), kBlockThreads, 0, ctx.stream>>>(logits, labels, dloss, dlogits, rows,
                                                                             vocab, rows_per_sample, bad.get());
  PIPE_CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
  const std::int64_t row = bad.read();
  if (row >= 0) throw_bad_label(ctx, "cross_entropy_backward", labels, row, vocab);
}

}  // namespace

void cross_entropy_forward(const CudaContext& ctx, const float* logits, const std::int32_t* labels, float* loss,
                           std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) {
  cross_entropy_forward_impl(ctx, logits, labels, loss, rows, vocab, rows_per_sample);
}
void cross_entropy_forward(const CudaContext& ctx, const bf16* logits, const std::int32_t* labels, float* loss,
                           std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) {
  cross_entropy_forward_impl(ctx, logits, labels, loss, rows, vocab, rows_per_sample);
}

void cross_entropy_backward(const CudaContext& ctx, const float* logits, const std::int32_t* labels,
                            const float* dloss, float* dlogits, std::int64_t rows, std::int64_t vocab,
                            std::int64_t rows_per_sample) {
  cross_entropy_backward_impl(ctx, logits, labels, dloss, dlogits, rows, vocab, rows_per_sample);
}
void cross_entropy_backward(const CudaContext& ctx, const bf16* logits, const std::int32_t* labels,
                            const float* dloss, bf16* dlogits, std::int64_t rows, std::int64_t vocab,
                            std::int64_t rows_per_sample) {
  cross_entropy_backward_impl(ctx, logits, labels, dloss, dlogits, rows, vocab, rows_per_sample);
}

void mse_forward(const CudaContext& ctx, const float* x, const float* target, float* loss, std::int64_t batch,
                 std::int64_t per_sample) {
  if (batch <= 0) return;
  if (per_sample < 0) per_sample = 0;
  // Samples up to this size take a warp each; larger ones a block.
  constexpr std::int64_t kWarpMaxSample = 8192;
  if (per_sample <= kWarpMaxSample)
    mse_forward_kernel<kWarp>
        <<<groups_grid<kWarp>(batch), kWarpThreads, 0, ctx.stream>>>(x, target, loss, batch, per_sample);
  else
    mse_forward_kernel<kBlockThreads>
        <<<groups_grid<kBlockThreads>(batch), kBlockThreads, 0, ctx.stream>>>(x, target, loss, batch, per_sample);
  PIPE_CUDA_CHECK_LAUNCH("mse_forward_kernel");
}

void mse_backward(const CudaContext& ctx, const float* x, const float* target, const float* dloss, float* dx,
                  std::int64_t batch, std::int64_t per_sample) {
  const std::int64_t n = batch * per_sample;
  if (batch <= 0 || per_sample <= 0) return;
  mse_backward_kernel<<<nn::grid_for(ctx, n, kWarpThreads), kWarpThreads, 0, ctx.stream>>>(x, target, dloss, dx, n,
                                                                                         per_sample);
  PIPE_CUDA_CHECK_LAUNCH("mse_backward_kernel");
}

// ---- the backend's ops (CudaBackend, pipe/backend_ops.inc) on these kernels; left out of the CUDA-on-CPU
// emulator, which tests the launchers above against the CPU backend.
#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::cross_entropy_forward(In logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                                        std::int64_t vocab, std::int64_t rows_per_sample) {
  bind();
  if (all_bf16({logits.dtype}))
    return cuda::cross_entropy_forward(ctx_, bits(logits), labels, loss, rows, vocab, rows_per_sample);
  Float32Views v(*this, "cross_entropy_forward");
  cuda::cross_entropy_forward(ctx_, v.in(logits, rows * vocab), labels, loss, rows, vocab, rows_per_sample);
}

void CudaBackend::cross_entropy_backward(In logits, const std::int32_t* labels, const float* dloss, Out dlogits,
                                         std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) {
  bind();
  if (all_bf16({logits.dtype, dlogits.dtype}))
    return cuda::cross_entropy_backward(ctx_, bits(logits), labels, dloss, bits(dlogits), rows, vocab,
                                        rows_per_sample);
  Float32Views v(*this, "cross_entropy_backward");
  cuda::cross_entropy_backward(ctx_, v.in(logits, rows * vocab), labels, dloss, v.out(dlogits, rows * vocab), rows,
                               vocab, rows_per_sample);
  v.finish();
}

void CudaBackend::mse_forward(const float* x, const float* target, float* loss, std::int64_t batch,
                              std::int64_t per_sample) {
  bind();
  cuda::mse_forward(ctx_, x, target, loss, batch, per_sample);
}

void CudaBackend::mse_backward(const float* x, const float* target, const float* dloss, float* dx, std::int64_t batch,
                               std::int64_t per_sample) {
  bind();
  cuda::mse_backward(ctx_, x, target, dloss, dx, batch, per_sample);
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
