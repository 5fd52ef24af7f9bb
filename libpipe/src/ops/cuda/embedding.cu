// GPT-2 embedding on the GPU: out[b, t] = wte[token[b, t]] + wpe[t], and its
// gradients, all deterministic (no float atomics):
//   dwpe[t] += sum_b dout[b, t]: one thread per (t, channel), adding over b in order;
//   dwte[token] += dout rows: the (token, position) pairs are radix-sorted (CUB, stable), so each token's
//   positions form one run in ascending order; the warp at the start of a run adds the run's dout rows in
//   that order and updates the token's row, which no other warp touches.
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <limits>
#include <memory>
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

using nn::kFullMask;
using nn::kWarp;

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

// One warp per token row; a token outside [0, vocab) flags its row and leaves the row's output untouched. T: the
// tables' and the output's storage, float or bfloat16 (storage.cuh).
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    embedding_forward_kernel(const std::int32_t* __restrict__ tokens, const T* __restrict__ wte,
                             const T* __restrict__ wpe, T* __restrict__ out, std::int64_t rows,
                             std::int64_t seq, std::int64_t dim, std::int64_t vocab, unsigned long long* bad_row) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const std::int32_t token = tokens[row];
  if (token < 0 || token >= vocab) {
    if (lane == 0) atomicMin(bad_row, static_cast<unsigned long long>(row));
    return;
  }
  const T* e = wte + static_cast<std::int64_t>(token) * dim;
  const T* p = wpe == nullptr ? nullptr : wpe + (row % seq) * dim;  // null: no position table
  T* o = out + row * dim;
  for (std::int64_t c = static_cast<std::int64_t>(lane) * V; c < dim; c += kWarp * V) {
    float a[V], b[V];
    nn::load_vec<V>(e + c, a);
    if (p != nullptr) {
      nn::load_vec<V>(p + c, b);
#pragma unroll
      for (int i = 0; i < V; ++i) a[i] += b[i];
    }
    nn::store_vec<V>(o + c, a);
  }
}

// dwpe[t, c] += sum_b dout[b, t, c], V consecutive channels per thread.
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    wpe_grad_kernel(const T* __restrict__ dout, float* __restrict__ dwpe, std::int64_t batch, std::int64_t seq,
                    std::int64_t dim) {
  const std::int64_t n = seq * dim;  // a multiple of V
  for (std::int64_t i = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x * V) {
    float acc[V] = {};
    for (std::int64_t b = 0; b < batch; ++b) {
      float g[V];
      nn::load_vec<V>(dout + b * n + i, g);
#pragma unroll
      for (int k = 0; k < V; ++k) acc[k] += g[k];
    }
    float w[V];
    nn::load_vec<V>(dwpe + i, w);
#pragma unroll
    for (int k = 0; k < V; ++k) w[k] += acc[k];
    nn::store_vec<V>(dwpe + i, w);
  }
}

__global__ void iota_kernel(std::int32_t* p, std::int64_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    p[i] = static_cast<std::int32_t>(i);
}

// One warp per sorted entry (x) and chunk of 32 V channels (y). Only the warp at the start of a token's run
// works: it finds the run's end (32 entries per ballot), adds the run's dout rows in sorted (= position) order
// and adds the sum into dwte[token]. Negative tokens (never produced by a checked forward) are skipped rather
// than written out of range; the upper bound is unknown here and was checked by the forward.
template <class T, int V>
__global__ void __launch_bounds__(kThreads)
    wte_grad_kernel(const std::int32_t* __restrict__ sorted_tokens, const std::int32_t* __restrict__ sorted_rows,
                    const T* __restrict__ dout, float* __restrict__ dwte, std::int64_t rows, std::int64_t dim) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (i >= rows) return;
  const std::int32_t token = sorted_tokens[i];
  if (token < 0 || (i > 0 && sorted_tokens[i - 1] == token)) return;  // warp-uniform

  std::int64_t end = i + 1;
  for (;;) {
    const std::int64_t j = end + lane;
    const unsigned same = __ballot_sync(kFullMask, j < rows && sorted_tokens[j] == token);
    if (same != kFullMask) {
      end += __ffs(~same) - 1;  // runs are contiguous: the first lane that differs ends it
      break;
    }
    end += kWarp;
  }

  float* w = dwte + static_cast<std::int64_t>(token) * dim;
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.y) * kWarp * V + static_cast<std::int64_t>(lane) * V;
       c < dim; c += static_cast<std::int64_t>(gridDim.y) * kWarp * V) {
    float acc[V] = {};
#pragma unroll 4
    for (std::int64_t j = i; j < end; ++j) {
      float g[V];
      nn::load_vec<V>(dout + static_cast<std::int64_t>(sorted_rows[j]) * dim + c, g);
#pragma unroll
      for (int k = 0; k < V; ++k) acc[k] += g[k];
    }
    float cur[V];
    nn::load_vec<V>(w + c, cur);
#pragma unroll
    for (int k = 0; k < V; ++k) cur[k] += acc[k];
    nn::store_vec<V>(w + c, cur);
  }
}

}  // namespace

namespace {

template <class T>
void forward(const CudaContext& ctx, const std::int32_t* tokens, const T* wte, const T* wpe, T* out,
             std::int64_t batch, std::int64_t seq, std::int64_t dim, std::int64_t vocab) {
  const std::int64_t rows = batch * seq;
  if (rows <= 0) return;
  nn::RowFlag bad(ctx);
  // dim == 0 still launches: the tokens are checked either way, as on the CPU.
  const unsigned grid = static_cast<unsigned>(nn::ceil_div(rows, kRowsPerBlock));
  if (dim % 4 == 0 && nn::vec4_aligned(wte) && nn::vec4_aligned(wpe) && nn::vec4_aligned(out))
    embedding_forward_kernel<T, 4>
        <<<grid, kThreads, 0, ctx.stream>>>(tokens, wte, wpe, out, rows, seq, dim, vocab, bad.get());
  else
    embedding_forward_kernel<T, 1>
        <<<grid, kThreads, 0, ctx.stream>>>(tokens, wte, wpe, out, rows, seq, dim, vocab, bad.get());
  PIPE_CUDA_CHECK_LAUNCH("embedding_forward_kernel");
  const std::int64_t r = bad.read();
  if (r >= 0) {
    const std::int32_t token = nn::read_int(ctx, tokens + r);
    throw Error("embedding: token " + std::to_string(token) + " at row " + std::to_string(r) + " (sample " +
                std::to_string(r / seq) + ", position " + std::to_string(r % seq) + ") is outside [0, " +
                std::to_string(vocab) + ")");
  }
}

template <class T>
void backward(const CudaContext& ctx, const std::int32_t* tokens, const T* dout, float* dwte, float* dwpe,
              std::int64_t batch, std::int64_t seq, std::int64_t dim) {
  const std::int64_t rows = batch * seq;
  if (rows <= 0 || dim <= 0) return;
  if (rows > std::numeric_limits<std::int32_t>::max())
    throw Error("embedding_backward: " + std::to_string(rows) + " token rows are too many for the CUDA kernels");
  const bool vec = dim % 4 == 0 && nn::vec4_aligned(dout) && nn::aligned16(dwte) && nn::aligned16(dwpe);

  // dwpe (none without a position table)
  if (dwpe != nullptr) {
    const std::int64_t n_pos = seq * dim;
    if (vec)
      wpe_grad_kernel<T, 4><<<nn::grid_for(ctx, n_pos / 4, kThreads), kThreads, 0, ctx.stream>>>(dout, dwpe, batch,
                                                                                                seq, dim);
    else
      wpe_grad_kernel<T, 1><<<nn::grid_for(ctx, n_pos, kThreads), kThreads, 0, ctx.stream>>>(dout, dwpe, batch, seq,
                                                                                            dim);
    PIPE_CUDA_CHECK_LAUNCH("wpe_grad_kernel");
  }

  // dwte: sort (token, row) pairs by token, stably, then one warp per run.
  const int n = static_cast<int>(rows);
  std::size_t sort_bytes = 0;
  PIPE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const std::int32_t*>(nullptr),
                                                 static_cast<std::int32_t*>(nullptr),
                                                 static_cast<const std::int32_t*>(nullptr),
                                                 static_cast<std::int32_t*>(nullptr), n, 0, 32, ctx.stream));
  const std::size_t ints = nn::round_up_256(static_cast<std::size_t>(rows) * sizeof(std::int32_t));
  std::shared_ptr<void> mem = nn::scratch(ctx, 3 * ints + sort_bytes);
  char* base = static_cast<char*>(mem.get());
  auto* sorted_tokens = reinterpret_cast<std::int32_t*>(base);
  auto* row_ids = reinterpret_cast<std::int32_t*>(base + ints);
  auto* sorted_rows = reinterpret_cast<std::int32_t*>(base + 2 * ints);
  void* sort_temp = base + 3 * ints;

  iota_kernel<<<nn::grid_for(ctx, rows, kThreads), kThreads, 0, ctx.stream>>>(row_ids, rows);
  PIPE_CUDA_CHECK_LAUNCH("iota_kernel");
  PIPE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_temp, sort_bytes, tokens, sorted_tokens, row_ids, sorted_rows,
                                                 n, 0, 32, ctx.stream));

  const std::int64_t chunk = static_cast<std::int64_t>(kWarp) * (vec ? 4 : 1);
  const std::int64_t chunks = nn::ceil_div(dim, chunk);
  const dim3 grid(static_cast<unsigned>(nn::ceil_div(rows, kRowsPerBlock)),
                  static_cast<unsigned>(chunks < 65535 ? chunks : 65535));
  if (vec)
    wte_grad_kernel<T, 4><<<grid, kThreads, 0, ctx.stream>>>(sorted_tokens, sorted_rows, dout, dwte, rows, dim);
  else
    wte_grad_kernel<T, 1><<<grid, kThreads, 0, ctx.stream>>>(sorted_tokens, sorted_rows, dout, dwte, rows, dim);
  PIPE_CUDA_CHECK_LAUNCH("wte_grad_kernel");
}

}  // namespace

void embedding_forward(const CudaContext& ctx, const std::int32_t* tokens, const float* wte, const float* wpe,
                       float* out, std::int64_t batch, std::int64_t seq, std::int64_t dim, std::int64_t vocab) {
  forward(ctx, tokens, wte, wpe, out, batch, seq, dim, vocab);
}
void embedding_forward(const CudaContext& ctx, const std::int32_t* tokens, const bf16* wte, const bf16* wpe,
                       bf16* out, std::int64_t batch, std::int64_t seq, std::int64_t dim, std::int64_t vocab) {
  forward(ctx, tokens, wte, wpe, out, batch, seq, dim, vocab);
}

void embedding_backward(const CudaContext& ctx, const std::int32_t* tokens, const float* dout, float* dwte,
                        float* dwpe, std::int64_t batch, std::int64_t seq, std::int64_t dim) {
  backward(ctx, tokens, dout, dwte, dwpe, batch, seq, dim);
}
void embedding_backward(const CudaContext& ctx, const std::int32_t* tokens, const bf16* dout, float* dwte,
                        float* dwpe, std::int64_t batch, std::int64_t seq, std::int64_t dim) {
  backward(ctx, tokens, dout, dwte, dwpe, batch, seq, dim);
}

// ---- the backend's ops (CudaBackend, pipe/backend_ops.inc) on these kernels; left out of the CUDA-on-CPU
// emulator, which tests the launchers above against the CPU backend.
#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::embedding_forward(const std::int32_t* tokens, In wte, In wpe, Out out, std::int64_t batch,
                                    std::int64_t seq, std::int64_t dim, std::int64_t vocab) {
  bind();
  if (all_bf16({wte.dtype, wpe.dtype, out.dtype}))
    return cuda::embedding_forward(ctx_, tokens, bits(wte), bits(wpe), bits(out), batch, seq, dim, vocab);
  Float32Views v(*this, "embedding_forward");
  // Only the first `seq` rows of wpe are read.
  const float* positions = wpe.data == nullptr ? nullptr : v.in(wpe, seq * dim);
  cuda::embedding_forward(ctx_, tokens, v.in(wte, vocab * dim), positions, v.out(out, batch * seq * dim), batch, seq,
                          dim, vocab);
  v.finish();
}

void CudaBackend::embedding_backward(const std::int32_t* tokens, In dout, float* dwte, float* dwpe, std::int64_t batch,
                                     std::int64_t seq, std::int64_t dim) {
  bind();
  if (all_bf16({dout.dtype})) return cuda::embedding_backward(ctx_, tokens, bits(dout), dwte, dwpe, batch, seq, dim);
  Float32Views v(*this, "embedding_backward");
  cuda::embedding_backward(ctx_, tokens, v.in(dout, batch * seq * dim), dwte, dwpe, batch, seq, dim);
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
