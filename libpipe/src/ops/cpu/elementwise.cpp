// The CPU backend's elementwise ops: one pass over memory each, a kernel
// template per instruction set (PIPE_ISA_DISPATCH, cpu_math.hpp). Typed ops run
// the float32 kernels on Float32Views (ops/float32_views.hpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "cpu_threads.hpp"
#include "ops/float32_views.hpp"
#include "pipe/error.hpp"

namespace libpipe::cpu {

// ---- elementwise
//
// Each loop is a kernel template compiled per instruction set (PIPE_ISA_DISPATCH, cpu_math.hpp); the members
// only forward to name_any, which runs the one of this CPU.

namespace {

template <int W>
PIPE_INLINE void add_kernel(const float* a, const float* b, float* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
PIPE_ISA_DISPATCH(add_kernel, (const float* a, const float* b, float* out, std::int64_t n), (a, b, out, n))

template <int W>
PIPE_INLINE void accumulate_kernel(float* y, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += x[i];
}
PIPE_ISA_DISPATCH(accumulate_kernel, (float* y, const float* x, std::int64_t n), (y, x, n))

template <int W>
PIPE_INLINE void scale_kernel(float* y, float factor, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] *= factor;
}
PIPE_ISA_DISPATCH(scale_kernel, (float* y, float factor, std::int64_t n), (y, factor, n))

template <int W>
PIPE_INLINE void add_bias_kernel(float* y, const float* bias, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = y + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}
PIPE_ISA_DISPATCH(add_bias_kernel, (float* y, const float* bias, std::int64_t rows, std::int64_t cols),
                  (y, bias, rows, cols))

// Columns [0, cols) of rows `ld` apart.
template <int W>
PIPE_INLINE void bias_grad_kernel(const float* dy, std::int64_t ld, float* db, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = dy + r * ld;
    for (std::int64_t c = 0; c < cols; ++c) db[c] += row[c];
  }
}
PIPE_ISA_DISPATCH(bias_grad_kernel, (const float* dy, std::int64_t ld, float* db, std::int64_t rows, std::int64_t cols),
                  (dy, ld, db, rows, cols))

template <int W>
PIPE_INLINE void relu_kernel(const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = maxf(x[i], 0.0f);
}
PIPE_ISA_DISPATCH(relu_kernel, (const float* x, float* y, std::int64_t n), (x, y, n))

template <int W>
PIPE_INLINE void relu_backward_kernel(const float* x, const float* dy, float* dx, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = dy[i];  // loaded unconditionally, so that the select vectorises
    dx[i] = x[i] > 0.0f ? g : 0.0f;
  }
}
PIPE_ISA_DISPATCH(relu_backward_kernel, (const float* x, const float* dy, float* dx, std::int64_t n), (x, dy, dx, n))

template <int W>
PIPE_INLINE void gelu_kernel(const float* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = gelu(x[i]);
}
PIPE_ISA_DISPATCH(gelu_kernel, (const float* x, float* y, std::int64_t n), (x, y, n))

template <int W>
PIPE_INLINE void gelu_backward_kernel(const float* x, const float* dy, float* dx, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_grad(x[i]);
}
PIPE_ISA_DISPATCH(gelu_backward_kernel, (const float* x, const float* dy, float* dx, std::int64_t n), (x, dy, dx, n))

template <int W>
PIPE_INLINE void bias_gelu_kernel(float* x, const float* bias, float* y, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * cols;
    float* yr = y + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) {
      const float h = xr[c] + bias[c];
      xr[c] = h;
      yr[c] = gelu(h);
    }
  }
}
PIPE_ISA_DISPATCH(bias_gelu_kernel, (float* x, const float* bias, float* y, std::int64_t rows, std::int64_t cols),
                  (x, bias, y, rows, cols))

}  // namespace

void CpuBackend::add(In a, In b, Out out, std::int64_t n) {
  Float32Views v(*this, "add");
  const float* a32 = v.in(a, n);
  const float* b32 = v.in(b, n);
  float* out32 = v.out(out, n);
  parallel_for(
      n, kMinShare, [&](std::int64_t i, std::int64_t e) { add_kernel_any(a32 + i, b32 + i, out32 + i, e - i); },
      kShareAlign);
  v.finish();
}

void CpuBackend::accumulate(Out y, In x, std::int64_t n) {
  Float32Views v(*this, "accumulate");
  const float* x32 = v.in(x, n);
  float* y32 = v.in_out(y, n);
  parallel_for(
      n, kMinShare, [&](std::int64_t i, std::int64_t e) { accumulate_kernel_any(y32 + i, x32 + i, e - i); },
      kShareAlign);
  v.finish();
}

void CpuBackend::scale(float* y, float factor, std::int64_t n) { scale_kernel_any(y, factor, n); }

void CpuBackend::bias_epilogue(const float* h, In bias, Out y, std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "bias_epilogue");
  const float* b32 = v.in(bias, cols);
  float* y32 = v.out(y, rows * cols);
  parallel_for(rows, min_rows(cols), [&](std::int64_t r, std::int64_t e) {
    copy(y32 + r * cols, h + r * cols, (e - r) * cols);  // nothing to do when y is h
    add_bias_kernel_any(y32 + r * cols, b32, e - r, cols);
  });
  v.finish();
}

void CpuBackend::bias_grad(In dy, float* db, std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "bias_grad");
  const float* dy32 = v.in(dy, rows * cols);
  // Split by columns: each column's sum runs down the rows in the same order on any thread count.
  parallel_for(cols, min_cols(rows),
               [&](std::int64_t c, std::int64_t e) { bias_grad_kernel_any(dy32 + c, cols, db + c, rows, e - c); },
               kShareAlign);
}

void CpuBackend::relu_forward(const float* x, float* y, std::int64_t n) { relu_kernel_any(x, y, n); }

void CpuBackend::relu_backward(const float* x, const float* dy, float* dx, std::int64_t n) {
  relu_backward_kernel_any(x, dy, dx, n);
}

void CpuBackend::gelu_forward(const float* x, float* y, std::int64_t n) { gelu_kernel_any(x, y, n); }

void CpuBackend::gelu_backward(In x, In dy, Out dx, std::int64_t n) {
  Float32Views v(*this, "gelu_backward");
  const float* x32 = v.in(x, n);
  const float* dy32 = v.in(dy, n);
  float* dx32 = v.out(dx, n);
  parallel_for(n, kMinShare,
               [&](std::int64_t i, std::int64_t e) { gelu_backward_kernel_any(x32 + i, dy32 + i, dx32 + i, e - i); },
               kShareAlign);
  v.finish();
}

void CpuBackend::bias_gelu(const float* h, In bias, Out pre, Out y, std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "bias_gelu");
  const float* b32 = v.in(bias, cols);
  float* pre32 = v.out(pre, rows * cols);
  float* y32 = v.out(y, rows * cols);
  parallel_for(rows, min_rows(cols), [&](std::int64_t r, std::int64_t e) {
    copy(pre32 + r * cols, h + r * cols, (e - r) * cols);  // nothing to do when pre is h
    bias_gelu_kernel_any(pre32 + r * cols, b32, y32 + r * cols, e - r, cols);  // pre += b; y = gelu(pre), one pass
  });
  v.finish();
}

}  // namespace libpipe::cpu
