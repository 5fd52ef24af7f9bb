// LayerNorm on the CPU: forward, backward to the input, backward to the
// weight and bias; float32 kernels, typed arrays through Float32Views.
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

// ---- LayerNorm

namespace {

template <int W>
PIPE_INLINE void layernorm_kernel(const float* x, const float* weight, const float* bias, float* y, float* mean,
                                  float* rstd, std::int64_t rows, std::int64_t cols, float eps) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    // Two passes (mean, then squared deviations): no cancellation when |mean| >> std. Both work on
    // x - x[0], exact in float for nearby values, so that a large common offset (a residual stream far from
    // zero) does not drown the deviations in the rounding of the mean.
    const float pivot = xr[0];
    const float dm = sum_minus<W>(xr, pivot, cols) * inv_cols;  // mean - pivot
    const float var = sum_sq_dev<W>(xr, pivot, dm, cols) * inv_cols;
    const float rs = 1.0f / std::sqrt(var + eps);
    for (std::int64_t c = 0; c < cols; ++c) yr[c] = ((xr[c] - pivot) - dm) * rs * weight[c] + bias[c];
    mean[r] = pivot + dm;
    rstd[r] = rs;
  }
}
PIPE_ISA_DISPATCH(layernorm_kernel,
                  (const float* x, const float* weight, const float* bias, float* y, float* mean, float* rstd,
                   std::int64_t rows, std::int64_t cols, float eps),
                  (x, weight, bias, y, mean, rstd, rows, cols, eps))

// dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * weight
template <int W>
PIPE_INLINE void layernorm_backward_input_kernel(const float* dy, const float* x, const float* weight,
                                                 const float* mean, const float* rstd, float* dx, std::int64_t rows,
                                                 std::int64_t cols) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * cols;
    const float* xr = x + r * cols;
    float* dxr = dx + r * cols;
    const float m = mean[r];
    const float rs = rstd[r];
    const vf<W> mv = splat<W>(m);
    vf<W> acc_g = {}, acc_gx = {};
    std::int64_t c = 0;
    for (; c + W <= cols; c += W) {
      const vf<W> g = load<W>(dyr + c) * load<W>(weight + c);
      acc_g += g;
      acc_gx += g * (load<W>(xr + c) - mv);
    }
    float sg = hsum(acc_g), sgx = hsum(acc_gx);
    for (; c < cols; ++c) {
      const float g = dyr[c] * weight[c];
      sg += g;
      sgx += g * (xr[c] - m);
    }
    const float mg = sg * inv_cols;
    const float mgx = sgx * rs * inv_cols;
    for (c = 0; c < cols; ++c) {
      const float xhat = (xr[c] - m) * rs;
      dxr[c] = rs * (dyr[c] * weight[c] - mg - xhat * mgx);
    }
  }
}
PIPE_ISA_DISPATCH(layernorm_backward_input_kernel,
                  (const float* dy, const float* x, const float* weight, const float* mean, const float* rstd,
                   float* dx, std::int64_t rows, std::int64_t cols),
                  (dy, x, weight, mean, rstd, dx, rows, cols))

// Columns [0, cols) of rows `ld` apart.
template <int W>
PIPE_INLINE void layernorm_backward_weight_kernel(const float* dy, const float* x, std::int64_t ld, const float* mean,
                                                  const float* rstd, float* dweight, float* dbias, std::int64_t rows,
                                                  std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * ld;
    const float* xr = x + r * ld;
    const float m = mean[r];
    const float rs = rstd[r];
    for (std::int64_t c = 0; c < cols; ++c) {
      dweight[c] += dyr[c] * ((xr[c] - m) * rs);
      dbias[c] += dyr[c];
    }
  }
}
PIPE_ISA_DISPATCH(layernorm_backward_weight_kernel,
                  (const float* dy, const float* x, std::int64_t ld, const float* mean, const float* rstd,
                   float* dweight, float* dbias, std::int64_t rows, std::int64_t cols),
                  (dy, x, ld, mean, rstd, dweight, dbias, rows, cols))

}  // namespace

void CpuBackend::layernorm_forward(In x, In weight, In bias, Out y, float* mean, float* rstd, std::int64_t rows,
                                   std::int64_t cols, float eps) {
  Float32Views v(*this, "layernorm_forward");
  const float* x32 = v.in(x, rows * cols);
  const float* w32 = v.in(weight, cols);
  const float* b32 = v.in(bias, cols);
  float* y32 = v.out(y, rows * cols);
  parallel_for(rows, min_rows(cols), [&](std::int64_t r, std::int64_t e) {
    layernorm_kernel_any(x32 + r * cols, w32, b32, y32 + r * cols, mean + r, rstd + r, e - r, cols, eps);
  });
  v.finish();
}

void CpuBackend::layernorm_backward_input(In dy, In x, In weight, const float* mean, const float* rstd, Out dx,
                                          std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "layernorm_backward_input");
  const float* dy32 = v.in(dy, rows * cols);
  const float* x32 = v.in(x, rows * cols);
  const float* w32 = v.in(weight, cols);
  float* dx32 = v.out(dx, rows * cols);
  parallel_for(rows, min_rows(cols), [&](std::int64_t r, std::int64_t e) {
    layernorm_backward_input_kernel_any(dy32 + r * cols, x32 + r * cols, w32, mean + r, rstd + r, dx32 + r * cols,
                                        e - r, cols);
  });
  v.finish();
}

void CpuBackend::layernorm_backward_weight(In dy, In x, const float* mean, const float* rstd, float* dweight,
                                           float* dbias, std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "layernorm_backward_weight");
  const float* dy32 = v.in(dy, rows * cols);
  const float* x32 = v.in(x, rows * cols);
  // By columns: each column's sum runs down the rows in the same order on any thread count.
  parallel_for(cols, min_cols(rows),
               [&](std::int64_t c, std::int64_t e) {
                 layernorm_backward_weight_kernel_any(dy32 + c, x32 + c, cols, mean, rstd, dweight + c, dbias + c,
                                                      rows, e - c);
               },
               kShareAlign);
}

}  // namespace libpipe::cpu
