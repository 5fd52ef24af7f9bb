// Launch helpers shared by elementwise.cu and optimizer.cu: grid sizes and
// the float4 grid-stride loop every elementwise kernel is built on.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "ops/cuda/cuda_check.hpp"
#include "ops/cuda/cuda_context.hpp"

namespace libpipe::cuda {

constexpr int kThreads = 256;

inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `items`: enough to fill every SM (2048 resident threads on sm_80 and
// sm_90), the loop covering the rest. More blocks would only add scheduling overhead.
inline unsigned grid_for(const CudaContext& ctx, std::int64_t items, int threads = kThreads) {
  const std::int64_t cap = std::int64_t{std::max(ctx.sm_count, 1)} * (2048 / threads);
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(ceil_div(items, threads), cap)));
}

// Op::vec4(i) handles floats 4i..4i+3 (its pointers viewed as float4), Op::one(j) float j: float4 accesses
// over the first 4 * n4 floats, scalar ones over the rest. n4 = 0 when a pointer is not 16-byte aligned.
template <class Op>
__global__ void __launch_bounds__(kThreads) elementwise_kernel(Op op, std::int64_t n4, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t start = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (std::int64_t i = start; i < n4; i += stride) op.vec4(i);
  for (std::int64_t j = 4 * n4 + start; j < n; j += stride) op.one(j);
}

// How many blocks of elementwise_kernel<Op> an SM holds at once (fewer than 2048 / kThreads when the op needs
// many registers): the grid is one full wave, so no SM gets a second, partial one. Asked once per op.
template <class Op>
int elementwise_blocks_per_sm() {
  static const int blocks = [] {
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, elementwise_kernel<Op>, kThreads, 0) != cudaSuccess) {
      (void)cudaGetLastError();
      b = 0;
    }
    return b > 0 ? b : 2048 / kThreads;
  }();
  return blocks;
}

// `vectorise`: every pointer of op is 16-byte aligned.
template <class Op>
void launch_elementwise(const CudaContext& ctx, const Op& op, std::int64_t n, bool vectorise, const char* what) {
  if (n <= 0) return;
  const std::int64_t n4 = vectorise ? n / 4 : 0;
  const std::int64_t items = std::max(n4, n - 4 * n4);
  const std::int64_t wave = std::int64_t{std::max(ctx.sm_count, 1)} * elementwise_blocks_per_sm<Op>();
  const auto blocks = static_cast<unsigned>(std::max<std::int64_t>(1, std::min(ceil_div(items, kThreads), wave)));
  elementwise_kernel<Op><<<blocks, kThreads, 0, ctx.stream>>>(op, n4, n);
  PIPE_CUDA_CHECK_LAUNCH(what);
}

}  // namespace libpipe::cuda
