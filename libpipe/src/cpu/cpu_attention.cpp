// Causal multi-head attention on the CPU, one (sample, head) at a time.
//
// Per head the work is three or five small GEMMs over T x T and T x D blocks,
// read in place from qkv at a leading dimension of 3C (no copies of Q, K, V).
// The causal mask is exploited by blocks of rows: rows [r0, r1) only see keys
// [0, r1), so for long sequences about half of the T x T work is skipped;
// inside a block the entries above the diagonal are zeros of probs, which the
// forward writes, so the same GEMMs stay exact.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_backend.hpp"
#include "cpu_math.hpp"

namespace libpipe::cpu {
namespace {

// Rows per block of the causal triangle. Smaller blocks skip more of the masked half but make more, smaller
// sgemm calls; measured with OpenBLAS on one core (QK^T + PV, all heads): T=64 D=32 32 rows 291 us against
// 336 us in one square; T=128 32 rows best; T >= 256 64 rows best (T=1024 D=64: 104 ms against 168 ms).
std::int64_t causal_block(std::int64_t seq) { return seq <= 128 ? 32 : 64; }

// The causal rows are handled in whole vectors, masked by lane index (iota + j < len) rather than by
// writing sentinels into the row first: scalar stores followed by a vector load of the same bytes stall
// store forwarding, and that stall cost more than the softmax itself (230 -> 60 us for 64 heads at T=64).
// A vector that would run past the end of a row (T not a multiple of 16) falls back to scalar code.

PIPE_INLINE vi lane_index() {
  vi idx;
  for (int j = 0; j < kWidth; ++j) idx[j] = j;
  return idx;
}

// Softmax of rows [r0, r1) of a T x T score block in place, row r over columns [0, r] and zeros in
// (r, T): the causal mask.
PIPE_CPU_KERNEL void causal_softmax_rows(float* p, std::int64_t r0, std::int64_t r1, std::int64_t T) {
  const vi idx = lane_index();
  for (std::int64_t r = r0; r < r1; ++r) {
    float* row = p + r * T;
    const std::int64_t len = r + 1;
    const vi live_len = vi{} + static_cast<std::int32_t>(len);
    // Chunks [0, vend) are whole vectors inside the row; [vend, len) is the scalar rest.
    std::int64_t vend = 0;
    while (vend < len && vend + kWidth <= T) vend += kWidth;
    const std::int64_t send = std::max(vend, len);
    vf vmax = splat(-1e30f);
    for (std::int64_t j = 0; j < vend; j += kWidth) {
      const vi live = (idx + static_cast<std::int32_t>(j)) < live_len;
      vmax = maxf(vmax, live ? load(row + j) : splat(-1e30f));
    }
    float m = hmax(vmax);
    for (std::int64_t j = vend; j < len; ++j) m = maxf(m, row[j]);
    vf vsum = {};
    for (std::int64_t j = 0; j < vend; j += kWidth) {
      const vi live = (idx + static_cast<std::int32_t>(j)) < live_len;
      const vf e = live ? fast_exp(load(row + j) - m) : vf{};
      store(row + j, e);
      vsum += e;
    }
    float sum = hsum(vsum);
    for (std::int64_t j = vend; j < len; ++j) sum += (row[j] = fast_exp(row[j] - m));
    const float inv = 1.0f / sum;
    for (std::int64_t j = 0; j < vend; j += kWidth) store(row + j, load(row + j) * inv);
    for (std::int64_t j = vend; j < len; ++j) row[j] *= inv;
    std::int64_t j = send;
    for (; j + kWidth <= T; j += kWidth) store(row + j, vf{});
    for (; j < T; ++j) row[j] = 0.0f;
  }
}

// dS = P * (dP - rowsum(dP * P)) in place of dP for rows [r0, r1), zeros above the diagonal up to column r1
// (the block GEMMs read them). P is exactly 0 above the diagonal, so whole vectors over it add nothing.
PIPE_CPU_KERNEL void softmax_backward_rows(const float* p, float* ds, std::int64_t r0, std::int64_t r1,
                                           std::int64_t T) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* pr = p + r * T;
    float* dsr = ds + r * T;
    const std::int64_t len = r + 1;
    std::int64_t vend = 0;  // whole vectors within the block's r1 columns, which the dP GEMM wrote
    while (vend < len && vend + kWidth <= r1) vend += kWidth;
    vf acc = {};
    for (std::int64_t j = 0; j < vend; j += kWidth) acc += load(pr + j) * load(dsr + j);
    float pd = hsum(acc);
    for (std::int64_t j = vend; j < len; ++j) pd += pr[j] * dsr[j];
    for (std::int64_t j = 0; j < vend; j += kWidth) store(dsr + j, load(pr + j) * (load(dsr + j) - pd));
    std::int64_t j = vend;
    for (; j < len; ++j) dsr[j] = pr[j] * (dsr[j] - pd);
    for (; j + kWidth <= r1; j += kWidth) store(dsr + j, vf{});
    for (; j < r1; ++j) dsr[j] = 0.0f;
  }
}

}  // namespace

void CpuBackend::attention_forward(const float* qkv, float* out, float* probs, std::int64_t batch, std::int64_t seq,
                                   std::int64_t heads, std::int64_t head_dim) {
  const std::int64_t T = seq, D = head_dim, C = heads * head_dim, ld = 3 * C;
  const std::int64_t bs = causal_block(T);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t h = 0; h < heads; ++h) {
      const float* q = qkv + b * T * ld + h * D;  // (T, D) at stride 3C
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* p = probs + (b * heads + h) * T * T;  // (T, T)
      float* o = out + b * T * C + h * D;          // (T, D) at stride C
      for (std::int64_t r0 = 0; r0 < T; r0 += bs) {
        const std::int64_t r1 = std::min(T, r0 + bs), nr = r1 - r0;
        gemm(false, true, nr, r1, D, scale, q + r0 * ld, ld, k, ld, 0.0f, p + r0 * T, T);  // scores
        causal_softmax_rows(p, r0, r1, T);
        gemm(false, false, nr, D, r1, 1.0f, p + r0 * T, T, v, ld, 0.0f, o + r0 * C, C);
      }
    }
}

// With P = softmax(S), S = scale Q K^T, O = P V:
//   dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = scale dS K, dK = scale dS^T Q.
void CpuBackend::attention_backward(const float* dout, const float* qkv, const float* probs, float* dqkv,
                                    std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  const std::int64_t T = seq, D = head_dim, C = heads * head_dim, ld = 3 * C;
  const std::int64_t bs = causal_block(T);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // dS for one head; grows once per thread to the largest T seen.
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<std::size_t>(T * T)) scratch.resize(static_cast<std::size_t>(T * T));
  float* ds = scratch.data();
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t h = 0; h < heads; ++h) {
      const float* q = qkv + b * T * ld + h * D;
      const float* k = q + C;
      const float* v = q + 2 * C;
      const float* p = probs + (b * heads + h) * T * T;
      const float* dO = dout + b * T * C + h * D;
      float* dq = dqkv + b * T * ld + h * D;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      for (std::int64_t r0 = 0; r0 < T; r0 += bs) {
        const std::int64_t r1 = std::min(T, r0 + bs), nr = r1 - r0;
        gemm(false, true, nr, r1, D, 1.0f, dO + r0 * C, C, v, ld, 0.0f, ds + r0 * T, T);  // dP
        softmax_backward_rows(p, ds, r0, r1, T);
        gemm(false, false, nr, D, r1, scale, ds + r0 * T, T, k, ld, 0.0f, dq + r0 * ld, ld);
      }
      // Keys/values [c0, c1) are seen by queries [c0, T) only.
      for (std::int64_t c0 = 0; c0 < T; c0 += bs) {
        const std::int64_t c1 = std::min(T, c0 + bs), nc = c1 - c0, nq = T - c0;
        gemm(true, false, nc, D, nq, scale, ds + c0 * T + c0, T, q + c0 * ld, ld, 0.0f, dk + c0 * ld, ld);
        gemm(true, false, nc, D, nq, 1.0f, p + c0 * T + c0, T, dO + c0 * C, C, 0.0f, dv + c0 * ld, ld);
      }
    }
}

}  // namespace libpipe::cpu
