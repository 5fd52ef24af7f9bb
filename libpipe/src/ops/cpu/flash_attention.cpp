// Causal attention on the CPU without the T x T matrix (FlashAttention's scheme: Dao et al., 2022; the
// backward's loop order of FlashAttention-2), for long sequences.
//
// The materialised path (attention.cpp) writes the scores and probabilities of every head, B H T^2 floats, and
// keeps the probabilities for backward: 48 MB per layer for one GPT-2 sample of 1024 tokens, and its products
// stream them through memory. Here a head is cut into blocks of kBlock queries by kBlock keys; each block's
// scores live in a kBlock x kBlock scratch that stays in cache, an online softmax keeps each row's running max m
// and sum l, and the saved state per row is the output and its log-sum-exp m + log l ([B H, T, D + 1], as the
// CUDA backend's). Backward recomputes each block's probabilities from the log-sum-exp (p = exp(s - lse)), with
// Delta_i = dO_i . O_i standing in for rowsum(dP * P), key block by key block: dK and dV of a key block are
// summed over its query blocks in registers and scratch, and dQ over the key blocks in a per-head scratch,
// always in the same order: the same bits on any thread count.
//
// The products are attention_tiles.hpp's register tiles, on copies of the head's Q, K, V (and dO) made
// contiguous and zero-padded to a multiple of 16 columns, so every head size takes this path (zero columns add
// exact zeros to the dot products).
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_tiles.hpp"
#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "cpu_threads.hpp"
#include "pipe/backend.hpp"

namespace libpipe::cpu {
namespace {

using namespace tiles;

constexpr std::int64_t kBlock = 64;  // queries and keys per block: a multiple of every panel width (64, 16, 8)

// Rows [0, T) of a head (D columns at stride ld) into dst as rows of Dp floats, columns [D, Dp) zero.
PIPE_INLINE void pack_rows(const float* src, std::int64_t ld, std::int64_t T, std::int64_t D, float* dst,
                           std::int64_t Dp) {
  for (std::int64_t t = 0; t < T; ++t) {
    std::copy(src + t * ld, src + t * ld + D, dst + t * Dp);
    std::fill(dst + t * Dp + D, dst + (t + 1) * Dp, 0.0f);
  }
}

// s[r][c] = alpha a_r . b_c for rows r < nq of a (stride lda) and keys c < nk of a panel-packed B^T (bt at the
// block's first key); s has rows of kBlock floats.
template <int W>
PIPE_INLINE void block_abt(const float* a, std::int64_t lda, const float* bt, std::int64_t D, float alpha, float* s,
                           std::int64_t nq, std::int64_t nk) {
  const std::int64_t nvec = (nk + W - 1) / W;
  std::int64_t r = 0;
  for (; r + kTileRows <= nq; r += kTileRows)
    abt_rows<W, kTileRows>(a + r * lda, lda, bt, D, alpha, s + r * kBlock, kBlock, nvec, nk);
  for (; r < nq; ++r) abt_rows<W, 1>(a + r * lda, lda, bt, D, alpha, s + r * kBlock, kBlock, nvec, nk);
}

// acc[r] = acc[r] scale[r] + alpha sum_{c < nk} p[r][c] b[c] for rows r < nq (p rows of kBlock floats, b and acc
// rows of D at stride ldb and D; scale null: 1).
template <int W>
PIPE_INLINE void block_ab_add(const float* p, const float* b, std::int64_t ldb, std::int64_t D, float alpha,
                              float* acc, const float* scale, std::int64_t nq, std::int64_t nk) {
  std::int64_t r = 0;
  for (; r + kTileRows <= nq; r += kTileRows)
    ab_rows<W, kTileRows>(p + r * kBlock, kBlock, b, ldb, nk, D, alpha, acc + r * D, D, true,
                          scale ? scale + r : nullptr);
  for (; r < nq; ++r)
    ab_rows<W, 1>(p + r * kBlock, kBlock, b, ldb, nk, D, alpha, acc + r * D, D, true, scale ? scale + r : nullptr);
}

// acc[c] += alpha sum_{r < nq} p[r][c] b[r] for keys c < nk (p rows of kBlock floats, b rows of D at stride ldb).
template <int W>
PIPE_INLINE void block_atb_add(const float* p, const float* b, std::int64_t ldb, std::int64_t D, float alpha,
                               float* acc, std::int64_t nq, std::int64_t nk) {
  std::int64_t c = 0;
  for (; c + kTileRows <= nk; c += kTileRows)
    atb_rows<W, kTileRows>(p + c, kBlock, b, ldb, nq, D, alpha, acc + c * D, D, true);
  for (; c < nk; ++c) atb_rows<W, 1>(p + c, kBlock, b, ldb, nq, D, alpha, acc + c * D, D, true);
}

// One row of a score block: the columns [0, len) are the keys the query sees (the causal mask), the rest of the
// row's nk keys become 0. Folds the row into the running max m and sum l and leaves exp(s - m_new) in the row;
// returns exp(m_old - m_new), the factor for the output rows summed so far.
template <int W>
PIPE_INLINE float online_softmax_row(float* row, std::int64_t len, std::int64_t nk, float& m, float& l) {
  const vi<W> idx = Simd<W>::iota();
  const vi<W> live_len = isplat<W>(static_cast<std::int32_t>(len));
  const vf<W> masked = splat<W>(-1e30f);
  vf<W> vmax = masked;
  for (std::int64_t c = 0; c < nk; c += W) {
    const vi<W> live = (idx + isplat<W>(static_cast<std::int32_t>(c))) < live_len;
    vmax = maxf(vmax, live ? load<W>(row + c) : masked);
  }
  const float m_new = std::max(m, hmax(vmax));
  const vf<W> mv = splat<W>(m_new);
  vf<W> vsum = {};
  for (std::int64_t c = 0; c < nk; c += W) {
    const vi<W> live = (idx + isplat<W>(static_cast<std::int32_t>(c))) < live_len;
    const vf<W> e = live ? fast_exp(load<W>(row + c) - mv) : vf<W>{};
    store<W>(row + c, e);
    vsum += e;
  }
  const float correction = std::exp(m - m_new);  // 0 for the first block (m = -1e30)
  l = l * correction + hsum(vsum);
  m = m_new;
  return correction;
}

// One row of a score block in backward: p = exp(s - lse) over the columns [0, len) the query sees, 0 after.
template <int W>
PIPE_INLINE void probabilities_row(float* row, std::int64_t len, std::int64_t nk, float lse) {
  const vi<W> idx = Simd<W>::iota();
  const vi<W> live_len = isplat<W>(static_cast<std::int32_t>(len));
  const vf<W> lv = splat<W>(lse);
  for (std::int64_t c = 0; c < nk; c += W) {
    const vi<W> live = (idx + isplat<W>(static_cast<std::int32_t>(c))) < live_len;
    store<W>(row + c, live ? fast_exp(load<W>(row + c) - lv) : vf<W>{});
  }
}

// Scratch floats one head needs (forward and backward alike; the larger of the two).
std::int64_t head_scratch_floats(std::int64_t T, std::int64_t Dp) {
  const std::int64_t panels = Dp * round_up(T, kBlock);
  return 4 * T * Dp + 2 * panels + 2 * kBlock * kBlock + 2 * kBlock * Dp + T;
}

// One head's forward: out rows at stride ldo, its state rows [T, D + 1] (output, log-sum-exp).
template <int W>
PIPE_INLINE void flash_head_forward(const float* q, const float* k, const float* v, std::int64_t ld, float* out,
                                    std::int64_t ldo, float* state, std::int64_t T, std::int64_t D, float scale,
                                    float* work) {
  const std::int64_t Dp = round_up(D, 16);
  float* qp = work;                        // T x Dp
  float* vp = qp + T * Dp;                 // T x Dp
  float* kp = vp + T * Dp;                 // T x Dp
  float* kt = kp + T * Dp;                 // K^T in panels
  float* s = kt + Dp * round_up(T, kBlock);  // kBlock x kBlock scores, then probabilities
  float* acc = s + kBlock * kBlock;        // kBlock x Dp: the output rows summed so far
  pack_rows(q, ld, T, D, qp, Dp);
  pack_rows(k, ld, T, D, kp, Dp);
  pack_rows(v, ld, T, D, vp, Dp);
  pack_transposed(kp, Dp, T, Dp, kt, round_up(T, W), kPanel<W>);
  float m[kBlock], l[kBlock], correction[kBlock];
  for (std::int64_t i0 = 0; i0 < T; i0 += kBlock) {
    const std::int64_t nq = std::min(kBlock, T - i0);
    std::fill(m, m + nq, -1e30f);
    std::fill(l, l + nq, 0.0f);
    std::fill(acc, acc + nq * Dp, 0.0f);
    for (std::int64_t j0 = 0; j0 <= i0; j0 += kBlock) {  // key blocks up to the diagonal one
      const std::int64_t nk = std::min(kBlock, T - j0);
      block_abt<W>(qp + i0 * Dp, Dp, kt + (j0 / kPanel<W>) * Dp * kPanel<W>, Dp, scale, s, nq, nk);
      for (std::int64_t r = 0; r < nq; ++r)
        correction[r] = online_softmax_row<W>(s + r * kBlock, std::min(nk, i0 + r - j0 + 1), nk, m[r], l[r]);
      block_ab_add<W>(s, vp + j0 * Dp, Dp, Dp, 1.0f, acc, correction, nq, nk);
    }
    for (std::int64_t r = 0; r < nq; ++r) {
      const float inv = 1.0f / l[r];
      float* o = out + (i0 + r) * ldo;
      float* st = state + (i0 + r) * (D + 1);
      for (std::int64_t d = 0; d < D; ++d) o[d] = st[d] = acc[r * Dp + d] * inv;
      st[D] = m[r] + std::log(l[r]);
    }
  }
}
PIPE_ISA_DISPATCH(flash_head_forward,
                  (const float* q, const float* k, const float* v, std::int64_t ld, float* out, std::int64_t ldo,
                   float* state, std::int64_t T, std::int64_t D, float scale, float* work),
                  (q, k, v, ld, out, ldo, state, T, D, scale, work))

// One head's backward: dq, dk, dv rows at stride ld (in dqkv), from dout rows at stride ldo and the state.
template <int W>
PIPE_INLINE void flash_head_backward(const float* q, const float* k, const float* v, std::int64_t ld,
                                     const float* dout, std::int64_t ldo, const float* state, float* dq, float* dk,
                                     float* dv, std::int64_t T, std::int64_t D, float scale, float* work) {
  const std::int64_t Dp = round_up(D, 16);
  const std::int64_t panels = Dp * round_up(T, kBlock);
  float* qp = work;                  // T x Dp
  float* kp = qp + T * Dp;           // T x Dp
  float* dop = kp + T * Dp;          // T x Dp: dO
  float* dq_acc = dop + T * Dp;      // T x Dp: dQ summed over the key blocks
  float* kt = dq_acc + T * Dp;       // K^T in panels
  float* vt = kt + panels;           // V^T in panels
  float* s = vt + panels;            // kBlock x kBlock: scores, then probabilities
  float* ds = s + kBlock * kBlock;   // kBlock x kBlock: dP, then dS
  float* dk_acc = ds + kBlock * kBlock;  // kBlock x Dp
  float* dv_acc = dk_acc + kBlock * Dp;  // kBlock x Dp
  float* delta = dv_acc + kBlock * Dp;   // T: dO_i . O_i
  pack_rows(q, ld, T, D, qp, Dp);
  pack_rows(k, ld, T, D, kp, Dp);
  pack_rows(dout, ldo, T, D, dop, Dp);
  pack_transposed(kp, Dp, T, Dp, kt, round_up(T, W), kPanel<W>);
  pack_rows(v, ld, T, D, dq_acc, Dp);  // V, contiguous for a moment: packed transposed, then dq_acc is zeroed
  pack_transposed(dq_acc, Dp, T, Dp, vt, round_up(T, W), kPanel<W>);
  std::fill(dq_acc, dq_acc + T * Dp, 0.0f);
  for (std::int64_t i = 0; i < T; ++i) {
    const float* o = state + i * (D + 1);
    const float* g = dop + i * Dp;
    float sum = 0.0f;
    for (std::int64_t d = 0; d < D; ++d) sum += g[d] * o[d];
    delta[i] = sum;
  }
  const vi<W> idx = Simd<W>::iota();
  for (std::int64_t j0 = 0; j0 < T; j0 += kBlock) {
    const std::int64_t nk = std::min(kBlock, T - j0);
    const float* kt_block = kt + (j0 / kPanel<W>) * Dp * kPanel<W>;
    const float* vt_block = vt + (j0 / kPanel<W>) * Dp * kPanel<W>;
    std::fill(dk_acc, dk_acc + nk * Dp, 0.0f);
    std::fill(dv_acc, dv_acc + nk * Dp, 0.0f);
    for (std::int64_t i0 = j0; i0 < T; i0 += kBlock) {  // the query blocks that see these keys
      const std::int64_t nq = std::min(kBlock, T - i0);
      block_abt<W>(qp + i0 * Dp, Dp, kt_block, Dp, scale, s, nq, nk);
      for (std::int64_t r = 0; r < nq; ++r)
        probabilities_row<W>(s + r * kBlock, std::min(nk, i0 + r - j0 + 1), nk, state[(i0 + r) * (D + 1) + D]);
      block_atb_add<W>(s, dop + i0 * Dp, Dp, Dp, 1.0f, dv_acc, nq, nk);  // dV += P^T dO
      block_abt<W>(dop + i0 * Dp, Dp, vt_block, Dp, 1.0f, ds, nq, nk);  // dP = dO V^T
      for (std::int64_t r = 0; r < nq; ++r) {  // dS = P (dP - Delta), 0 where P is
        const float* pr = s + r * kBlock;
        float* dsr = ds + r * kBlock;
        const vf<W> delta_v = splat<W>(delta[i0 + r]);
        for (std::int64_t c = 0; c < nk; c += W) {
          const vi<W> live = (idx + isplat<W>(static_cast<std::int32_t>(c))) < isplat<W>(static_cast<std::int32_t>(nk));
          store<W>(dsr + c, live ? load<W>(pr + c) * (load<W>(dsr + c) - delta_v) : vf<W>{});
        }
      }
      block_ab_add<W>(ds, kp + j0 * Dp, Dp, Dp, scale, dq_acc + i0 * Dp, nullptr, nq, nk);  // dQ += scale dS K
      block_atb_add<W>(ds, qp + i0 * Dp, Dp, Dp, scale, dk_acc, nq, nk);  // dK += scale dS^T Q
    }
    for (std::int64_t c = 0; c < nk; ++c) {
      std::copy(dk_acc + c * Dp, dk_acc + c * Dp + D, dk + (j0 + c) * ld);
      std::copy(dv_acc + c * Dp, dv_acc + c * Dp + D, dv + (j0 + c) * ld);
    }
  }
  for (std::int64_t i = 0; i < T; ++i) std::copy(dq_acc + i * Dp, dq_acc + i * Dp + D, dq + i * ld);
}
PIPE_ISA_DISPATCH(flash_head_backward,
                  (const float* q, const float* k, const float* v, std::int64_t ld, const float* dout,
                   std::int64_t ldo, const float* state, float* dq, float* dk, float* dv, std::int64_t T,
                   std::int64_t D, float scale, float* work),
                  (q, k, v, ld, dout, ldo, state, dq, dk, dv, T, D, scale, work))

// This thread's scratch, grown to the largest head seen.
float* head_scratch(std::int64_t T, std::int64_t D) {
  thread_local std::vector<float> buffer;
  const auto n = static_cast<std::size_t>(head_scratch_floats(T, round_up(D, 16)));
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// fn(bh, sample, head, this thread's scratch) for every (sample, head), the heads spread over the backend's threads:
// each head is computed whole by one thread, so the bits do not depend on the thread count.
template <class Fn>
void for_each_head(std::int64_t batch, std::int64_t heads, std::int64_t T, std::int64_t D, const Fn& fn) {
  parallel_for(batch * heads, 1, [&](std::int64_t begin, std::int64_t end) {
    float* work = head_scratch(T, D);
    for (std::int64_t bh = begin; bh < end; ++bh) fn(bh, bh / heads, bh % heads, work);
  });
}

}  // namespace

bool CpuBackend::flash_attention_pays(std::int64_t seq, std::int64_t head_dim) const {
  return flash_attention_runs(Device::cpu, seq, head_dim);  // from 1024 tokens (ops/attention_choice.cpp)
}

void CpuBackend::flash_attention_forward(const float* qkv, float* out, float* state, std::int64_t batch,
                                         std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  const std::int64_t T = seq, D = head_dim, C = heads * head_dim, ld = 3 * C;
  for_each_head(batch, heads, T, D, [&](std::int64_t bh, std::int64_t b, std::int64_t h, float* work) {
    const float* q = qkv + b * T * ld + h * D;
    flash_head_forward_any(q, q + C, q + 2 * C, ld, out + b * T * C + h * D, C, state + bh * T * (D + 1), T, D,
                           1.0f / std::sqrt(static_cast<float>(D)), work);
  });
}

void CpuBackend::flash_attention_backward(const float* dout, const float* qkv, const float* state, float* dqkv,
                                          std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                          std::int64_t head_dim) {
  const std::int64_t T = seq, D = head_dim, C = heads * head_dim, ld = 3 * C;
  for_each_head(batch, heads, T, D, [&](std::int64_t bh, std::int64_t b, std::int64_t h, float* work) {
    const float* q = qkv + b * T * ld + h * D;
    float* dq = dqkv + b * T * ld + h * D;
    flash_head_backward_any(q, q + C, q + 2 * C, ld, dout + b * T * C + h * D, C, state + bh * T * (D + 1), dq,
                            dq + C, dq + 2 * C, T, D, 1.0f / std::sqrt(static_cast<float>(D)), work);
  });
}

}  // namespace libpipe::cpu
