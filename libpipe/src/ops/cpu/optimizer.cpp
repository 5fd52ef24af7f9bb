// The optimizers' updates on the CPU (SGD with momentum, AdamW) and the sum
// of squares for the gradient norm.
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

// ---- optimizers

namespace {

// PyTorch's SGD (dampening 0, not Nesterov); a zero buffer makes the first step plain SGD, as there.
template <int W>
PIPE_INLINE void sgd_kernel(float* param, const float* grad, float* buffer, std::int64_t n, float lr, float momentum,
                            float weight_decay) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = grad[i] + weight_decay * param[i];
    const float buf = momentum * buffer[i] + g;
    buffer[i] = buf;
    param[i] -= lr * buf;
  }
}
PIPE_ISA_DISPATCH(sgd_kernel,
                  (float* param, const float* grad, float* buffer, std::int64_t n, float lr, float momentum,
                   float weight_decay),
                  (param, grad, buffer, n, lr, momentum, weight_decay))

// PyTorch's AdamW in one pass: decoupled decay, then the bias-corrected step lr * mhat / (sqrt(vhat) + eps),
// with the corrections folded into two scalars.
template <int W>
PIPE_INLINE void adamw_kernel(float* param, const float* grad, float* m, float* v, std::int64_t n, float beta1,
                              float beta2, float eps, float decay, float step_size, float inv_sqrt_bc2) {
  const float one_minus_b1 = 1.0f - beta1;
  const float one_minus_b2 = 1.0f - beta2;
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float mi = beta1 * m[i] + one_minus_b1 * g;
    const float vi = beta2 * v[i] + one_minus_b2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}
PIPE_ISA_DISPATCH(adamw_kernel,
                  (float* param, const float* grad, float* m, float* v, std::int64_t n, float beta1, float beta2,
                   float eps, float decay, float step_size, float inv_sqrt_bc2),
                  (param, grad, m, v, n, beta1, beta2, eps, decay, step_size, inv_sqrt_bc2))

template <int W>
PIPE_INLINE void sum_squares_kernel(const float* x, std::int64_t n, double* out) {
  double acc[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      const double d = x[i + j];
      acc[j] += d * d;
    }
  double s = 0.0;
  for (; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  for (int j = 0; j < 8; ++j) s += acc[j];
  *out = s;
}
PIPE_ISA_DISPATCH(sum_squares_kernel, (const float* x, std::int64_t n, double* out), (x, n, out))

}  // namespace

void CpuBackend::sgd_momentum(float* param, const float* grad, float* momentum_buffer, std::int64_t n, float lr,
                              float momentum, float weight_decay) {
  parallel_for(
      n, kMinShare,
      [&](std::int64_t i, std::int64_t e) {
        sgd_kernel_any(param + i, grad + i, momentum_buffer + i, e - i, lr, momentum, weight_decay);
      },
      kShareAlign);
}

void CpuBackend::adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                       float beta2, float eps, float weight_decay, std::int64_t step) {
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float decay = 1.0f - lr * weight_decay, step_size = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  parallel_for(
      n, kMinShare,
      [&](std::int64_t i, std::int64_t e) {
        adamw_kernel_any(param + i, grad + i, m + i, v + i, e - i, beta1, beta2, eps, decay, step_size, inv_sqrt_bc2);
      },
      kShareAlign);
}

double CpuBackend::sum_squares(const float* x, std::int64_t n) {
  double s = 0.0;
  sum_squares_kernel_any(x, n, &s);
  return s;
}

}  // namespace libpipe::cpu
