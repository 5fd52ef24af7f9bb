// Device helpers shared by the layer kernels (layernorm.cu, attention.cu,
// losses.cu, embedding.cu): warp and block reductions, vector loads, launch
// checks and the out-of-range flag used by the label and token checks.
// Every reduction here adds in a fixed order, so results repeat run to run.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <memory>
#include <string>

#include "ops/cuda/cuda_check.hpp"
#include "ops/cuda/cuda_context.hpp"
#include "pipe/error.hpp"

namespace libpipe::cuda::nn {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// ---- host side

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Grid size for a grid-stride loop over n items: enough blocks to fill the device (2048 resident threads per SM
// on sm_80 and sm_90), never more than needed, never 0.
inline unsigned grid_for(const CudaContext& ctx, std::int64_t n, int threads) {
  const std::int64_t want = ceil_div(n, threads);
  const std::int64_t cap = static_cast<std::int64_t>(ctx.sm_count > 0 ? ctx.sm_count : 1) * (2048 / threads);
  return static_cast<unsigned>(want < 1 ? 1 : want < cap ? want : cap);
}

// Scratch memory of `bytes` (at least one byte), kept alive by the returned handle.
inline std::shared_ptr<void> scratch(const CudaContext& ctx, std::size_t bytes) {
  if (ctx.scratch == nullptr) throw Error("CUDA: the backend context has no scratch allocator");
  std::shared_ptr<void> p = ctx.scratch(bytes > 0 ? bytes : 1);
  if (!p) throw Error("CUDA: scratch allocation of " + std::to_string(bytes) + " bytes failed");
  return p;
}

// Sub-buffers carved from one scratch block start at multiples of 256 bytes (cuBLAS and float4 alignment).
inline std::size_t round_up_256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

// The first offending row of a range check: kernels atomicMin the row into a device word that starts at
// "none" (all ones); read() waits for the stream and returns -1 when no row was flagged.
class RowFlag {
 public:
  explicit RowFlag(const CudaContext& ctx) : ctx_(ctx), mem_(scratch(ctx, sizeof(unsigned long long))) {
    PIPE_CUDA_CHECK(cudaMemsetAsync(get(), 0xff, sizeof(unsigned long long), ctx.stream));
  }
  unsigned long long* get() const { return static_cast<unsigned long long*>(mem_.get()); }
  std::int64_t read() const {
    unsigned long long host = ~0ull;
    PIPE_CUDA_CHECK(cudaMemcpyAsync(&host, get(), sizeof(host), cudaMemcpyDeviceToHost, ctx_.stream));
    PIPE_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    return host == ~0ull ? -1 : static_cast<std::int64_t>(host);
  }

 private:
  const CudaContext& ctx_;
  std::shared_ptr<void> mem_;
};

// One int32 from device memory (the offending label or token, for the error message).
inline std::int32_t read_int(const CudaContext& ctx, const std::int32_t* p) {
  std::int32_t host = 0;
  PIPE_CUDA_CHECK(cudaMemcpyAsync(&host, p, sizeof(host), cudaMemcpyDeviceToHost, ctx.stream));
  PIPE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return host;
}

// ---- device side

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Block-wide sum and max, the result in every thread. blockDim.x is a multiple of 32; smem holds 32 values.
// Every warp reduces the per-warp values itself (same values, same order), which avoids a broadcast; the
// leading barrier lets a block call these back to back with the same smem.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* smem) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  return warp_sum(lane < warps ? smem[lane] : T(0));
}

__device__ __forceinline__ float block_max(float v, float* smem) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  return warp_max(lane < warps ? smem[lane] : -FLT_MAX);
}

// V consecutive floats (V = 4: one 16-byte access; the caller guarantees alignment).
template <int V>
__device__ __forceinline__ void load_vec(const float* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    v[0] = t.x;
    v[1] = t.y;
    v[2] = t.z;
    v[3] = t.w;
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = p[i];
  }
}

template <int V>
__device__ __forceinline__ void store_vec(float* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) p[i] = v[i];
  }
}

}  // namespace libpipe::cuda::nn
