// Rotary position embedding with grouped key/value heads on the CPU (the
// semantics: pipe/ops.hpp's rotary_gqa). The angles are computed as Hugging
// Face's Llama does, in float32: inv_freq_i = 1 / theta^(2i/D), angle =
// t * inv_freq_i; cos and sin of that float are taken in double and rounded.
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu_backend.hpp"
#include "ops/float32_views.hpp"

namespace libpipe::cpu {

namespace {

// cos and sin [seq, D/2] of every position's angles.
struct RotaryTable {
  std::vector<float> cos, sin;
  RotaryTable(std::int64_t seq, std::int64_t head_dim, float theta) {
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
};

// One head of D channels rotated by (c, s) pairs: y_lo = x_lo c - x_hi s, y_hi = x_hi c + x_lo s (sign = 1), or
// by the inverse rotation (sign = -1).
inline void rotate(const float* x, float* y, const float* c, const float* s, std::int64_t half, float sign) {
  for (std::int64_t i = 0; i < half; ++i) {
    const float lo = x[i], hi = x[i + half];
    y[i] = lo * c[i] - sign * (hi * s[i]);
    y[i + half] = hi * c[i] + sign * (lo * s[i]);
  }
}

void rotary_gqa_forward_kernel(const float* x, float* qkv, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                               std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const RotaryTable table(seq, head_dim, theta);
  const std::int64_t D = head_dim, half = D / 2, group = heads / kv_heads;
  const std::int64_t in_row = (heads + 2 * kv_heads) * D, out_row = 3 * heads * D;
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < seq; ++t) {
      const float* xr = x + (b * seq + t) * in_row;
      float* yr = qkv + (b * seq + t) * out_row;
      const float* c = table.cos.data() + t * half;
      const float* s = table.sin.data() + t * half;
      for (std::int64_t h = 0; h < heads; ++h) {
        const std::int64_t g = h / group;
        rotate(xr + h * D, yr + h * D, c, s, half, 1.0f);                                     // q
        rotate(xr + (heads + g) * D, yr + (heads + h) * D, c, s, half, 1.0f);                 // k
        const float* v = xr + (heads + kv_heads + g) * D;                                     // v
        for (std::int64_t i = 0; i < D; ++i) yr[(2 * heads + h) * D + i] = v[i];
      }
    }
}

void rotary_gqa_backward_kernel(const float* dqkv, float* dx, std::int64_t batch, std::int64_t seq,
                                std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const RotaryTable table(seq, head_dim, theta);
  const std::int64_t D = head_dim, half = D / 2, group = heads / kv_heads;
  const std::int64_t in_row = 3 * heads * D, out_row = (heads + 2 * kv_heads) * D;
  std::vector<float> sum(static_cast<std::size_t>(D));
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < seq; ++t) {
      const float* gr = dqkv + (b * seq + t) * in_row;
      float* dr = dx + (b * seq + t) * out_row;
      const float* c = table.cos.data() + t * half;
      const float* s = table.sin.data() + t * half;
      for (std::int64_t h = 0; h < heads; ++h) rotate(gr + h * D, dr + h * D, c, s, half, -1.0f);  // dq
      for (std::int64_t g = 0; g < kv_heads; ++g) {
        // dk: the group's heads summed in order, then rotated back (the rotation is linear).
        for (std::int64_t i = 0; i < D; ++i) {
          float acc = 0.0f;
          for (std::int64_t h = g * group; h < (g + 1) * group; ++h) acc += gr[(heads + h) * D + i];
          sum[static_cast<std::size_t>(i)] = acc;
        }
        rotate(sum.data(), dr + (heads + g) * D, c, s, half, -1.0f);
        // dv: the group's heads summed in order.
        for (std::int64_t i = 0; i < D; ++i) {
          float acc = 0.0f;
          for (std::int64_t h = g * group; h < (g + 1) * group; ++h) acc += gr[(2 * heads + h) * D + i];
          dr[(heads + kv_heads + g) * D + i] = acc;
        }
      }
    }
}

}  // namespace

void CpuBackend::rotary_gqa_forward(In x, Out qkv, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                    std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const std::int64_t rows = batch * seq;
  Float32Views v(*this, "rotary_gqa_forward");
  rotary_gqa_forward_kernel(v.in(x, rows * (heads + 2 * kv_heads) * head_dim), v.out(qkv, rows * 3 * heads * head_dim),
                            batch, seq, heads, kv_heads, head_dim, theta);
  v.finish();
}

void CpuBackend::rotary_gqa_backward(In dqkv, Out dx, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                     std::int64_t kv_heads, std::int64_t head_dim, float theta) {
  const std::int64_t rows = batch * seq;
  Float32Views v(*this, "rotary_gqa_backward");
  rotary_gqa_backward_kernel(v.in(dqkv, rows * 3 * heads * head_dim),
                             v.out(dx, rows * (heads + 2 * kv_heads) * head_dim), batch, seq, heads, kv_heads,
                             head_dim, theta);
  v.finish();
}

}  // namespace libpipe::cpu
