// Elementwise kernels of the CUDA backend: memory-bound loops with float4
// accesses where every pointer is 16-byte aligned (always, for tensors from
// the allocator), scalar ones otherwise. Per-element arithmetic is the CPU
// backend's (cpu_backend.cpp, cpu_math.hpp), in the same order.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "ops/cuda/cuda_kernels.hpp"
#include "ops/cuda/launch.cuh"
#include "ops/cuda/storage.cuh"
#include "pipe/error.hpp"
#ifndef PIPE_CUDA_EMULATOR  // the backend's ops at the end of the file
#include "ops/cuda/cuda_backend.hpp"
#include "ops/float32_views.hpp"
#endif

namespace libpipe::cuda {
namespace {

// ---- per-element functions

// GELU, tanh form, as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): cpu_math.hpp's formula. The clamp
// keeps 1 + e^z below 2^126, where the fast division (--use_fast_math) would return 0.
constexpr float kGeluS = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluC = 0.044715f;

__device__ __forceinline__ float gelu_sigmoid(float x) {
  const float u = kGeluS * (x + kGeluC * x * x * x);
  const float z = fminf(-2.0f * u, 80.0f);
  return 1.0f / (1.0f + __expf(z));
}

__device__ __forceinline__ float gelu(float x) { return x * gelu_sigmoid(x); }

// d gelu / dx = s + 2 x s (1 - s) u', s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
__device__ __forceinline__ float gelu_grad(float x) {
  const float s = gelu_sigmoid(x);
  const float du = kGeluS * (1.0f + 3.0f * kGeluC * x * x);
  return s + 2.0f * x * s * (1.0f - s) * du;
}

struct Plus {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct Times {
  float factor;
  __device__ float operator()(float v) const { return v * factor; }
};
struct Relu {
  __device__ float operator()(float x) const { return x > 0.0f ? x : 0.0f; }  // NaN -> 0, as on the CPU
};
struct ReluGrad {
  __device__ float operator()(float x, float dy) const { return x > 0.0f ? dy : 0.0f; }
};
struct Gelu {
  __device__ float operator()(float x) const { return gelu(x); }
};
struct GeluGrad {
  __device__ float operator()(float x, float dy) const { return dy * gelu_grad(x); }
};

// ---- flat ops (elementwise_kernel in launch.cuh)

struct Fill {
  float* y;
  float value;
  __device__ void one(std::int64_t j) const { y[j] = value; }
  __device__ void vec4(std::int64_t i) const {
    reinterpret_cast<float4*>(y)[i] = make_float4(value, value, value, value);
  }
};

// bfloat16 conversions (pipe/bfloat16.hpp's rounding: nearest even, one quiet NaN).
struct ToBf16 {
  const float* x;
  std::uint16_t* y;
  __device__ void one(std::int64_t j) const { y[j] = round_to_bf16(x[j]); }
  __device__ void vec4(std::int64_t i) const {
    const float4 v = reinterpret_cast<const float4*>(x)[i];
    reinterpret_cast<ushort4*>(y)[i] =
        make_ushort4(round_to_bf16(v.x), round_to_bf16(v.y), round_to_bf16(v.z), round_to_bf16(v.w));
  }
};
struct FromBf16 {
  const std::uint16_t* x;
  float* y;
  __device__ static float widen(std::uint16_t h) { return __uint_as_float(static_cast<unsigned>(h) << 16); }
  __device__ void one(std::int64_t j) const { y[j] = widen(x[j]); }
  __device__ void vec4(std::int64_t i) const {
    const ushort4 h = reinterpret_cast<const ushort4*>(x)[i];
    reinterpret_cast<float4*>(y)[i] = make_float4(widen(h.x), widen(h.y), widen(h.z), widen(h.w));
  }
};

// y = f(x); x may be y.
template <class F>
struct Map1 {
  const float* x;
  float* y;
  F f;
  __device__ void one(std::int64_t j) const { y[j] = f(x[j]); }
  __device__ void vec4(std::int64_t i) const {
    const float4 v = reinterpret_cast<const float4*>(x)[i];
    reinterpret_cast<float4*>(y)[i] = make_float4(f(v.x), f(v.y), f(v.z), f(v.w));
  }
};

// y = f(a, b); a or b may be y.
template <class F>
struct Map2 {
  const float* a;
  const float* b;
  float* y;
  F f;
  __device__ void one(std::int64_t j) const { y[j] = f(a[j], b[j]); }
  __device__ void vec4(std::int64_t i) const {
    const float4 u = reinterpret_cast<const float4*>(a)[i];
    const float4 v = reinterpret_cast<const float4*>(b)[i];
    reinterpret_cast<float4*>(y)[i] = make_float4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
  }
};

// y = f(a, b) on bfloat16 arrays (storage.cuh), one element per call: the mixed-precision add, accumulate and
// gelu_backward. launch_elementwise never vectorises it (vec4 only completes the interface).
template <class F>
struct Map2Bf16 {
  const bf16* a;
  const bf16* b;
  bf16* y;
  F f;
  __device__ void one(std::int64_t j) const { store(y, j, f(load(a, j), load(b, j))); }
  __device__ void vec4(std::int64_t i) const {
    for (std::int64_t j = 4 * i; j < 4 * i + 4; ++j) one(j);
  }
};

template <class F>
void map1(const CudaContext& ctx, const float* x, float* y, std::int64_t n, F f, const char* what) {
  launch_elementwise(ctx, Map1<F>{x, y, f}, n, aligned16(x) && aligned16(y), what);
}

template <class F>
void map2(const CudaContext& ctx, const float* a, const float* b, float* y, std::int64_t n, F f, const char* what) {
  launch_elementwise(ctx, Map2<F>{a, b, y, f}, n, aligned16(a) && aligned16(b) && aligned16(y), what);
}

// ---- row ops: a [rows, cols] matrix and a [cols] vector
//
// Threads run along a row (coalesced), blocks stride down the rows. op.one(index, col) / op.vec4(index4, col4)
// handle one element or four (then cols counts float4s).

struct AddBias {
  float* y;
  const float* bias;
  __device__ void one(std::int64_t i, std::int64_t c) const { y[i] += bias[c]; }
  __device__ void vec4(std::int64_t i, std::int64_t c) const {
    float4 v = reinterpret_cast<float4*>(y)[i];
    const float4 b = reinterpret_cast<const float4*>(bias)[c];
    v.x += b.x;
    v.y += b.y;
    v.z += b.z;
    v.w += b.w;
    reinterpret_cast<float4*>(y)[i] = v;
  }
};

// x += bias (kept for backward), y = gelu(x)
struct BiasGelu {
  float* x;
  const float* bias;
  float* y;
  __device__ void one(std::int64_t i, std::int64_t c) const {
    const float h = x[i] + bias[c];
    x[i] = h;
    y[i] = gelu(h);
  }
  __device__ void vec4(std::int64_t i, std::int64_t c) const {
    float4 h = reinterpret_cast<float4*>(x)[i];
    const float4 b = reinterpret_cast<const float4*>(bias)[c];
    h.x += b.x;
    h.y += b.y;
    h.z += b.z;
    h.w += b.w;
    reinterpret_cast<float4*>(x)[i] = h;
    reinterpret_cast<float4*>(y)[i] = make_float4(gelu(h.x), gelu(h.y), gelu(h.z), gelu(h.w));
  }
};

// Linear layers' epilogues under mixed precision: the float32 GEMM output h plus the bias, rounded once into y
// (and, for the MLP's up-projection, y = gelu(h + bias) with pre = h + bias kept for backward; GELU takes the
// unrounded sum, as the CPU's widening path does).
struct BiasEpilogueBf16 {
  const float* h;
  const bf16* bias;
  bf16* y;
  __device__ void one(std::int64_t i, std::int64_t c) const { store(y, i, h[i] + load(bias, c)); }
  __device__ void vec4(std::int64_t, std::int64_t) const {}  // never: launched unvectorised
};

struct BiasGeluBf16 {
  const float* h;
  const bf16* bias;
  bf16* pre;
  bf16* y;
  __device__ void one(std::int64_t i, std::int64_t c) const {
    const float v = h[i] + load(bias, c);
    store(pre, i, v);
    store(y, i, gelu(v));
  }
  __device__ void vec4(std::int64_t, std::int64_t) const {}  // never: launched unvectorised
};

template <class Op, bool kVec>
__global__ void __launch_bounds__(kThreads) rows_kernel(Op op, std::int64_t rows, std::int64_t cols) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.y) * blockDim.y;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows; r += stride) {
    if constexpr (kVec)
      op.vec4(r * cols + c, c);
    else
      op.one(r * cols + c, c);
  }
}

// Blocks of kThreads threads, blockDim.x along the columns (a whole number of warps, no wider than the row
// needs, so narrow matrices do not leave most threads idle), blockDim.y rows; enough blocks to fill the GPU.
struct RowsConfig {
  dim3 grid, block;
};

RowsConfig rows_config(const CudaContext& ctx, std::int64_t rows, std::int64_t cols) {
  const std::int64_t tx = std::min<std::int64_t>(kThreads, ceil_div(cols, 32) * 32);
  const std::int64_t ty = kThreads / tx;
  const std::int64_t gx = ceil_div(cols, tx);
  if (gx > std::numeric_limits<int>::max())
    throw Error("CUDA backend: a row of " + std::to_string(cols) + " elements is too long for one launch");
  const std::int64_t cap_y = std::max<std::int64_t>(1, std::int64_t{std::max(ctx.sm_count, 1)} * 8 / gx);
  const std::int64_t gy = std::min({ceil_div(rows, ty), cap_y, std::int64_t{65535}});
  return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
          dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty))};
}

template <class Op>
void launch_rows(const CudaContext& ctx, const Op& op, std::int64_t rows, std::int64_t cols, bool aligned,
                 const char* what) {
  if (rows <= 0 || cols <= 0) return;
  if (aligned && cols % 4 == 0) {
    const RowsConfig cfg = rows_config(ctx, rows, cols / 4);
    rows_kernel<Op, true><<<cfg.grid, cfg.block, 0, ctx.stream>>>(op, rows, cols / 4);
  } else {
    const RowsConfig cfg = rows_config(ctx, rows, cols);
    rows_kernel<Op, false><<<cfg.grid, cfg.block, 0, ctx.stream>>>(op, rows, cols);
  }
  PIPE_CUDA_CHECK_LAUNCH(what);
}

// ---- bias_grad: db[c] += sum_r dy[r, c]
//
// Blocks of 32 columns x 8 row lanes; a warp reads 32 consecutive floats of a row. When the columns alone give
// too few blocks, the rows are split too: each split writes its column sums to scratch and a second kernel
// adds them up in split order. Same result on every run, no atomics.
constexpr int kColTile = 32;
constexpr int kRowLanes = 8;

template <class T>
__global__ void __launch_bounds__(kColTile* kRowLanes)
    column_sum_kernel(const T* dy, float* db, float* partial, std::int64_t rows, std::int64_t cols,
                      std::int64_t rows_per_split) {
  __shared__ float sums[kRowLanes][kColTile + 1];
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * kColTile + threadIdx.x;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.y) * rows_per_split;
  const std::int64_t r1 = rows - r0 < rows_per_split ? rows : r0 + rows_per_split;
  float s = 0.0f;
  if (c < cols)
    for (std::int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) s += load(dy, r * cols + c);
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || c >= cols) return;
  float total = sums[0][threadIdx.x];
  for (int j = 1; j < kRowLanes; ++j) total += sums[j][threadIdx.x];
  if (partial == nullptr)
    db[c] += total;
  else
    partial[static_cast<std::int64_t>(blockIdx.y) * cols + c] = total;
}

__global__ void __launch_bounds__(kThreads)
    column_sum_finish_kernel(const float* partial, float* db, std::int64_t splits, std::int64_t cols) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += stride) {
    float total = 0.0f;
    for (std::int64_t j = 0; j < splits; ++j) total += partial[j * cols + c];
    db[c] += total;
  }
}

// ---- k = 0 GEMMs: C = beta * C

__global__ void __launch_bounds__(kThreads)
    scale_matrices_kernel(float* c, std::int64_t ldc, std::int64_t m, std::int64_t n, float beta, std::int64_t stride_c,
                          std::int64_t batch) {
  const std::int64_t col = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= n) return;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.y) * blockDim.y;
  for (std::int64_t rr = static_cast<std::int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; rr < m * batch;
       rr += stride) {
    const std::int64_t b = rr / m;
    float* p = c + b * stride_c + (rr - b * m) * ldc + col;
    *p = beta == 0.0f ? 0.0f : *p * beta;  // beta 0 overwrites (C may be uninitialised), as BLAS does
  }
}

}  // namespace

void fill(const CudaContext& ctx, float* y, float value, std::int64_t n) {
  if (n <= 0) return;
  if (value == 0.0f && !std::signbit(value)) {  // all-zero bits: a memset
    PIPE_CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<std::size_t>(n) * sizeof(float), ctx.stream));
    return;
  }
  launch_elementwise(ctx, Fill{y, value}, n, aligned16(y), "fill");
}

void to_bf16(const CudaContext& ctx, const float* x, std::uint16_t* y, std::int64_t n) {
  launch_elementwise(ctx, ToBf16{x, y}, n, aligned16(x) && aligned16(y), "to_bf16");
}

void from_bf16(const CudaContext& ctx, const std::uint16_t* x, float* y, std::int64_t n) {
  launch_elementwise(ctx, FromBf16{x, y}, n, aligned16(x) && aligned16(y), "from_bf16");
}

void add(const CudaContext& ctx, const float* a, const float* b, float* out, std::int64_t n) {
  map2(ctx, a, b, out, n, Plus{}, "add");
}

void accumulate(const CudaContext& ctx, float* y, const float* x, std::int64_t n) {
  map2(ctx, y, x, y, n, Plus{}, "accumulate");
}

void scale(const CudaContext& ctx, float* y, float factor, std::int64_t n) {
  map1(ctx, y, y, n, Times{factor}, "scale");
}

void relu_forward(const CudaContext& ctx, const float* x, float* y, std::int64_t n) {
  map1(ctx, x, y, n, Relu{}, "relu_forward");
}

void relu_backward(const CudaContext& ctx, const float* x, const float* dy, float* dx, std::int64_t n) {
  map2(ctx, x, dy, dx, n, ReluGrad{}, "relu_backward");
}

void gelu_forward(const CudaContext& ctx, const float* x, float* y, std::int64_t n) {
  map1(ctx, x, y, n, Gelu{}, "gelu_forward");
}

void gelu_backward(const CudaContext& ctx, const float* x, const float* dy, float* dx, std::int64_t n) {
  map2(ctx, x, dy, dx, n, GeluGrad{}, "gelu_backward");
}

void add_bias(const CudaContext& ctx, float* y, const float* bias, std::int64_t rows, std::int64_t cols) {
  launch_rows(ctx, AddBias{y, bias}, rows, cols, aligned16(y) && aligned16(bias), "add_bias");
}

void bias_gelu_forward(const CudaContext& ctx, float* x, const float* bias, float* y, std::int64_t rows,
                       std::int64_t cols) {
  launch_rows(ctx, BiasGelu{x, bias, y}, rows, cols, aligned16(x) && aligned16(bias) && aligned16(y),
              "bias_gelu_forward");
}

namespace {

template <class T>
void column_sums(const CudaContext& ctx, const T* dy, float* db, std::int64_t rows, std::int64_t cols) {
  if (rows <= 0 || cols <= 0) return;
  const std::int64_t col_blocks = ceil_div(cols, kColTile);
  if (col_blocks > std::numeric_limits<int>::max())
    throw Error("bias_grad: " + std::to_string(cols) + " columns are too many for one launch");
  // Splits: enough blocks for about 8 per SM, each split at least 64 rows (8 per row lane).
  const std::int64_t want = ceil_div(std::int64_t{std::max(ctx.sm_count, 1)} * 8, col_blocks);
  std::int64_t splits = std::min({want, ceil_div(rows, 64), std::int64_t{65535}});
  splits = std::max<std::int64_t>(splits, 1);
  const std::int64_t rows_per_split = ceil_div(rows, splits);
  splits = ceil_div(rows, rows_per_split);  // no empty split
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(splits));
  const dim3 block(kColTile, kRowLanes);
  if (splits == 1) {
    column_sum_kernel<T><<<grid, block, 0, ctx.stream>>>(dy, db, nullptr, rows, cols, rows_per_split);
    PIPE_CUDA_CHECK_LAUNCH("bias_grad");
    return;
  }
  // Released when this returns: later work on the stream reuses it only after these kernels.
  const std::shared_ptr<void> scratch = ctx.scratch(static_cast<std::size_t>(splits * cols) * sizeof(float));
  float* partial = static_cast<float*>(scratch.get());
  column_sum_kernel<T><<<grid, block, 0, ctx.stream>>>(dy, db, partial, rows, cols, rows_per_split);
  PIPE_CUDA_CHECK_LAUNCH("bias_grad (partial sums)");
  column_sum_finish_kernel<<<grid_for(ctx, cols), kThreads, 0, ctx.stream>>>(partial, db, splits, cols);
  PIPE_CUDA_CHECK_LAUNCH("bias_grad (final sums)");
}

}  // namespace

void bias_grad(const CudaContext& ctx, const float* dy, float* db, std::int64_t rows, std::int64_t cols) {
  column_sums(ctx, dy, db, rows, cols);
}

void bias_grad(const CudaContext& ctx, const bf16* dy, float* db, std::int64_t rows, std::int64_t cols) {
  column_sums(ctx, dy, db, rows, cols);
}

// ---- mixed precision

void add(const CudaContext& ctx, const bf16* a, const bf16* b, bf16* out, std::int64_t n) {
  launch_elementwise(ctx, Map2Bf16<Plus>{a, b, out, Plus{}}, n, false, "add (bf16)");
}

void accumulate(const CudaContext& ctx, bf16* y, const bf16* x, std::int64_t n) {
  launch_elementwise(ctx, Map2Bf16<Plus>{y, x, y, Plus{}}, n, false, "accumulate (bf16)");
}

void gelu_backward(const CudaContext& ctx, const bf16* x, const bf16* dy, bf16* dx, std::int64_t n) {
  launch_elementwise(ctx, Map2Bf16<GeluGrad>{x, dy, dx, GeluGrad{}}, n, false, "gelu_backward (bf16)");
}

void bias_epilogue(const CudaContext& ctx, const float* h, const bf16* bias, bf16* y, std::int64_t rows,
                   std::int64_t cols) {
  launch_rows(ctx, BiasEpilogueBf16{h, bias, y}, rows, cols, false, "bias_epilogue (bf16)");
}

void bias_gelu(const CudaContext& ctx, const float* h, const bf16* bias, bf16* pre, bf16* y, std::int64_t rows,
               std::int64_t cols) {
  launch_rows(ctx, BiasGeluBf16{h, bias, pre, y}, rows, cols, false, "bias_gelu (bf16)");
}

void scale_matrices(const CudaContext& ctx, float* c, std::int64_t ldc, std::int64_t m, std::int64_t n, float beta,
                    std::int64_t stride_c, std::int64_t batch) {
  if (m <= 0 || n <= 0 || batch <= 0 || beta == 1.0f) return;
  const RowsConfig cfg = rows_config(ctx, m * batch, n);
  scale_matrices_kernel<<<cfg.grid, cfg.block, 0, ctx.stream>>>(c, ldc, m, n, beta, stride_c, batch);
  PIPE_CUDA_CHECK_LAUNCH("gemm (k = 0: C = beta C)");
}

// ---- the backend's ops (CudaBackend, pipe/backend_ops.inc) on these kernels; left out of the CUDA-on-CPU
// emulator, which tests the launchers above against the CPU backend.
#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::to_bf16(const float* x, std::uint16_t* y, std::int64_t n) {
  bind();
  cuda::to_bf16(ctx_, x, y, n);
}

void CudaBackend::from_bf16(const std::uint16_t* x, float* y, std::int64_t n) {
  bind();
  cuda::from_bf16(ctx_, x, y, n);
}

void CudaBackend::add(In a, In b, Out out, std::int64_t n) {
  bind();
  if (all_bf16({a.dtype, b.dtype, out.dtype})) return cuda::add(ctx_, bits(a), bits(b), bits(out), n);
  Float32Views v(*this, "add");
  cuda::add(ctx_, v.in(a, n), v.in(b, n), v.out(out, n), n);
  v.finish();
}

void CudaBackend::accumulate(Out y, In x, std::int64_t n) {
  bind();
  if (all_bf16({y.dtype, x.dtype})) return cuda::accumulate(ctx_, bits(y), bits(x), n);
  Float32Views v(*this, "accumulate");
  const float* x32 = v.in(x, n);
  cuda::accumulate(ctx_, v.in_out(y, n), x32, n);
  v.finish();
}

void CudaBackend::bias_epilogue(const float* h, In bias, Out y, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({bias.dtype, y.dtype})) return cuda::bias_epilogue(ctx_, h, bits(bias), bits(y), rows, cols);
  Float32Views v(*this, "bias_epilogue");
  const float* b32 = v.in(bias, cols);
  float* y32 = v.out(y, rows * cols);
  if (y32 != h) copy(y32, h, rows * cols);
  cuda::add_bias(ctx_, y32, b32, rows, cols);
  v.finish();
}

void CudaBackend::bias_gelu(const float* h, In bias, Out pre, Out y, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({bias.dtype, pre.dtype, y.dtype}))
    return cuda::bias_gelu(ctx_, h, bits(bias), bits(pre), bits(y), rows, cols);
  Float32Views v(*this, "bias_gelu");
  const float* b32 = v.in(bias, cols);
  float* pre32 = v.out(pre, rows * cols);
  if (pre32 != h) copy(pre32, h, rows * cols);
  cuda::bias_gelu_forward(ctx_, pre32, b32, v.out(y, rows * cols), rows, cols);
  v.finish();
}

void CudaBackend::gelu_backward(In x, In dy, Out dx, std::int64_t n) {
  bind();
  if (all_bf16({x.dtype, dy.dtype, dx.dtype})) return cuda::gelu_backward(ctx_, bits(x), bits(dy), bits(dx), n);
  Float32Views v(*this, "gelu_backward");
  cuda::gelu_backward(ctx_, v.in(x, n), v.in(dy, n), v.out(dx, n), n);
  v.finish();
}

void CudaBackend::bias_grad(In dy, float* db, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({dy.dtype})) return cuda::bias_grad(ctx_, bits(dy), db, rows, cols);
  Float32Views v(*this, "bias_grad");
  cuda::bias_grad(ctx_, v.in(dy, rows * cols), db, rows, cols);
}

void CudaBackend::scale(float* y, float factor, std::int64_t n) {
  bind();
  cuda::scale(ctx_, y, factor, n);
}

void CudaBackend::relu_forward(const float* x, float* y, std::int64_t n) {
  bind();
  cuda::relu_forward(ctx_, x, y, n);
}

void CudaBackend::relu_backward(const float* x, const float* dy, float* dx, std::int64_t n) {
  bind();
  cuda::relu_backward(ctx_, x, dy, dx, n);
}

void CudaBackend::gelu_forward(const float* x, float* y, std::int64_t n) {
  bind();
  cuda::gelu_forward(ctx_, x, y, n);
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
