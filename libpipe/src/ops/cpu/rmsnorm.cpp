// Root-mean-square norm on the CPU: forward, backward to the input, backward to the weight;
// float32 loops, typed arrays through Float32Views. Plain loops: the row sums
// run in index order, so that a row's result does not depend on its batch.
#include <cmath>
#include <cstdint>

#include "cpu_backend.hpp"
#include "ops/float32_views.hpp"

namespace libpipe::cpu {

namespace {

// y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps)
void rms_norm_kernel(const float* x, const float* weight, float* y, float* rstd, std::int64_t rows,
                     std::int64_t cols, float eps) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float ss = 0.0f;
    for (std::int64_t c = 0; c < cols; ++c) ss += xr[c] * xr[c];
    const float rs = 1.0f / std::sqrt(ss * inv_cols + eps);
    for (std::int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * rs * weight[c];
    rstd[r] = rs;
  }
}

// dx = rstd (g - x rstd^2 mean(g x)), g = dy * w
void rms_norm_backward_input_kernel(const float* dy, const float* x, const float* weight, const float* rstd,
                                    float* dx, std::int64_t rows, std::int64_t cols) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * cols;
    const float* xr = x + r * cols;
    float* dxr = dx + r * cols;
    const float rs = rstd[r];
    float sgx = 0.0f;
    for (std::int64_t c = 0; c < cols; ++c) sgx += dyr[c] * weight[c] * xr[c];
    const float k = sgx * inv_cols * rs * rs;
    for (std::int64_t c = 0; c < cols; ++c) dxr[c] = rs * (dyr[c] * weight[c] - xr[c] * k);
  }
}

void rms_norm_backward_weight_kernel(const float* dy, const float* x, const float* rstd, float* dweight,
                                     std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * cols;
    const float* xr = x + r * cols;
    const float rs = rstd[r];
    for (std::int64_t c = 0; c < cols; ++c) dweight[c] += dyr[c] * (xr[c] * rs);
  }
}

}  // namespace

void CpuBackend::rms_norm_forward(In x, In weight, Out y, float* rstd, std::int64_t rows, std::int64_t cols,
                                  float eps) {
  Float32Views v(*this, "rms_norm_forward");
  rms_norm_kernel(v.in(x, rows * cols), v.in(weight, cols), v.out(y, rows * cols), rstd, rows, cols, eps);
  v.finish();
}

void CpuBackend::rms_norm_backward_input(In dy, In x, In weight, const float* rstd, Out dx, std::int64_t rows,
                                         std::int64_t cols) {
  Float32Views v(*this, "rms_norm_backward_input");
  rms_norm_backward_input_kernel(v.in(dy, rows * cols), v.in(x, rows * cols), v.in(weight, cols), rstd,
                                 v.out(dx, rows * cols), rows, cols);
  v.finish();
}

void CpuBackend::rms_norm_backward_weight(In dy, In x, const float* rstd, float* dweight, std::int64_t rows,
                                          std::int64_t cols) {
  Float32Views v(*this, "rms_norm_backward_weight");
  rms_norm_backward_weight_kernel(v.in(dy, rows * cols), v.in(x, rows * cols), rstd, dweight, rows, cols);
}

}  // namespace libpipe::cpu
