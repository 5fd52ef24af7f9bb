// Losses on the CPU: softmax cross-entropy (labels checked first) and mean
// squared error, per sample.
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

// ---- losses

namespace {

void check_labels(const char* op, const std::int32_t* labels, std::int64_t rows, std::int64_t vocab) {
  for (std::int64_t r = 0; r < rows; ++r)
    if (labels[r] < 0 || labels[r] >= vocab)
      throw Error(std::string(op) + ": label " + std::to_string(labels[r]) + " at row " + std::to_string(r) +
                  " is outside [0, " + std::to_string(vocab) + ")");
}

}  // namespace

namespace {

// Per row: one pass for the max, one for sum exp(z - max); loss = log(sum) - (z[label] - max).
template <int W>
PIPE_INLINE void cross_entropy_kernel(const float* logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                                      std::int64_t vocab, std::int64_t rows_per_sample) {
  for (std::int64_t b = 0; b < rows / rows_per_sample; ++b) {
    double total = 0.0;
    for (std::int64_t r = b * rows_per_sample; r < (b + 1) * rows_per_sample; ++r) {
      const float* z = logits + r * vocab;
      const float m = row_max<W>(z, vocab);
      const float s = sum_exp_shift<W>(z, m, vocab);
      total += std::log(static_cast<double>(s)) - static_cast<double>(z[labels[r]] - m);
    }
    loss[b] = static_cast<float>(total / static_cast<double>(rows_per_sample));
  }
}
PIPE_ISA_DISPATCH(cross_entropy_kernel,
                  (const float* logits, const std::int32_t* labels, float* loss, std::int64_t rows, std::int64_t vocab,
                   std::int64_t rows_per_sample),
                  (logits, labels, loss, rows, vocab, rows_per_sample))

template <int W>
PIPE_INLINE void cross_entropy_backward_kernel(const float* logits, const std::int32_t* labels, const float* dloss,
                                               float* dlogits, std::int64_t rows, std::int64_t vocab,
                                               std::int64_t rows_per_sample) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* z = logits + r * vocab;
    float* dz = dlogits + r * vocab;
    const float g = dloss[r / rows_per_sample] / static_cast<float>(rows_per_sample);
    const float m = row_max<W>(z, vocab);
    const float s = exp_shift_sum<W>(z, m, dz, vocab);
    const float f = g / s;
    for (std::int64_t j = 0; j < vocab; ++j) dz[j] *= f;
    dz[labels[r]] -= g;
  }
}
PIPE_ISA_DISPATCH(cross_entropy_backward_kernel,
                  (const float* logits, const std::int32_t* labels, const float* dloss, float* dlogits,
                   std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample),
                  (logits, labels, dloss, dlogits, rows, vocab, rows_per_sample))

template <int W>
PIPE_INLINE void mse_kernel(const float* x, const float* target, float* loss, std::int64_t batch,
                            std::int64_t per_sample) {
  for (std::int64_t b = 0; b < batch; ++b) {
    const float* xb = x + b * per_sample;
    const float* tb = target + b * per_sample;
    double acc[4] = {};
    std::int64_t i = 0;
    for (; i + 4 <= per_sample; i += 4)
      for (int j = 0; j < 4; ++j) {
        const double d = static_cast<double>(xb[i + j]) - tb[i + j];
        acc[j] += d * d;
      }
    double s = acc[0] + acc[1] + acc[2] + acc[3];
    for (; i < per_sample; ++i) {
      const double d = static_cast<double>(xb[i]) - tb[i];
      s += d * d;
    }
    loss[b] = per_sample > 0 ? static_cast<float>(s / static_cast<double>(per_sample)) : 0.0f;
  }
}
PIPE_ISA_DISPATCH(mse_kernel,
                  (const float* x, const float* target, float* loss, std::int64_t batch, std::int64_t per_sample),
                  (x, target, loss, batch, per_sample))

template <int W>
PIPE_INLINE void mse_backward_kernel(const float* x, const float* target, const float* dloss, float* dx,
                                     std::int64_t batch, std::int64_t per_sample) {
  for (std::int64_t b = 0; b < batch; ++b) {
    const float f = 2.0f * dloss[b] / static_cast<float>(per_sample);
    const std::int64_t o = b * per_sample;
    for (std::int64_t i = 0; i < per_sample; ++i) dx[o + i] = (x[o + i] - target[o + i]) * f;
  }
}
PIPE_ISA_DISPATCH(mse_backward_kernel,
                  (const float* x, const float* target, const float* dloss, float* dx, std::int64_t batch,
                   std::int64_t per_sample),
                  (x, target, dloss, dx, batch, per_sample))

}  // namespace

void CpuBackend::cross_entropy_forward(In logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                                       std::int64_t vocab, std::int64_t rows_per_sample) {
  check_labels("cross_entropy", labels, rows, vocab);
  Float32Views v(*this, "cross_entropy_forward");
  if (rows_per_sample <= 0) return;
  const float* z = v.in(logits, rows * vocab);
  const std::int64_t rps = rows_per_sample, per_sample = rps * vocab;
  // Split by samples (cpu_threads.hpp): each sample's loss sums its rows in order on any thread count.
  parallel_for(rows / rps, min_rows(per_sample), [&](std::int64_t b, std::int64_t e) {
    cross_entropy_kernel_any(z + b * per_sample, labels + b * rps, loss + b, (e - b) * rps, vocab, rps);
  });
}

// dlogits = (softmax - onehot(label)) * dloss[b] / rows_per_sample
void CpuBackend::cross_entropy_backward(In logits, const std::int32_t* labels, const float* dloss, Out dlogits,
                                        std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) {
  check_labels("cross_entropy_backward", labels, rows, vocab);
  Float32Views v(*this, "cross_entropy_backward");
  if (rows_per_sample > 0) {
    const float* z = v.in(logits, rows * vocab);
    float* dz = v.out(dlogits, rows * vocab);
    const std::int64_t rps = rows_per_sample, per_sample = rps * vocab;
    parallel_for((rows + rps - 1) / rps, min_rows(per_sample), [&](std::int64_t b, std::int64_t e) {
      const std::int64_t r0 = b * rps, r1 = std::min(rows, e * rps);
      cross_entropy_backward_kernel_any(z + r0 * vocab, labels + r0, dloss + b, dz + r0 * vocab, r1 - r0, vocab, rps);
    });
  }
  v.finish();
}

void CpuBackend::mse_forward(const float* x, const float* target, float* loss, std::int64_t batch,
                             std::int64_t per_sample) {
  mse_kernel_any(x, target, loss, batch, per_sample);
}

void CpuBackend::mse_backward(const float* x, const float* target, const float* dloss, float* dx, std::int64_t batch,
                              std::int64_t per_sample) {
  mse_backward_kernel_any(x, target, dloss, dx, batch, per_sample);
}

}  // namespace libpipe::cpu
