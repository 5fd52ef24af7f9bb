// The swiglu gate on the CPU: y = silu(gate) * up over rows of [gate, up].
#include <cmath>
#include <cstdint>

#include "cpu_backend.hpp"
#include "ops/float32_views.hpp"

namespace libpipe::cpu {

namespace {

inline float sigmoid(float a) { return 1.0f / (1.0f + std::exp(-a)); }

void swiglu_kernel(const float* h, float* y, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* gate = h + r * 2 * cols;
    const float* up = gate + cols;
    float* yr = y + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) yr[c] = gate[c] * sigmoid(gate[c]) * up[c];
  }
}

// d gate = dy up sigmoid(a) (1 + a (1 - sigmoid(a))), d up = dy silu(a)
void swiglu_backward_kernel(const float* h, const float* dy, float* dh, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* gate = h + r * 2 * cols;
    const float* up = gate + cols;
    const float* g = dy + r * cols;
    float* dgate = dh + r * 2 * cols;
    float* dup = dgate + cols;
    for (std::int64_t c = 0; c < cols; ++c) {
      const float a = gate[c], sig = sigmoid(a);
      dgate[c] = g[c] * up[c] * (sig * (1.0f + a * (1.0f - sig)));
      dup[c] = g[c] * (a * sig);
    }
  }
}

}  // namespace

void CpuBackend::swiglu_forward(In h, Out y, std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "swiglu_forward");
  swiglu_kernel(v.in(h, rows * 2 * cols), v.out(y, rows * cols), rows, cols);
  v.finish();
}

void CpuBackend::swiglu_backward(In h, In dy, Out dh, std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "swiglu_backward");
  swiglu_backward_kernel(v.in(h, rows * 2 * cols), v.in(dy, rows * cols), v.out(dh, rows * 2 * cols), rows, cols);
  v.finish();
}

}  // namespace libpipe::cpu
