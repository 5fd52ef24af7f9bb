// Root-mean-square norm on the CPU: forward, backward to the input, backward to the weight;
// float32 kernels, typed arrays through Float32Views.
#include <cmath>
#include <cstdint>

#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "cpu_threads.hpp"
#include "ops/float32_views.hpp"

namespace libpipe::cpu {

namespace {

// Compiled per instruction set (cpu_math.hpp); the row sums in vectors of W lanes, as LayerNorm's, so a row's
// result depends on the row alone, not on its batch or on the thread that runs it. As plain scalar loops these
// kernels took 6% of llama-tiny's training step on one core.

// y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps)
template <int W>
PIPE_INLINE void rms_norm_kernel(const float* x, const float* weight, float* y, float* rstd, std::int64_t rows,
                                 std::int64_t cols, float eps) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float ss = sum_sq_dev<W>(xr, 0.0f, 0.0f, cols);  // (x - 0) - 0 is x exactly
    const float rs = 1.0f / std::sqrt(ss * inv_cols + eps);
    for (std::int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * rs * weight[c];
    rstd[r] = rs;
  }
}
PIPE_ISA_DISPATCH(rms_norm_kernel,
                  (const float* x, const float* weight, float* y, float* rstd, std::int64_t rows, std::int64_t cols,
                   float eps),
                  (x, weight, y, rstd, rows, cols, eps))

// dx = rstd (g - x rstd^2 mean(g x)), g = dy * w
template <int W>
PIPE_INLINE void rms_norm_backward_input_kernel(const float* dy, const float* x, const float* weight,
                                                const float* rstd, float* dx, std::int64_t rows, std::int64_t cols) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * cols;
    const float* xr = x + r * cols;
    float* dxr = dx + r * cols;
    const float rs = rstd[r];
    vf<W> acc = {};
    std::int64_t c = 0;
    for (; c + W <= cols; c += W) acc += load<W>(dyr + c) * load<W>(weight + c) * load<W>(xr + c);
    float sgx = hsum(acc);
    for (; c < cols; ++c) sgx += dyr[c] * weight[c] * xr[c];
    const float k = sgx * inv_cols * rs * rs;
    for (c = 0; c < cols; ++c) dxr[c] = rs * (dyr[c] * weight[c] - xr[c] * k);
  }
}
PIPE_ISA_DISPATCH(rms_norm_backward_input_kernel,
                  (const float* dy, const float* x, const float* weight, const float* rstd, float* dx,
                   std::int64_t rows, std::int64_t cols),
                  (dy, x, weight, rstd, dx, rows, cols))

// Columns [0, cols) of rows `ld` apart.
template <int W>
PIPE_INLINE void rms_norm_backward_weight_kernel(const float* dy, const float* x, std::int64_t ld, const float* rstd,
                                                 float* dweight, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * ld;
    const float* xr = x + r * ld;
    const float rs = rstd[r];
    for (std::int64_t c = 0; c < cols; ++c) dweight[c] += dyr[c] * (xr[c] * rs);
  }
}
PIPE_ISA_DISPATCH(rms_norm_backward_weight_kernel,
                  (const float* dy, const float* x, std::int64_t ld, const float* rstd, float* dweight,
                   std::int64_t rows, std::int64_t cols),
                  (dy, x, ld, rstd, dweight, rows, cols))

}  // namespace

void CpuBackend::rms_norm_forward(In x, In weight, Out y, float* rstd, std::int64_t rows, std::int64_t cols,
                                  float eps) {
  Float32Views v(*this, "rms_norm_forward");
  const float* x32 = v.in(x, rows * cols);
  const float* w32 = v.in(weight, cols);
  float* y32 = v.out(y, rows * cols);
  // Whole rows per thread (cpu_threads.hpp); the weight gradient below by columns.
  parallel_for(rows, min_rows(cols), [&](std::int64_t r, std::int64_t e) {
    rms_norm_kernel_any(x32 + r * cols, w32, y32 + r * cols, rstd + r, e - r, cols, eps);
  });
  v.finish();
}

void CpuBackend::rms_norm_backward_input(In dy, In x, In weight, const float* rstd, Out dx, std::int64_t rows,
                                         std::int64_t cols) {
  Float32Views v(*this, "rms_norm_backward_input");
  const float* dy32 = v.in(dy, rows * cols);
  const float* x32 = v.in(x, rows * cols);
  const float* w32 = v.in(weight, cols);
  float* dx32 = v.out(dx, rows * cols);
  parallel_for(rows, min_rows(cols), [&](std::int64_t r, std::int64_t e) {
    rms_norm_backward_input_kernel_any(dy32 + r * cols, x32 + r * cols, w32, rstd + r, dx32 + r * cols, e - r, cols);
  });
  v.finish();
}

void CpuBackend::rms_norm_backward_weight(In dy, In x, const float* rstd, float* dweight, std::int64_t rows,
                                          std::int64_t cols) {
  Float32Views v(*this, "rms_norm_backward_weight");
  const float* dy32 = v.in(dy, rows * cols);
  const float* x32 = v.in(x, rows * cols);
  parallel_for(
      cols, min_cols(rows),
      [&](std::int64_t c, std::int64_t e) {
        rms_norm_backward_weight_kernel_any(dy32 + c, x32 + c, cols, rstd, dweight + c, rows, e - c);
      },
      kShareAlign);
}

}  // namespace libpipe::cpu
