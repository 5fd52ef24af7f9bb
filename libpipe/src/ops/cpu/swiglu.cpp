// The swiglu gate on the CPU: y = silu(gate) * up over rows of [gate, up].
#include <cstdint>

#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "cpu_threads.hpp"
#include "ops/float32_views.hpp"

namespace libpipe::cpu {

namespace {

// Compiled per instruction set (cpu_math.hpp), with cpu_math's sigmoid (fast_exp): with libm's expf the loops
// stayed scalar, and the gate took 15% of llama-tiny's training step on one core.
template <int W>
PIPE_INLINE void swiglu_kernel(const float* h, float* y, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* gate = h + r * 2 * cols;
    const float* up = gate + cols;
    float* yr = y + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) yr[c] = gate[c] * sigmoid(gate[c]) * up[c];
  }
}
PIPE_ISA_DISPATCH(swiglu_kernel, (const float* h, float* y, std::int64_t rows, std::int64_t cols), (h, y, rows, cols))

// d gate = dy up sigmoid(a) (1 + a (1 - sigmoid(a))), d up = dy silu(a)
template <int W>
PIPE_INLINE void swiglu_backward_kernel(const float* h, const float* dy, float* dh, std::int64_t rows,
                                        std::int64_t cols) {
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
PIPE_ISA_DISPATCH(swiglu_backward_kernel,
                  (const float* h, const float* dy, float* dh, std::int64_t rows, std::int64_t cols),
                  (h, dy, dh, rows, cols))

}  // namespace

void CpuBackend::swiglu_forward(In h, Out y, std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "swiglu_forward");
  const float* h32 = v.in(h, rows * 2 * cols);
  float* y32 = v.out(y, rows * cols);
  // Whole rows per thread (cpu_threads.hpp).
  parallel_for(rows, min_rows(2 * cols), [&](std::int64_t r, std::int64_t e) {
    swiglu_kernel_any(h32 + r * 2 * cols, y32 + r * cols, e - r, cols);
  });
  v.finish();
}

void CpuBackend::swiglu_backward(In h, In dy, Out dh, std::int64_t rows, std::int64_t cols) {
  Float32Views v(*this, "swiglu_backward");
  const float* h32 = v.in(h, rows * 2 * cols);
  const float* dy32 = v.in(dy, rows * cols);
  float* dh32 = v.out(dh, rows * 2 * cols);
  parallel_for(rows, min_rows(2 * cols), [&](std::int64_t r, std::int64_t e) {
    swiglu_backward_kernel_any(h32 + r * 2 * cols, dy32 + r * cols, dh32 + r * 2 * cols, e - r, cols);
  });
  v.finish();
}

}  // namespace libpipe::cpu
