// Launchers for the backend's own kernels: elementwise ops (elementwise.cu)
// and optimizer updates and reductions (optimizer.cu). Semantics are those of
// the Backend method of the same name (pipe/backend.hpp); each runs
// asynchronously on ctx.stream unless noted, launches nothing for empty
// input, and checks its launch. Pointers are device pointers.
#pragma once

#include <cstdint>

#include "ops/cuda/cuda_context.hpp"

namespace libpipe::cuda {

// ---- elementwise.cu
void fill(const CudaContext& ctx, float* y, float value, std::int64_t n);
// Rounding to nearest even, every NaN to 0x7FFF (pipe/bfloat16.hpp).
void to_bf16(const CudaContext& ctx, const float* x, std::uint16_t* y, std::int64_t n);
void from_bf16(const CudaContext& ctx, const std::uint16_t* x, float* y, std::int64_t n);
void add(const CudaContext& ctx, const float* a, const float* b, float* out, std::int64_t n);
void accumulate(const CudaContext& ctx, float* y, const float* x, std::int64_t n);
void scale(const CudaContext& ctx, float* y, float factor, std::int64_t n);
void add_bias(const CudaContext& ctx, float* y, const float* bias, std::int64_t rows, std::int64_t cols);
// Accumulates into db; deterministic (fixed-order partial sums, no atomics).
void bias_grad(const CudaContext& ctx, const float* dy, float* db, std::int64_t rows, std::int64_t cols);
void relu_forward(const CudaContext& ctx, const float* x, float* y, std::int64_t n);
void relu_backward(const CudaContext& ctx, const float* x, const float* dy, float* dx, std::int64_t n);
void gelu_forward(const CudaContext& ctx, const float* x, float* y, std::int64_t n);
void gelu_backward(const CudaContext& ctx, const float* x, const float* dy, float* dx, std::int64_t n);
void bias_gelu_forward(const CudaContext& ctx, float* x, const float* bias, float* y, std::int64_t rows,
                       std::int64_t cols);
// C = beta * C for `batch` row-major m x n blocks at stride_c (a GEMM with k = 0); beta 0 writes zeros.
void scale_matrices(const CudaContext& ctx, float* c, std::int64_t ldc, std::int64_t m, std::int64_t n, float beta,
                    std::int64_t stride_c, std::int64_t batch);

// ---- mixed precision (elementwise.cu): bfloat16 arrays held as their bits, float32 math, one rounding per output
// (storage.cuh). The epilogues take a linear layer's float32 GEMM output h: y = h + bias; pre = h + bias and
// y = gelu(h + bias).
void add(const CudaContext& ctx, const std::uint16_t* a, const std::uint16_t* b, std::uint16_t* out, std::int64_t n);
void accumulate(const CudaContext& ctx, std::uint16_t* y, const std::uint16_t* x, std::int64_t n);
void gelu_backward(const CudaContext& ctx, const std::uint16_t* x, const std::uint16_t* dy, std::uint16_t* dx,
                   std::int64_t n);
void bias_grad(const CudaContext& ctx, const std::uint16_t* dy, float* db, std::int64_t rows, std::int64_t cols);
void bias_epilogue(const CudaContext& ctx, const float* h, const std::uint16_t* bias, std::uint16_t* y,
                   std::int64_t rows, std::int64_t cols);
void bias_gelu(const CudaContext& ctx, const float* h, const std::uint16_t* bias, std::uint16_t* pre,
               std::uint16_t* y, std::int64_t rows, std::int64_t cols);

// ---- optimizer.cu
void sgd_momentum(const CudaContext& ctx, float* param, const float* grad, float* momentum_buffer, std::int64_t n,
                  float lr, float momentum, float weight_decay);
// AdamW with the scalars the CPU backend folds on the host: param = param * decay - step_size * m' /
// (sqrt(v') * inv_sqrt_bc2 + eps).
void adamw(const CudaContext& ctx, float* param, const float* grad, float* m, float* v, std::int64_t n, float beta1,
           float beta2, float eps, float decay, float step_size, float inv_sqrt_bc2);
// AdamW over many tensors in launches of up to 64 (Backend::adamw_multi), each tensor with its own folded
// weight-decay factor; the per-element arithmetic is adamw's. Where param_bf16 is set, the updated param is also
// rounded into it (to_bf16's rounding).
struct AdamwMultiEntry {
  float* param;
  const float* grad;
  float* m;
  float* v;
  std::uint16_t* param_bf16;
  std::int64_t n;
  float decay;  // 1 - lr * weight_decay
};
void adamw_multi(const CudaContext& ctx, const AdamwMultiEntry* tensors, int count, float beta1, float beta2,
                 float eps, float step_size, float inv_sqrt_bc2);
// Sum of x^2 accumulated in double; waits for the result. Deterministic: the grid depends on n and x's
// alignment only (not on the GPU), blocks sum in a fixed order, and so does the pass over the block partials.
double sum_squares(const CudaContext& ctx, const float* x, std::int64_t n);
// out (host) [i] = sum_squares(x[i], n[i]): the same kernels per array, one copy back and one wait for all.
void sum_squares_each(const CudaContext& ctx, const float* const* x, const std::int64_t* n, int count, double* out);

}  // namespace libpipe::cuda
