// Register-tiled products of one attention head on the CPU, shared by the
// materialised path (attention.cpp) and flash attention (flash_attention.cpp):
// tiles of kTileRows rows by up to kMaxVectors<W> vectors of accumulators, for
// head sizes that are a multiple of 16 (GPT's 32, 64, 128). At GPT-sized heads
// they beat small sgemm calls, whose packing does not pay on 64 x 64 x 32
// products (measurements in attention.cpp). Included only by files that
// instantiate them per instruction set (PIPE_ISA_DISPATCH, cpu_math.hpp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu_math.hpp"

namespace libpipe::cpu::tiles {

// Tiles of kTileRows rows by up to kMaxVectors<W> vectors of accumulators: 4 x 4 = 16 of the 32 AVX-512
// registers, 4 x 2 = 8 of the 16 AVX2 (or SSE) ones, leaving room for the operands.

constexpr int kTileRows = 4;
template <int W>
constexpr int kMaxVectors = W == 16 ? 4 : 2;

inline std::int64_t round_up(std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; }

// One head's keys (or values) transposed, in panels of P columns: column j of row d at
// dst[(j / P) D P + d P + j % P] holds src[j][d] (rows of src at stride ld), columns [T, Tp) zero. A tile of
// scores then reads one panel, D rows of P contiguous floats (16 KB at D = 64 on AVX-512), where rows of a plain
// transpose lie Tp floats apart: 4 KB at T = 1024, every one in the same L1 set. In 4 x 4 blocks through
// registers (D is a multiple of 16 here, P of 4): element by element, the strided stores cost an eighth of the
// forward.
PIPE_INLINE void pack_transposed(const float* src, std::int64_t ld, std::int64_t T, std::int64_t D, float* dst,
                                 std::int64_t Tp, std::int64_t P) {
  using V4 = Simd<4>::f;
  auto at = [&](std::int64_t d, std::int64_t j) { return dst + (j / P) * D * P + d * P + j % P; };
  std::int64_t j = 0;
  for (; j + 4 <= T; j += 4)
    for (std::int64_t d = 0; d < D; d += 4) {
      const V4 r0 = load<4>(src + j * ld + d), r1 = load<4>(src + (j + 1) * ld + d);
      const V4 r2 = load<4>(src + (j + 2) * ld + d), r3 = load<4>(src + (j + 3) * ld + d);
      const V4 t0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5), t1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
      const V4 t2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5), t3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
      store<4>(at(d, j), __builtin_shufflevector(t0, t2, 0, 1, 4, 5));
      store<4>(at(d + 1, j), __builtin_shufflevector(t0, t2, 2, 3, 6, 7));
      store<4>(at(d + 2, j), __builtin_shufflevector(t1, t3, 0, 1, 4, 5));
      store<4>(at(d + 3, j), __builtin_shufflevector(t1, t3, 2, 3, 6, 7));
    }
  for (; j < T; ++j)
    for (std::int64_t d = 0; d < D; ++d) *at(d, j) = src[j * ld + d];
  for (std::int64_t d = 0; d < D; ++d)
    for (j = T; j < Tp; ++j) *at(d, j) = 0.0f;
}

// Zeroed accumulators, one by one: `acc[RB][N] = {}` made GCC clear a copy on the stack with `rep stos` on
// every tile (5% of the forward), although the loop keeps them in registers.
template <int W, int RB, int N>
PIPE_INLINE void zero_tile(vf<W> (&acc)[RB][N]) {
  for (int r = 0; r < RB; ++r)
    for (int k = 0; k < N; ++k) acc[r][k] = vf<W>{};
}

// c[r][0, W NC) = alpha sum_d a[r][d] bt[d][0, W NC) for RB rows, stored up to column `cols` (the row's
// end): scores Q K^T, or dP = dO V^T.
template <int W, int RB, int NC>
PIPE_INLINE void tile_abt(const float* a, std::int64_t lda, const float* bt, std::int64_t ldbt, std::int64_t D,
                          float alpha, float* c, std::int64_t ldc, std::int64_t cols) {
  vf<W> acc[RB][NC];
  zero_tile<W, RB, NC>(acc);
  for (std::int64_t d = 0; d < D; ++d) {
    vf<W> b[NC];
    for (int k = 0; k < NC; ++k) b[k] = load<W>(bt + d * ldbt + k * W);
    for (int r = 0; r < RB; ++r) {
      const vf<W> av = splat<W>(a[r * lda + d]);
      for (int k = 0; k < NC; ++k) acc[r][k] += av * b[k];
    }
  }
  const vf<W> alpha_v = splat<W>(alpha);
  for (int r = 0; r < RB; ++r)
    for (int k = 0; k < NC; ++k) {
      const std::int64_t c0 = k * W;
      if (c0 + W <= cols)
        store<W>(c + r * ldc + c0, acc[r][k] * alpha_v);
      else if (c0 < cols)
        store_tail<W>(c + r * ldc + c0, acc[r][k] * alpha_v, cols - c0);
    }
}

// The tiles' stores: c = alpha acc, or with `accumulate` c = c row_scale[r] + alpha acc (row_scale null: 1), so
// flash attention sums its blocks into its accumulators without a pass over a scratch block.
template <int W, int RB, int N>
PIPE_INLINE void store_tile(vf<W> (&acc)[RB][N], float alpha, float* c, std::int64_t ldc, bool accumulate,
                            const float* row_scale) {
  const vf<W> alpha_v = splat<W>(alpha);
  for (int r = 0; r < RB; ++r) {
    float* cr = c + r * ldc;
    if (!accumulate) {
      for (int v = 0; v < N; ++v) store<W>(cr + v * W, acc[r][v] * alpha_v);
      continue;
    }
    const vf<W> scale_v = splat<W>(row_scale ? row_scale[r] : 1.0f);
    for (int v = 0; v < N; ++v) store<W>(cr + v * W, load<W>(cr + v * W) * scale_v + acc[r][v] * alpha_v);
  }
}

// c[r][0, W NV) = alpha sum_{j < jn} p[r][j] b[j][0, W NV) for RB rows: O = P V, dQ = dS K (stored as
// store_tile says). Entries of p above the diagonal are zeros, so one key range [0, jn) serves all RB rows.
template <int W, int RB, int NV>
PIPE_INLINE void tile_ab(const float* p, std::int64_t ldp, const float* b, std::int64_t ldb, std::int64_t jn,
                         float alpha, float* c, std::int64_t ldc, bool accumulate, const float* row_scale) {
  vf<W> acc[RB][NV];
  zero_tile<W, RB, NV>(acc);
  for (std::int64_t j = 0; j < jn; ++j) {
    vf<W> bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load<W>(b + j * ldb + v * W);
    for (int r = 0; r < RB; ++r) {
      const vf<W> pv = splat<W>(p[r * ldp + j]);
      for (int v = 0; v < NV; ++v) acc[r][v] += pv * bv[v];
    }
  }
  store_tile<W, RB, NV>(acc, alpha, c, ldc, accumulate, row_scale);
}

// c[r][0, W NV) = alpha sum_{i < n} p[i][r] b[i][0, W NV) for RB columns r of p: dK = dS^T Q, dV = P^T dO.
// Key j is seen by queries i >= j only, and p is zero above the diagonal, so the callers start both operands at
// row j0 of the tile's first key. Stored as store_tile says.
template <int W, int RB, int NV>
PIPE_INLINE void tile_atb(const float* p, std::int64_t ldp, const float* b, std::int64_t ldb, std::int64_t n,
                          float alpha, float* c, std::int64_t ldc, bool accumulate, const float* row_scale) {
  vf<W> acc[RB][NV];
  zero_tile<W, RB, NV>(acc);
  for (std::int64_t i = 0; i < n; ++i) {
    vf<W> bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load<W>(b + i * ldb + v * W);
    for (int r = 0; r < RB; ++r) {
      const vf<W> pv = splat<W>(p[i * ldp + r]);
      for (int v = 0; v < NV; ++v) acc[r][v] += pv * bv[v];
    }
  }
  store_tile<W, RB, NV>(acc, alpha, c, ldc, accumulate, row_scale);
}

// Columns per panel of a transposed operand (pack_transposed): one tile's width.
template <int W>
constexpr std::int64_t kPanel = kMaxVectors<W> * W;

// The run-time widths (1 .. kMaxVectors vectors) to the templates; bt is in panels of kPanel<W> columns.
template <int W, int RB>
PIPE_INLINE void abt_rows(const float* a, std::int64_t lda, const float* bt, std::int64_t D, float alpha, float* c,
                          std::int64_t ldc, std::int64_t nvec, std::int64_t cols) {
  constexpr int kMax = kMaxVectors<W>;
  constexpr std::int64_t P = kPanel<W>;
  for (std::int64_t k0 = 0; k0 < nvec; k0 += kMax) {
    const std::int64_t off = k0 * W;
    const float* panel = bt + (k0 / kMax) * D * P;
    switch (std::min<std::int64_t>(kMax, nvec - k0)) {
      case 4:
        tile_abt<W, RB, (kMax >= 4 ? 4 : 1)>(a, lda, panel, P, D, alpha, c + off, ldc, cols - off);
        break;
      case 3:
        tile_abt<W, RB, (kMax >= 3 ? 3 : 1)>(a, lda, panel, P, D, alpha, c + off, ldc, cols - off);
        break;
      case 2:
        tile_abt<W, RB, 2>(a, lda, panel, P, D, alpha, c + off, ldc, cols - off);
        break;
      default:
        tile_abt<W, RB, 1>(a, lda, panel, P, D, alpha, c + off, ldc, cols - off);
        break;
    }
  }
}

template <int W, int RB>
PIPE_INLINE void ab_rows(const float* p, std::int64_t ldp, const float* b, std::int64_t ldb, std::int64_t jn,
                         std::int64_t D, float alpha, float* c, std::int64_t ldc, bool accumulate = false,
                         const float* row_scale = nullptr) {
  constexpr int kMax = kMaxVectors<W>;
  for (std::int64_t d0 = 0; d0 < D; d0 += kMax * W) {
    switch (std::min<std::int64_t>(kMax, (D - d0) / W)) {
      case 4:
        tile_ab<W, RB, (kMax >= 4 ? 4 : 1)>(p, ldp, b + d0, ldb, jn, alpha, c + d0, ldc, accumulate, row_scale);
        break;
      case 3:
        tile_ab<W, RB, (kMax >= 3 ? 3 : 1)>(p, ldp, b + d0, ldb, jn, alpha, c + d0, ldc, accumulate, row_scale);
        break;
      case 2:
        tile_ab<W, RB, 2>(p, ldp, b + d0, ldb, jn, alpha, c + d0, ldc, accumulate, row_scale);
        break;
      default:
        tile_ab<W, RB, 1>(p, ldp, b + d0, ldb, jn, alpha, c + d0, ldc, accumulate, row_scale);
        break;
    }
  }
}

template <int W, int RB>
PIPE_INLINE void atb_rows(const float* p, std::int64_t ldp, const float* b, std::int64_t ldb, std::int64_t n,
                          std::int64_t D, float alpha, float* c, std::int64_t ldc, bool accumulate = false,
                          const float* row_scale = nullptr) {
  constexpr int kMax = kMaxVectors<W>;
  for (std::int64_t d0 = 0; d0 < D; d0 += kMax * W) {
    switch (std::min<std::int64_t>(kMax, (D - d0) / W)) {
      case 4:
        tile_atb<W, RB, (kMax >= 4 ? 4 : 1)>(p, ldp, b + d0, ldb, n, alpha, c + d0, ldc, accumulate, row_scale);
        break;
      case 3:
        tile_atb<W, RB, (kMax >= 3 ? 3 : 1)>(p, ldp, b + d0, ldb, n, alpha, c + d0, ldc, accumulate, row_scale);
        break;
      case 2:
        tile_atb<W, RB, 2>(p, ldp, b + d0, ldb, n, alpha, c + d0, ldc, accumulate, row_scale);
        break;
      default:
        tile_atb<W, RB, 1>(p, ldp, b + d0, ldb, n, alpha, c + d0, ldc, accumulate, row_scale);
        break;
    }
  }
}

// Multiples of 16 suit every width (16, 8, 4).
inline bool tiled(std::int64_t head_dim) { return head_dim % 16 == 0; }

}  // namespace libpipe::cpu::tiles
