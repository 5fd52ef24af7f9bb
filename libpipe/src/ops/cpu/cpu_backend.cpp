// The CPU backend's ops other than attention: GEMMs on oneDNN (cpu_gemm.cpp), and one or two
// passes over memory for everything else. Outputs are written, never read
// first (the op layer hands in Tensor::empty storage), except where the
// interface says "+=".
#include "cpu_backend.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "pipe/bfloat16.hpp"
#include "cpu_gemm.hpp"
#include "cpu_math.hpp"
#include "ops/gemm_check.hpp"
#include "pipe/error.hpp"

namespace libpipe::cpu {

// ---- instruction sets

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512:
      return "avx512";
    case Isa::avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

Isa cpu_isa() {
  // A throw leaves the static unset, so every later use reports the same error.
  static const Isa isa = [] {
    Isa best = Isa::baseline;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
      best = Isa::avx512;
    else if (__builtin_cpu_supports("x86-64-v3"))
      best = Isa::avx2;
#endif
    const char* env = std::getenv("PIPE_CPU_ISA");
    if (env == nullptr || *env == '\0') return best;
    const std::string want(env);
    Isa asked = Isa::baseline;
    if (want == "avx512")
      asked = Isa::avx512;
    else if (want == "avx2")
      asked = Isa::avx2;
    else if (want != "baseline")
      throw Error("PIPE_CPU_ISA=" + want + " is not one of avx512, avx2, baseline");
    if (static_cast<int>(asked) > static_cast<int>(best))
      throw Error("PIPE_CPU_ISA=" + want + " but this CPU (or build) supports at most " + isa_name(best));
    return asked;
  }();
  return isa;
}

// ---- memory

void CpuBackend::fill(float* y, float value, std::int64_t n) { std::fill(y, y + n, value); }

void CpuBackend::copy(float* dst, const float* src, std::int64_t n) {
  if (n > 0 && dst != src) std::memmove(dst, src, static_cast<std::size_t>(n) * sizeof(float));
}

void CpuBackend::copy_to_host(void* host, const void* src, std::size_t bytes) {
  if (bytes > 0 && host != src) std::memmove(host, src, bytes);
}

void CpuBackend::copy_from_host(void* dst, const void* host, std::size_t bytes) {
  if (bytes > 0 && dst != host) std::memmove(dst, host, bytes);
}

// ---- bfloat16

void CpuBackend::to_bf16(const float* x, std::uint16_t* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]);
}

void CpuBackend::from_bf16(const std::uint16_t* x, float* y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i]);
}

// ---- GEMM

void CpuBackend::gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                      const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                      std::int64_t ldc) {
  detail::check_gemm("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  GemmCall g;
  g.trans_a = trans_a, g.trans_b = trans_b, g.m = m, g.n = n, g.k = k, g.alpha = alpha, g.beta = beta;
  g.a = a, g.lda = lda, g.b = b, g.ldb = ldb, g.c = c, g.ldc = ldc;
  cpu::gemm(g);
}

void CpuBackend::gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                                      float alpha, const float* a, std::int64_t lda, std::int64_t stride_a,
                                      const float* b, std::int64_t ldb, std::int64_t stride_b, float beta, float* c,
                                      std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  detail::check_gemm("gemm_strided_batched", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (batch < 0) throw Error("gemm_strided_batched: negative batch " + std::to_string(batch));
  GemmCall g;
  g.trans_a = trans_a, g.trans_b = trans_b, g.m = m, g.n = n, g.k = k, g.alpha = alpha, g.beta = beta;
  g.a = a, g.lda = lda, g.stride_a = stride_a, g.b = b, g.ldb = ldb, g.stride_b = stride_b;
  g.c = c, g.ldc = ldc, g.stride_c = stride_c, g.batch = batch;
  cpu::gemm(g);
}

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

template <int W>
PIPE_INLINE void bias_grad_kernel(const float* dy, float* db, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = dy + r * cols;
    for (std::int64_t c = 0; c < cols; ++c) db[c] += row[c];
  }
}
PIPE_ISA_DISPATCH(bias_grad_kernel, (const float* dy, float* db, std::int64_t rows, std::int64_t cols),
                  (dy, db, rows, cols))

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

void CpuBackend::add(const float* a, const float* b, float* out, std::int64_t n) { add_kernel_any(a, b, out, n); }
void CpuBackend::accumulate(float* y, const float* x, std::int64_t n) { accumulate_kernel_any(y, x, n); }
void CpuBackend::scale(float* y, float factor, std::int64_t n) { scale_kernel_any(y, factor, n); }

void CpuBackend::add_bias(float* y, const float* bias, std::int64_t rows, std::int64_t cols) {
  add_bias_kernel_any(y, bias, rows, cols);
}

void CpuBackend::bias_grad(const float* dy, float* db, std::int64_t rows, std::int64_t cols) {
  bias_grad_kernel_any(dy, db, rows, cols);
}

void CpuBackend::relu_forward(const float* x, float* y, std::int64_t n) { relu_kernel_any(x, y, n); }

void CpuBackend::relu_backward(const float* x, const float* dy, float* dx, std::int64_t n) {
  relu_backward_kernel_any(x, dy, dx, n);
}

void CpuBackend::gelu_forward(const float* x, float* y, std::int64_t n) { gelu_kernel_any(x, y, n); }

void CpuBackend::gelu_backward(const float* x, const float* dy, float* dx, std::int64_t n) {
  gelu_backward_kernel_any(x, dy, dx, n);
}

void CpuBackend::bias_gelu_forward(float* x, const float* bias, float* y, std::int64_t rows, std::int64_t cols) {
  bias_gelu_kernel_any(x, bias, y, rows, cols);
}

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

template <int W>
PIPE_INLINE void layernorm_backward_weight_kernel(const float* dy, const float* x, const float* mean, const float* rstd,
                                                  float* dweight, float* dbias, std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * cols;
    const float* xr = x + r * cols;
    const float m = mean[r];
    const float rs = rstd[r];
    for (std::int64_t c = 0; c < cols; ++c) {
      dweight[c] += dyr[c] * ((xr[c] - m) * rs);
      dbias[c] += dyr[c];
    }
  }
}
PIPE_ISA_DISPATCH(layernorm_backward_weight_kernel,
                  (const float* dy, const float* x, const float* mean, const float* rstd, float* dweight, float* dbias,
                   std::int64_t rows, std::int64_t cols),
                  (dy, x, mean, rstd, dweight, dbias, rows, cols))

}  // namespace

void CpuBackend::layernorm_forward(const float* x, const float* weight, const float* bias, float* y, float* mean,
                                   float* rstd, std::int64_t rows, std::int64_t cols, float eps) {
  layernorm_kernel_any(x, weight, bias, y, mean, rstd, rows, cols, eps);
}

void CpuBackend::layernorm_backward_input(const float* dy, const float* x, const float* weight, const float* mean,
                                          const float* rstd, float* dx, std::int64_t rows, std::int64_t cols) {
  layernorm_backward_input_kernel_any(dy, x, weight, mean, rstd, dx, rows, cols);
}

void CpuBackend::layernorm_backward_weight(const float* dy, const float* x, const float* mean, const float* rstd,
                                           float* dweight, float* dbias, std::int64_t rows, std::int64_t cols) {
  layernorm_backward_weight_kernel_any(dy, x, mean, rstd, dweight, dbias, rows, cols);
}

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

void CpuBackend::cross_entropy_forward(const float* logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                                       std::int64_t vocab, std::int64_t rows_per_sample) {
  check_labels("cross_entropy", labels, rows, vocab);
  if (rows_per_sample > 0) cross_entropy_kernel_any(logits, labels, loss, rows, vocab, rows_per_sample);
}

// dlogits = (softmax - onehot(label)) * dloss[b] / rows_per_sample
void CpuBackend::cross_entropy_backward(const float* logits, const std::int32_t* labels, const float* dloss,
                                        float* dlogits, std::int64_t rows, std::int64_t vocab,
                                        std::int64_t rows_per_sample) {
  check_labels("cross_entropy_backward", labels, rows, vocab);
  if (rows_per_sample > 0)
    cross_entropy_backward_kernel_any(logits, labels, dloss, dlogits, rows, vocab, rows_per_sample);
}

void CpuBackend::mse_forward(const float* x, const float* target, float* loss, std::int64_t batch,
                             std::int64_t per_sample) {
  mse_kernel_any(x, target, loss, batch, per_sample);
}

void CpuBackend::mse_backward(const float* x, const float* target, const float* dloss, float* dx, std::int64_t batch,
                              std::int64_t per_sample) {
  mse_backward_kernel_any(x, target, dloss, dx, batch, per_sample);
}

// ---- embedding

namespace {

template <int W>
PIPE_INLINE void embedding_kernel(const std::int32_t* tokens, const float* wte, const float* wpe, float* out,
                                  std::int64_t batch, std::int64_t seq, std::int64_t dim) {
  for (std::int64_t r = 0; r < batch * seq; ++r) {
    const float* e = wte + static_cast<std::int64_t>(tokens[r]) * dim;
    const float* p = wpe + (r % seq) * dim;
    float* o = out + r * dim;
    for (std::int64_t c = 0; c < dim; ++c) o[c] = e[c] + p[c];
  }
}
PIPE_ISA_DISPATCH(embedding_kernel,
                  (const std::int32_t* tokens, const float* wte, const float* wpe, float* out, std::int64_t batch,
                   std::int64_t seq, std::int64_t dim),
                  (tokens, wte, wpe, out, batch, seq, dim))

template <int W>
PIPE_INLINE void embedding_backward_kernel(const std::int32_t* tokens, const float* dout, float* dwte, float* dwpe,
                                           std::int64_t batch, std::int64_t seq, std::int64_t dim) {
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < seq; ++t) {
      const float* g = dout + (b * seq + t) * dim;
      float* e = dwte + static_cast<std::int64_t>(tokens[b * seq + t]) * dim;
      float* p = dwpe + t * dim;
      for (std::int64_t c = 0; c < dim; ++c) {
        e[c] += g[c];
        p[c] += g[c];
      }
    }
}
PIPE_ISA_DISPATCH(embedding_backward_kernel,
                  (const std::int32_t* tokens, const float* dout, float* dwte, float* dwpe, std::int64_t batch,
                   std::int64_t seq, std::int64_t dim),
                  (tokens, dout, dwte, dwpe, batch, seq, dim))

}  // namespace

void CpuBackend::embedding_forward(const std::int32_t* tokens, const float* wte, const float* wpe, float* out,
                                   std::int64_t batch, std::int64_t seq, std::int64_t dim, std::int64_t vocab) {
  const std::int64_t rows = batch * seq;
  for (std::int64_t r = 0; r < rows; ++r)
    if (tokens[r] < 0 || tokens[r] >= vocab)
      throw Error("embedding: token " + std::to_string(tokens[r]) + " at row " + std::to_string(r) + " (sample " +
                  std::to_string(r / seq) + ", position " + std::to_string(r % seq) + ") is outside [0, " +
                  std::to_string(vocab) + ")");
  embedding_kernel_any(tokens, wte, wpe, out, batch, seq, dim);
}

// dwte[token] += dout (scatter-add), dwpe[t] += sum_b dout[b, t]
void CpuBackend::embedding_backward(const std::int32_t* tokens, const float* dout, float* dwte, float* dwpe,
                                    std::int64_t batch, std::int64_t seq, std::int64_t dim) {
  embedding_backward_kernel_any(tokens, dout, dwte, dwpe, batch, seq, dim);
}

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
  sgd_kernel_any(param, grad, momentum_buffer, n, lr, momentum, weight_decay);
}

void CpuBackend::adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                       float beta2, float eps, float weight_decay, std::int64_t step) {
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  adamw_kernel_any(param, grad, m, v, n, beta1, beta2, eps, 1.0f - lr * weight_decay, static_cast<float>(lr / bc1),
                   static_cast<float>(1.0 / std::sqrt(bc2)));
}

double CpuBackend::sum_squares(const float* x, std::int64_t n) {
  double s = 0.0;
  sum_squares_kernel_any(x, n, &s);
  return s;
}

}  // namespace libpipe::cpu
