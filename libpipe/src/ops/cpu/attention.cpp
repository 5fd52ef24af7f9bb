// Causal multi-head attention on the CPU, one (sample, head) at a time, read
// in place from qkv at a leading dimension of 3C (no copies of Q, K, V).
//
// Two paths. When the head size is a multiple of 16 (GPT's 32, 64, 128) the
// products are register-tiled loops over vectors (16, 8 or 4 floats: AVX-512,
// AVX2 or SSE, see cpu_math.hpp) that touch only the causal triangle: tiles of
// 4 query rows whose key range stops at their last row. At GPT-sized heads
// they beat small sgemm calls, whose packing does not pay on 64 x 64 x 32
// products. Measured on one core when chosen (an older machine), B=16 T=64 H=4 D=32, forward / backward:
// sgemm path 354 / 575 us; tiles 195 / 232 us (AVX-512), 339 / 393 us (AVX2).
// T=256 D=64: backward 16.3 -> 11.3 ms; T=1024: never slower. On the Ice Lake Xeon of PERFORMANCE.md
// (2026-12-08) `pipe-bench attention --batch 16 --seq 64 --heads 4 --head-dim 32` gives the tiles 372-381 /
// 470-488 us (AVX-512), 414-421 / 522-533 us (PIPE_CPU_ISA=avx2). Other head sizes
// take sgemm over blocks of rows: rows [r0, r1) only see keys [0, r1).
//
// Either way, entries of probs above the diagonal are exact zeros (the
// forward writes them), so products over whole blocks or vectors stay exact.
// The register tiles are in attention_tiles.hpp; long sequences (from 1024
// tokens) take flash_attention.cpp instead, which keeps no T x T matrix.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_tiles.hpp"
#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "cpu_threads.hpp"
#include "ops/float32_views.hpp"

namespace libpipe::cpu {
namespace {

using namespace tiles;

// Rows per block of the causal triangle on the sgemm path. Smaller blocks skip more of the masked half but
// make more, smaller sgemm calls; measured with OpenBLAS on one core (QK^T + PV, all heads): T=64 D=32 32 rows
// 291 us against 336 us in one square; T=128 32 rows best; T >= 256 64 rows best (T=1024 D=64: 104 ms against
// 168 ms).
std::int64_t causal_block(std::int64_t seq) { return seq <= 128 ? 32 : 64; }

// ---- causal softmax and its backward, row by row
//
// The causal rows are handled in whole vectors, masked by lane index (iota + j < len) rather than by writing
// sentinels into the row first: scalar stores followed by a vector load of the same bytes stall store
// forwarding, and that stall cost more than the softmax itself (230 -> 60 us for 64 heads at T=64). A vector
// that would run past the end of a row (T not a multiple of W) falls back to scalar code.

// Softmax of rows [r0, r1) of a T x T score block in place, row r over columns [0, r] and zeros in (r, T):
// the causal mask.
template <int W>
PIPE_INLINE void causal_softmax_rows(float* p, std::int64_t r0, std::int64_t r1, std::int64_t T) {
  const vi<W> idx = Simd<W>::iota();
  const vf<W> masked = splat<W>(-1e30f);
  for (std::int64_t r = r0; r < r1; ++r) {
    float* row = p + r * T;
    const std::int64_t len = r + 1;
    const vi<W> live_len = isplat<W>(static_cast<std::int32_t>(len));
    // Columns [0, vend) are whole vectors inside the row; [vend, len) is the scalar rest.
    std::int64_t vend = 0;
    while (vend < len && vend + W <= T) vend += W;
    vf<W> vmax = masked;
    for (std::int64_t j = 0; j < vend; j += W) {
      const vi<W> live = (idx + isplat<W>(static_cast<std::int32_t>(j))) < live_len;
      vmax = maxf(vmax, live ? load<W>(row + j) : masked);
    }
    float m = hmax(vmax);
    for (std::int64_t j = vend; j < len; ++j) m = maxf(m, row[j]);
    const vf<W> mv = splat<W>(m);
    vf<W> vsum = {};
    for (std::int64_t j = 0; j < vend; j += W) {
      const vi<W> live = (idx + isplat<W>(static_cast<std::int32_t>(j))) < live_len;
      const vf<W> e = live ? fast_exp(load<W>(row + j) - mv) : vf<W>{};
      store<W>(row + j, e);
      vsum += e;
    }
    float sum = hsum(vsum);
    for (std::int64_t j = vend; j < len; ++j) sum += (row[j] = fast_exp(row[j] - m));
    const float inv = 1.0f / sum;
    const vf<W> inv_v = splat<W>(inv);
    for (std::int64_t j = 0; j < vend; j += W) store<W>(row + j, load<W>(row + j) * inv_v);
    for (std::int64_t j = vend; j < len; ++j) row[j] *= inv;
    std::int64_t j = std::max(vend, len);
    for (; j + W <= T; j += W) store<W>(row + j, vf<W>{});
    for (; j < T; ++j) row[j] = 0.0f;
  }
}
PIPE_ISA_DISPATCH(causal_softmax_rows, (float* p, std::int64_t r0, std::int64_t r1, std::int64_t T), (p, r0, r1, T))

// dS = P * (dP - rowsum(dP * P)) in place of dP for rows [r0, r1), zeros above the diagonal up to column r1
// (the products that follow read them). P is exactly 0 above the diagonal, so whole vectors over it add nothing.
template <int W>
PIPE_INLINE void softmax_backward_rows(const float* p, float* ds, std::int64_t r0, std::int64_t r1, std::int64_t T) {
  for (std::int64_t r = r0; r < r1; ++r) {
    const float* pr = p + r * T;
    float* dsr = ds + r * T;
    const std::int64_t len = r + 1;
    std::int64_t vend = 0;  // whole vectors within the block's r1 columns, which the dP product wrote
    while (vend < len && vend + W <= r1) vend += W;
    vf<W> acc = {};
    for (std::int64_t j = 0; j < vend; j += W) acc += load<W>(pr + j) * load<W>(dsr + j);
    float pd = hsum(acc);
    for (std::int64_t j = vend; j < len; ++j) pd += pr[j] * dsr[j];
    const vf<W> pdv = splat<W>(pd);
    for (std::int64_t j = 0; j < vend; j += W) store<W>(dsr + j, load<W>(pr + j) * (load<W>(dsr + j) - pdv));
    std::int64_t j = vend;
    for (; j < len; ++j) dsr[j] = pr[j] * (dsr[j] - pd);
    for (; j + W <= r1; j += W) store<W>(dsr + j, vf<W>{});
    for (; j < r1; ++j) dsr[j] = 0.0f;
  }
  (void)T;
}
PIPE_ISA_DISPATCH(softmax_backward_rows, (const float* p, float* ds, std::int64_t r0, std::int64_t r1, std::int64_t T),
                  (p, ds, r0, r1, T))

// ---- causal products over the triangle (tiles: attention_tiles.hpp)

// Causal A B^T into the rows of c (T x T): row block [i0, i0 + rb) needs keys [0, i0 + rb). bt is B^T in panels.
template <int W>
PIPE_INLINE void causal_abt(const float* a, std::int64_t lda, const float* bt, std::int64_t T, std::int64_t D,
                            float alpha, float* c) {
  std::int64_t i0 = 0;
  for (; i0 + kTileRows <= T; i0 += kTileRows)
    abt_rows<W, kTileRows>(a + i0 * lda, lda, bt, D, alpha, c + i0 * T, T, (i0 + kTileRows + W - 1) / W, T);
  for (; i0 < T; ++i0) abt_rows<W, 1>(a + i0 * lda, lda, bt, D, alpha, c + i0 * T, T, (i0 + W) / W, T);
}

// Causal P B (P T x T, lower triangular) into c (T x D at stride ldc).
template <int W>
PIPE_INLINE void causal_ab(const float* p, const float* b, std::int64_t ldb, std::int64_t T, std::int64_t D,
                           float alpha, float* c, std::int64_t ldc) {
  std::int64_t i0 = 0;
  for (; i0 + kTileRows <= T; i0 += kTileRows)
    ab_rows<W, kTileRows>(p + i0 * T, T, b, ldb, i0 + kTileRows, D, alpha, c + i0 * ldc, ldc);
  for (; i0 < T; ++i0) ab_rows<W, 1>(p + i0 * T, T, b, ldb, i0 + 1, D, alpha, c + i0 * ldc, ldc);
}

// Causal P^T B (P T x T, lower triangular) into c (T x D at stride ldc): row j of c sums rows i >= j of B.
template <int W>
PIPE_INLINE void causal_atb(const float* p, const float* b, std::int64_t ldb, std::int64_t T, std::int64_t D,
                            float alpha, float* c, std::int64_t ldc) {
  std::int64_t j0 = 0;
  for (; j0 + kTileRows <= T; j0 += kTileRows)
    atb_rows<W, kTileRows>(p + j0 * T + j0, T, b + j0 * ldb, ldb, T - j0, D, alpha, c + j0 * ldc, ldc);
  for (; j0 < T; ++j0) atb_rows<W, 1>(p + j0 * T + j0, T, b + j0 * ldb, ldb, T - j0, D, alpha, c + j0 * ldc, ldc);
}

// One head's forward: S = scale Q K^T, P = causal softmax(S) (into probs), O = P V; kt (K^T in panels) is scratch.
template <int W>
PIPE_INLINE void head_forward(const float* q, const float* k, const float* v, std::int64_t ld, float* p, float* o,
                              std::int64_t ldo, std::int64_t T, std::int64_t D, float scale, float* kt) {
  pack_transposed(k, ld, T, D, kt, round_up(T, W), kPanel<W>);
  causal_abt<W>(q, ld, kt, T, D, scale, p);
  causal_softmax_rows<W>(p, 0, T, T);
  causal_ab<W>(p, v, ld, T, D, 1.0f, o, ldo);
}
PIPE_ISA_DISPATCH(head_forward,
                  (const float* q, const float* k, const float* v, std::int64_t ld, float* p, float* o,
                   std::int64_t ldo, std::int64_t T, std::int64_t D, float scale, float* kt),
                  (q, k, v, ld, p, o, ldo, T, D, scale, kt))

// One head's backward; ds (T x T) and vt (V^T in panels) are scratch.
template <int W>
PIPE_INLINE void head_backward(const float* q, const float* k, const float* v, std::int64_t ld, const float* p,
                               const float* dO, std::int64_t ldo, float* dq, float* dk, float* dv, std::int64_t T,
                               std::int64_t D, float scale, float* ds, float* vt) {
  pack_transposed(v, ld, T, D, vt, round_up(T, W), kPanel<W>);
  causal_abt<W>(dO, ldo, vt, T, D, 1.0f, ds);  // dP
  softmax_backward_rows<W>(p, ds, 0, T, T);
  causal_ab<W>(ds, k, ld, T, D, scale, dq, ld);
  causal_atb<W>(ds, q, ld, T, D, scale, dk, ld);
  causal_atb<W>(p, dO, ldo, T, D, 1.0f, dv, ld);
}
PIPE_ISA_DISPATCH(head_backward,
                  (const float* q, const float* k, const float* v, std::int64_t ld, const float* p, const float* dO,
                   std::int64_t ldo, float* dq, float* dk, float* dv, std::int64_t T, std::int64_t D, float scale,
                   float* ds, float* vt),
                  (q, k, v, ld, p, dO, ldo, dq, dk, dv, T, D, scale, ds, vt))

// Scratch per thread, grown to the largest size seen.
float* scratch(std::vector<float>& buffer, std::int64_t n) {
  if (buffer.size() < static_cast<std::size_t>(n)) buffer.resize(static_cast<std::size_t>(n));
  return buffer.data();
}

}  // namespace

void CpuBackend::attention_forward(In qkv_in, Out out_in, Out probs_in, std::int64_t batch, std::int64_t seq,
                                   std::int64_t heads, std::int64_t head_dim) {
  const std::int64_t T = seq, D = head_dim, C = heads * head_dim, ld = 3 * C;
  Float32Views views(*this, "attention_forward");
  const float* qkv = views.in(qkv_in, batch * T * ld);
  float* out = views.out(out_in, batch * T * C);
  float* probs = views.out(probs_in, batch * heads * T * T);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  if (tiled(D)) {
    // Heads are independent: spread over the backend's threads, each with its own scratch.
    parallel_for(batch * heads, 2, [&](std::int64_t begin, std::int64_t end) {
      thread_local std::vector<float> kt_buffer;
      float* kt = scratch(kt_buffer, D * round_up(T, kPanel<16>));
      for (std::int64_t bh = begin; bh < end; ++bh) {
        const std::int64_t b = bh / heads, h = bh % heads;
        const float* q = qkv + b * T * ld + h * D;  // (T, D) at stride 3C
        head_forward_any(q, q + C, q + 2 * C, ld, probs + bh * T * T, out + b * T * C + h * D, C, T, D, scale, kt);
      }
    });
    views.finish();
    return;
  }
  // Other head sizes: blocks of rows through the backend's GEMM (which has the threads), one head at a time.
  const std::int64_t bs = causal_block(T);
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
        causal_softmax_rows_any(p, r0, r1, T);
        gemm(false, false, nr, D, r1, 1.0f, p + r0 * T, T, v, ld, 0.0f, o + r0 * C, C);
      }
    }
  views.finish();
}

// With P = softmax(S), S = scale Q K^T, O = P V:
//   dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P)), dQ = scale dS K, dK = scale dS^T Q.
void CpuBackend::attention_backward(In dout_in, In qkv_in, In probs_in, Out dqkv_in, std::int64_t batch,
                                    std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  const std::int64_t T = seq, D = head_dim, C = heads * head_dim, ld = 3 * C;
  Float32Views views(*this, "attention_backward");
  const float* dout = views.in(dout_in, batch * T * C);
  const float* qkv = views.in(qkv_in, batch * T * ld);
  const float* probs = views.in(probs_in, batch * heads * T * T);
  float* dqkv = views.out(dqkv_in, batch * T * ld);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  thread_local std::vector<float> ds_buffer, vt_buffer;
  if (tiled(D)) {
    parallel_for(batch * heads, 2, [&](std::int64_t begin, std::int64_t end) {
      float* ds = scratch(ds_buffer, T * T);  // dS for one head (thread_local: this thread's)
      float* vt = scratch(vt_buffer, D * round_up(T, kPanel<16>));
      for (std::int64_t bh = begin; bh < end; ++bh) {
        const std::int64_t b = bh / heads, h = bh % heads;
        const float* q = qkv + b * T * ld + h * D;
        float* dq = dqkv + b * T * ld + h * D;
        head_backward_any(q, q + C, q + 2 * C, ld, probs + bh * T * T, dout + b * T * C + h * D, C, dq, dq + C,
                          dq + 2 * C, T, D, scale, ds, vt);
      }
    });
    views.finish();
    return;
  }
  float* ds = scratch(ds_buffer, T * T);
  const std::int64_t bs = causal_block(T);
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
        softmax_backward_rows_any(p, ds, r0, r1, T);
        gemm(false, false, nr, D, r1, scale, ds + r0 * T, T, k, ld, 0.0f, dq + r0 * ld, ld);
      }
      // Keys/values [c0, c1) are seen by queries [c0, T) only.
      for (std::int64_t c0 = 0; c0 < T; c0 += bs) {
        const std::int64_t c1 = std::min(T, c0 + bs), nc = c1 - c0, nq = T - c0;
        gemm(true, false, nc, D, nq, scale, ds + c0 * T + c0, T, q + c0 * ld, ld, 0.0f, dk + c0 * ld, ld);
        gemm(true, false, nc, D, nq, 1.0f, p + c0 * T + c0, T, dO + c0 * C, C, 0.0f, dv + c0 * ld, ld);
      }
    }
  views.finish();
}

}  // namespace libpipe::cpu
