// Rotary position embedding with grouped key/value heads on the CPU (the
// semantics: pipe/ops.hpp's rotary_gqa). The angles are computed as Hugging
// Face's Llama does, in float32: inv_freq_i = 1 / theta^(2i/D), angle =
// t * inv_freq_i; cos and sin of that float are taken in double and rounded.
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "cpu_threads.hpp"
#include "ops/float32_views.hpp"

namespace libpipe::cpu {

namespace {

// cos and sin [seq, D/2] of every position's angles.
struct RotaryTable {
  std::int64_t seq, head_dim;
  float theta;
  std::vector<float> cos, sin;
  RotaryTable(std::int64_t seq_, std::int64_t head_dim_, float theta_) : seq(seq_), head_dim(head_dim_), theta(theta_) {
    const std::int64_t half = head_dim / 2;
    cos.resize(static_cast<std::size_t>(seq * half));
    sin.resize(cos.size());
    for (std::int64_t i = 0; i < half; ++i) {
      const auto inv_freq = static_cast<float>(
          1.0 / std::pow(static_cast<double>(theta), static_cast<double>(2 * i) / static_cast<double>(head_dim)));
      for (std::int64_t t = 0; t < seq; ++t) {
        const float angle = static_cast<float>(t) * inv_freq;
        cos[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sin[static_cast<std::size_t>(t * half + i)] = static_cast<float>(std::sin(static_cast<double>(angle)));
      }
    }
  }
  // The D/2 cosines and sines of row r of the batch x seq rows (its position r mod seq).
  const float* cos_of_row(std::int64_t r) const { return cos.data() + (r % seq) * (head_dim / 2); }
  const float* sin_of_row(std::int64_t r) const { return sin.data() + (r % seq) * (head_dim / 2); }
};

// The table of the calling thread's last (seq, head_dim, theta): every call of a model asks for the same one, and
// its cos and sin in double cost as much as the rotations (64 x 16 angles, llama-tiny).
const RotaryTable& table_for(std::int64_t seq, std::int64_t head_dim, float theta) {
  thread_local std::unique_ptr<RotaryTable> table;
  if (!table || table->seq != seq || table->head_dim != head_dim || table->theta != theta)
    table = std::make_unique<RotaryTable>(seq, head_dim, theta);
  return *table;
}

// One head of D channels rotated by (c, s) pairs: y_lo = x_lo c - x_hi s, y_hi = x_hi c + x_lo s (sign = 1), or
// by the inverse rotation (sign = -1).
PIPE_INLINE void rotate(const float* x, float* y, const float* c, const float* s, std::int64_t half, float sign) {
  for (std::int64_t i = 0; i < half; ++i) {
    const float lo = x[i], hi = x[i + half];
    y[i] = lo * c[i] - sign * (hi * s[i]);
    y[i + half] = hi * c[i] + sign * (lo * s[i]);
  }
}

// Rows [r0, r1) of the batch x seq rows, each on its own: compiled per instruction set (cpu_math.hpp) and split
// over the threads by rows.
template <int W>
PIPE_INLINE void rotary_gqa_forward_kernel(const float* x, float* qkv, const RotaryTable* table, std::int64_t r0,
                                           std::int64_t r1, std::int64_t heads, std::int64_t kv_heads) {
  const std::int64_t D = table->head_dim, half = D / 2, group = heads / kv_heads;
  const std::int64_t in_row = (heads + 2 * kv_heads) * D, out_row = 3 * heads * D;
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * in_row;
    float* yr = qkv + r * out_row;
    const float *c = table->cos_of_row(r), *s = table->sin_of_row(r);
    for (std::int64_t h = 0; h < heads; ++h) {
      const std::int64_t g = h / group;
      rotate(xr + h * D, yr + h * D, c, s, half, 1.0f);                                     // q
      rotate(xr + (heads + g) * D, yr + (heads + h) * D, c, s, half, 1.0f);                 // k
      const float* v = xr + (heads + kv_heads + g) * D;                                     // v
      for (std::int64_t i = 0; i < D; ++i) yr[(2 * heads + h) * D + i] = v[i];
    }
  }
}
PIPE_ISA_DISPATCH(rotary_gqa_forward_kernel,
                  (const float* x, float* qkv, const RotaryTable* table, std::int64_t r0, std::int64_t r1,
                   std::int64_t heads, std::int64_t kv_heads),
                  (x, qkv, table, r0, r1, heads, kv_heads))

// `sum` holds D floats.
template <int W>
PIPE_INLINE void rotary_gqa_backward_kernel(const float* dqkv, float* dx, const RotaryTable* table, std::int64_t r0,
                                            std::int64_t r1, std::int64_t heads, std::int64_t kv_heads, float* sum) {
  const std::int64_t D = table->head_dim, half = D / 2, group = heads / kv_heads;
  const std::int64_t in_row = 3 * heads * D, out_row = (heads + 2 * kv_heads) * D;
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* gr = dqkv + r * in_row;
    float* dr = dx + r * out_row;
    const float *c = table->cos_of_row(r), *s = table->sin_of_row(r);
    for (std::int64_t h = 0; h < heads; ++h) rotate(gr + h * D, dr + h * D, c, s, half, -1.0f);  // dq
    for (std::int64_t g = 0; g < kv_heads; ++g) {
      // dk: the group's heads summed in order, then rotated back (the rotation is linear).
      for (std::int64_t i = 0; i < D; ++i) {
        float acc = 0.0f;
        for (std::int64_t h = g * group; h < (g + 1) * group; ++h) acc += gr[(heads + h) * D + i];
        sum[i] = acc;
      }
      rotate(sum, dr + (heads + g) * D, c, s, half, -1.0f);
      // dv: the group's heads summed in order.
      for (std::int64_t i = 0; i < D; ++i) {
        float acc = 0.0f;
        for (std::int64_t h = g * group; h < (g + 1) * group; ++h) acc += gr[(2 * heads + h) * D + i];
        dr[(heads + kv_heads + g) * D + i] = acc;
      }
    }
  }
}
PIPE_ISA_DISPATCH(rotary_gqa_backward_kernel,
                  (const float* dqkv, float* dx, const RotaryTable* table, std::int64_t r0, std::int64_t r1,
                   std::int64_t heads, std::int64_t kv_heads, float* sum),
                  (dqkv, dx, table, r0, r1, heads, kv_heads, sum))

}  // namespace

void CpuBackend::rotary_gqa_forward(In x, Out qkv, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                    std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const std::int64_t rows = batch * seq;
  Float32Views v(*this, "rotary_gqa_forward");
  const float* x32 = v.in(x, rows * (heads + 2 * kv_heads) * head_dim);
  float* qkv32 = v.out(qkv, rows * 3 * heads * head_dim);
  const RotaryTable* table = &table_for(seq, head_dim, theta);
  parallel_for(rows, min_rows(3 * heads * head_dim), [&](std::int64_t r, std::int64_t e) {
    rotary_gqa_forward_kernel_any(x32, qkv32, table, r, e, heads, kv_heads);
  });
  v.finish();
}

void CpuBackend::rotary_gqa_backward(In dqkv, Out dx, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                     std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const std::int64_t rows = batch * seq;
  Float32Views v(*this, "rotary_gqa_backward");
  const float* dqkv32 = v.in(dqkv, rows * 3 * heads * head_dim);
  float* dx32 = v.out(dx, rows * (heads + 2 * kv_heads) * head_dim);
  const RotaryTable* table = &table_for(seq, head_dim, theta);
  parallel_for(rows, min_rows(3 * heads * head_dim), [&](std::int64_t r, std::int64_t e) {
    std::vector<float> sum(static_cast<std::size_t>(head_dim));
    rotary_gqa_backward_kernel_any(dqkv32, dx32, table, r, e, heads, kv_heads, sum.data());
  });
  v.finish();
}

}  // namespace libpipe::cpu
