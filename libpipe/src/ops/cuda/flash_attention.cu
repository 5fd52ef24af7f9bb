// Causal attention without the T x T matrix (FlashAttention's scheme, on the
// CUDA cores): for long sequences, where attention.cu's materialised scores
// and probabilities (B H T^2 floats, saved for backward) no longer fit.
//
// Forward: one thread per query row, the block's 64 rows sharing tiles of 32
// keys and values in shared memory; an online softmax keeps the row's running
// max m and sum l, so each score is made once and thrown away. It saves, per
// row, the output O and the log-sum-exp m + log l ([B H, T, D + 1]).
// Backward recomputes the probabilities from them (p = exp(s - lse)), with
// Delta_i = dO_i . O_i standing in for rowsum(dP * P):
//   dq_kernel:   one thread per query row, dQ_i = scale sum_j p_ij (dO_i.v_j - Delta_i) k_j
//   dkdv_kernel: one thread per key row,   dV_j = sum_i p_ij dO_i, dK_j = scale sum_i p_ij (dO_i.v_j - Delta_i) q_i
// Each gradient row is summed by one thread in key or query order: no atomics, the same result every run.
// Q, K, V are read and dQKV written in place in the [B, T, 3C] layout (head h on channels h D .. h D + D - 1 of
// each third), so no head-major copies are made. Head dimensions up to 128; arithmetic in fp32.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "ops/cuda/cuda_check.hpp"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/nn_kernels.hpp"
#ifndef PIPE_CUDA_EMULATOR  // the backend's ops at the end of the file
#include "ops/attention_choice.hpp"
#include "ops/cuda/cuda_backend.hpp"
#include "ops/float32_views.hpp"
#include "pipe/error.hpp"
#endif

namespace libpipe::cuda {
namespace {

constexpr int kRows = 64;  // query (or key) rows per block: one per thread
constexpr int kTile = 32;  // keys (or queries) per shared-memory tile

struct Dims {
  std::int64_t T;
  int H, D;
  float scale;
};

// Row t of head (b, h) of part (0 q, 1 k, 2 v) in qkv [B, T, 3C].
__device__ __forceinline__ std::int64_t qkv_row(const Dims& d, std::int64_t b, int h, int part, std::int64_t t) {
  const std::int64_t C = static_cast<std::int64_t>(d.H) * d.D;
  return (b * d.T + t) * 3 * C + part * C + static_cast<std::int64_t>(h) * d.D;
}

// Rows [first, first + kTile) of two parts of head (b, h) into shared tiles [kTile][DM] (rows past T read as 0).
template <int DM>
__device__ __forceinline__ void load_tiles(const float* qkv, const Dims& d, std::int64_t b, int h, std::int64_t first,
                                           int part_a, float (*a)[DM], int part_b, float (*bt)[DM]) {
  for (int e = threadIdx.x; e < kTile * d.D; e += blockDim.x) {
    const int r = e / d.D, c = e % d.D;
    const std::int64_t t = first + r;
    a[r][c] = t < d.T ? qkv[qkv_row(d, b, h, part_a, t) + c] : 0.0f;
    bt[r][c] = t < d.T ? qkv[qkv_row(d, b, h, part_b, t) + c] : 0.0f;
  }
}

// This thread's row in a block of kRows rows of head (b, h) (grid: x row blocks, y = b H + h), and the block's last
// live row: keys past it are above the diagonal for every row of the block.
struct RowBlock {
  int bh, h;
  std::int64_t b, row, last;
  bool live;
  __device__ explicit RowBlock(const Dims& d)
      : bh(static_cast<int>(blockIdx.y)),
        h(bh % d.H),
        b(bh / d.H),
        row(static_cast<std::int64_t>(blockIdx.x) * kRows + threadIdx.x),
        last(static_cast<std::int64_t>(blockIdx.x) * kRows + kRows - 1 < d.T - 1
                 ? static_cast<std::int64_t>(blockIdx.x) * kRows + kRows - 1
                 : d.T - 1),
        live(row < d.T) {}
};

template <int DM>
__global__ void __launch_bounds__(kRows) flash_forward_kernel(const float* __restrict__ qkv, float* __restrict__ out,
                                                              float* __restrict__ state, Dims d) {
  __shared__ float ks[kTile][DM];
  __shared__ float vs[kTile][DM];
  const RowBlock rb(d);
  const int bh = rb.bh, h = rb.h;
  const std::int64_t b = rb.b, i = rb.row, last = rb.last;
  const bool live = rb.live;

  float q[DM], o[DM];
#pragma unroll
  for (int c = 0; c < DM; ++c) {
    q[c] = live && c < d.D ? qkv[qkv_row(d, b, h, 0, i) + c] * d.scale : 0.0f;
    o[c] = 0.0f;
  }
  float m = -FLT_MAX, l = 0.0f;
  for (std::int64_t first = 0; first <= last; first += kTile) {
    __syncthreads();  // the previous tile is consumed
    load_tiles<DM>(qkv, d, b, h, first, 1, ks, 2, vs);
    __syncthreads();
    if (!live || first > i) continue;  // all of this tile is above the diagonal for this row
    float s[kTile];
    float tile_max = -FLT_MAX;
    // The tile loops stay rolled: unrolled over 32 keys x DM channels they took nvcc 88 s (DM up to 128, two
    // architectures) for no fewer memory accesses; s[] lives in a 128-byte local (L1) array instead.
    for (int j = 0; j < kTile; ++j) {
      float acc = 0.0f;
#pragma unroll
      for (int c = 0; c < DM; ++c) acc += q[c] * ks[j][c];
      s[j] = first + j <= i ? acc : -FLT_MAX;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float m_new = fmaxf(m, tile_max);
    const float rescale = expf(m - m_new);  // 0 on the first tile (m = -FLT_MAX)
    l *= rescale;
#pragma unroll
    for (int c = 0; c < DM; ++c) o[c] *= rescale;
    for (int j = 0; j < kTile; ++j) {
      const float p = first + j <= i ? expf(s[j] - m_new) : 0.0f;
      l += p;
#pragma unroll
      for (int c = 0; c < DM; ++c) o[c] += p * vs[j][c];
    }
    m = m_new;
  }
  if (!live) return;
  const float inv = 1.0f / l;  // l >= 1: the diagonal key contributes exp(0)
  const std::int64_t C = static_cast<std::int64_t>(d.H) * d.D;
  float* out_row = out + (b * d.T + i) * C + static_cast<std::int64_t>(h) * d.D;
  float* state_row = state + (static_cast<std::int64_t>(bh) * d.T + i) * (d.D + 1);
#pragma unroll
  for (int c = 0; c < DM; ++c)
    if (c < d.D) out_row[c] = state_row[c] = o[c] * inv;
  state_row[d.D] = m + logf(l);
}

// dQ for one query row per thread; also Delta_i = dO_i . O_i into delta [B H, T] for dkdv_kernel.
template <int DM>
__global__ void __launch_bounds__(kRows)
    flash_dq_kernel(const float* __restrict__ dout, const float* __restrict__ qkv, const float* __restrict__ state,
                    float* __restrict__ dqkv, float* __restrict__ delta, Dims d) {
  __shared__ float ks[kTile][DM];
  __shared__ float vs[kTile][DM];
  const RowBlock rb(d);
  const int bh = rb.bh, h = rb.h;
  const std::int64_t b = rb.b, i = rb.row, last = rb.last;
  const bool live = rb.live;
  const std::int64_t C = static_cast<std::int64_t>(d.H) * d.D;

  float q[DM], g[DM], dq[DM];
  float dlt = 0.0f, lse = 0.0f;
  const float* state_row = state + (static_cast<std::int64_t>(bh) * d.T + (live ? i : 0)) * (d.D + 1);
#pragma unroll
  for (int c = 0; c < DM; ++c) {
    const bool on = live && c < d.D;
    q[c] = on ? qkv[qkv_row(d, b, h, 0, i) + c] * d.scale : 0.0f;
    g[c] = on ? dout[(b * d.T + i) * C + static_cast<std::int64_t>(h) * d.D + c] : 0.0f;
    dlt += on ? g[c] * state_row[c] : 0.0f;
    dq[c] = 0.0f;
  }
  if (live) {
    lse = state_row[d.D];
    delta[static_cast<std::int64_t>(bh) * d.T + i] = dlt;
  }
  for (std::int64_t first = 0; first <= last; first += kTile) {
    __syncthreads();
    load_tiles<DM>(qkv, d, b, h, first, 1, ks, 2, vs);
    __syncthreads();
    if (!live || first > i) continue;
    for (int j = 0; j < kTile && first + j <= i; ++j) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int c = 0; c < DM; ++c) {
        s += q[c] * ks[j][c];
        dp += g[c] * vs[j][c];
      }
      const float ds = expf(s - lse) * (dp - dlt);
#pragma unroll
      for (int c = 0; c < DM; ++c) dq[c] += ds * ks[j][c];
    }
  }
  if (!live) return;
  float* dq_row = dqkv + qkv_row(d, b, h, 0, i);
#pragma unroll
  for (int c = 0; c < DM; ++c)
    if (c < d.D) dq_row[c] = dq[c] * d.scale;
}

// dK and dV for one key row per thread, over the query rows at or below it.
template <int DM>
__global__ void __launch_bounds__(kRows)
    flash_dkdv_kernel(const float* __restrict__ dout, const float* __restrict__ qkv, const float* __restrict__ state,
                      const float* __restrict__ delta, float* __restrict__ dqkv, Dims d) {
  __shared__ float qs[kTile][DM];
  __shared__ float gs[kTile][DM];
  __shared__ float lse_s[kTile];
  __shared__ float delta_s[kTile];
  const int bh = blockIdx.y, h = bh % d.H;
  const std::int64_t b = bh / d.H;
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kRows + threadIdx.x;
  const bool live = j < d.T;
  const std::int64_t C = static_cast<std::int64_t>(d.H) * d.D;

  float k[DM], v[DM], dk[DM], dv[DM];
#pragma unroll
  for (int c = 0; c < DM; ++c) {
    const bool on = live && c < d.D;
    k[c] = on ? qkv[qkv_row(d, b, h, 1, j) + c] : 0.0f;
    v[c] = on ? qkv[qkv_row(d, b, h, 2, j) + c] : 0.0f;
    dk[c] = dv[c] = 0.0f;
  }
  // Queries from the block's first key row down: rows above it see none of the block's keys.
  for (std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kRows / kTile * kTile; first < d.T;
       first += kTile) {
    __syncthreads();
    for (int e = threadIdx.x; e < kTile * d.D; e += blockDim.x) {
      const int r = e / d.D, c = e % d.D;
      const std::int64_t t = first + r;
      qs[r][c] = t < d.T ? qkv[qkv_row(d, b, h, 0, t) + c] * d.scale : 0.0f;
      gs[r][c] = t < d.T ? dout[(b * d.T + t) * C + static_cast<std::int64_t>(h) * d.D + c] : 0.0f;
    }
    for (int r = threadIdx.x; r < kTile; r += blockDim.x) {
      const std::int64_t t = first + r;
      lse_s[r] = t < d.T ? state[(static_cast<std::int64_t>(bh) * d.T + t) * (d.D + 1) + d.D] : 0.0f;
      delta_s[r] = t < d.T ? delta[static_cast<std::int64_t>(bh) * d.T + t] : 0.0f;
    }
    __syncthreads();
    if (!live) continue;
    for (int r = 0; r < kTile; ++r) {
      const std::int64_t i = first + r;
      if (i < j || i >= d.T) continue;  // causal: query i sees key j only when j <= i
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int c = 0; c < DM; ++c) {
        s += qs[r][c] * k[c];
        dp += gs[r][c] * v[c];
      }
      const float p = expf(s - lse_s[r]);
      const float ds = p * (dp - delta_s[r]);
#pragma unroll
      for (int c = 0; c < DM; ++c) {
        dv[c] += p * gs[r][c];
        dk[c] += ds * qs[r][c];  // qs holds scale * q: dK = scale sum ds q
      }
    }
  }
  if (!live) return;
  float* dk_row = dqkv + qkv_row(d, b, h, 1, j);
  float* dv_row = dqkv + qkv_row(d, b, h, 2, j);
#pragma unroll
  for (int c = 0; c < DM; ++c)
    if (c < d.D) {
      dk_row[c] = dk[c];
      dv_row[c] = dv[c];
    }
}

Dims dims_of(const char* op, std::int64_t B, std::int64_t T, std::int64_t H, std::int64_t D) {
  if (D > kFlashMaxHeadDim)
    throw Error(std::string(op) + ": head dimension " + std::to_string(D) + " is larger than the flash kernels' " +
                std::to_string(kFlashMaxHeadDim));
  if (H * 3 * D > 0x7fffffff || B * H > 65535)  // channels are int; (b, h) is the grid's y index
    throw Error(std::string(op) + ": " + std::to_string(B) + " samples x " + std::to_string(H) + " heads of " +
                std::to_string(D) + " channels are too many for the flash kernels");
  return Dims{T, static_cast<int>(H), static_cast<int>(D), 1.0f / std::sqrt(static_cast<float>(D))};
}

dim3 grid_of(std::int64_t B, std::int64_t T, std::int64_t H) {
  return dim3(static_cast<unsigned>(nn::ceil_div(T, kRows)), static_cast<unsigned>(B * H));
}

// The kernels' register arrays are sized at compile time: the smallest of 32, 64, 128 that holds D.
template <template <int> class Launch, typename... Args>
void with_head_dim(int D, Args&&... args) {
  if (D <= 32)
    Launch<32>::run(args...);
  else if (D <= 64)
    Launch<64>::run(args...);
  else
    Launch<128>::run(args...);
}

template <int DM>
struct Forward {
  static void run(const CudaContext& ctx, dim3 grid, const float* qkv, float* out, float* state, const Dims& d) {
    flash_forward_kernel<DM><<<grid, kRows, 0, ctx.stream>>>(qkv, out, state, d);
    PIPE_CUDA_CHECK_LAUNCH("flash_forward_kernel");
  }
};

template <int DM>
struct Backward {
  static void run(const CudaContext& ctx, dim3 grid, const float* dout, const float* qkv, const float* state,
                  float* dqkv, float* delta, const Dims& d) {
    flash_dq_kernel<DM><<<grid, kRows, 0, ctx.stream>>>(dout, qkv, state, dqkv, delta, d);
    PIPE_CUDA_CHECK_LAUNCH("flash_dq_kernel");
    flash_dkdv_kernel<DM><<<grid, kRows, 0, ctx.stream>>>(dout, qkv, state, delta, dqkv, d);
    PIPE_CUDA_CHECK_LAUNCH("flash_dkdv_kernel");
  }
};

}  // namespace

void flash_attention_forward(const CudaContext& ctx, const float* qkv, float* out, float* state, std::int64_t batch,
                             std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  if (batch <= 0 || seq <= 0 || heads <= 0 || head_dim <= 0) return;
  const Dims d = dims_of("flash_attention_forward", batch, seq, heads, head_dim);
  with_head_dim<Forward>(d.D, ctx, grid_of(batch, seq, heads), qkv, out, state, d);
}

void flash_attention_backward(const CudaContext& ctx, const float* dout, const float* qkv, const float* state,
                              float* dqkv, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                              std::int64_t head_dim) {
  if (batch <= 0 || seq <= 0 || heads <= 0 || head_dim <= 0) return;
  const Dims d = dims_of("flash_attention_backward", batch, seq, heads, head_dim);
  const std::shared_ptr<void> delta = nn::scratch(ctx, static_cast<std::size_t>(batch * heads * seq) * sizeof(float));
  with_head_dim<Backward>(d.D, ctx, grid_of(batch, seq, heads), dout, qkv, state, dqkv,
                          static_cast<float*>(delta.get()), d);
}

// ---- the backend's ops (CudaBackend, pipe/backend_ops.inc) on these kernels; left out of the CUDA-on-CPU
// emulator, which tests the launchers above against the CPU backend.
#ifndef PIPE_CUDA_EMULATOR

static_assert(cuda::kFlashMaxHeadDim == kCudaFlashMaxHeadDim, "ops/attention_choice.hpp's copy of the head limit");

bool CudaBackend::flash_attention_pays(std::int64_t seq, std::int64_t head_dim) const {
  return flash_attention_runs(Device::cuda, seq, head_dim);  // from 2048 tokens (ops/attention_choice.cpp)
}

void CudaBackend::flash_attention_forward(const float* qkv, float* out, float* state, std::int64_t batch,
                                          std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  bind();
  cuda::flash_attention_forward(ctx_, qkv, out, state, batch, seq, heads, head_dim);
}

void CudaBackend::flash_attention_backward(const float* dout, const float* qkv, const float* state, float* dqkv,
                                           std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                           std::int64_t head_dim) {
  bind();
  cuda::flash_attention_backward(ctx_, dout, qkv, state, dqkv, batch, seq, heads, head_dim);
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
