// Causal multi-head attention on the GPU, as llm.c does it: Q, K, V are
// permuted out of qkv [B, T, 3C] into head-major [B, H, T, D] scratch, the
// two products per direction are strided-batched GEMMs over the B*H heads
// (the backend's row-major gemm, so tf32/bf16 modes apply here too), and the
// causal softmax and its backward are one warp per row of T scores.
//
// The GEMMs compute whole T x T blocks; the softmax kernels write exact zeros
// above the diagonal, so the products that follow over whole rows stay exact.
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>

#include "ops/cuda/cuda_check.hpp"
#include "ops/cuda/cuda_kernels.hpp"
#include "ops/cuda/device_math.cuh"
#include "ops/cuda/nn_kernels.hpp"
#include "ops/cuda/storage.cuh"
#ifndef PIPE_CUDA_EMULATOR  // the backend's ops at the end of the file
#include "ops/cuda/cuda_backend.hpp"
#include "ops/float32_views.hpp"
#endif

namespace libpipe::cuda {
namespace {

using nn::kWarp;

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;

// Up to three [B, H, T, D] tensors (q, k, v or their gradients), by part.
struct Parts {
  float* p[3];
};
struct ConstParts {
  const float* p[3];
};

// dst.p[part][b, h, t, d] = src[(b T + t) ld + part C + h D + d]: one warp per token row (b, t), reading each
// part's C values in order. V = 4 needs D % 4 == 0 (a vector never straddles two heads) and aligned bases. The
// source is float or bfloat16 (storage.cuh); the head-major copies are float.
template <class S, int V>
__global__ void __launch_bounds__(kThreads)
    split_heads_kernel(const S* __restrict__ src, std::int64_t ld, Parts dst, int parts, std::int64_t B,
                       std::int64_t T, int H, int D) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= B * T) return;
  const std::int64_t b = row / T, t = row % T;
  const int C = H * D;
#pragma unroll
  for (int part = 0; part < 3; ++part) {  // unrolled: constant indices keep the pointers in registers
    if (part >= parts) break;
    const S* s = src + row * ld + static_cast<std::int64_t>(part) * C;
    float* d = dst.p[part];
    for (int c = lane * V; c < C; c += kWarp * V) {
      const int h = c / D, dd = c % D;
      float v[V];
      nn::load_vec<V>(s + c, v);
      nn::store_vec<V>(d + ((b * H + h) * T + t) * D + dd, v);
    }
  }
}

// The inverse: dst[(b T + t) ld + part C + h D + d] = src.p[part][b, h, t, d], dst float or bfloat16.
template <class S, int V>
__global__ void __launch_bounds__(kThreads)
    merge_heads_kernel(ConstParts src, int parts, S* __restrict__ dst, std::int64_t ld, std::int64_t B,
                       std::int64_t T, int H, int D) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= B * T) return;
  const std::int64_t b = row / T, t = row % T;
  const int C = H * D;
#pragma unroll
  for (int part = 0; part < 3; ++part) {  // unrolled: constant indices keep the pointers in registers
    if (part >= parts) break;
    const float* s = src.p[part];
    S* d = dst + row * ld + static_cast<std::int64_t>(part) * C;
    for (int c = lane * V; c < C; c += kWarp * V) {
      const int h = c / D, dd = c % D;
      float v[V];
      nn::load_vec<V>(s + ((b * H + h) * T + t) * D + dd, v);
      nn::store_vec<V>(d + c, v);
    }
  }
}

// In place over the raw scores Q K^T [B H T, T]: row (bh, t) becomes softmax(scale * s[0..t]) followed by
// zeros. One warp per row; each lane keeps an online (max, sum) over its columns (one exp per element), then
// the lanes' pairs are combined. Rows are read and written by the same lane, so in place is safe. Under mixed
// precision `saved` (bfloat16) also receives the probabilities, rounded, for backward.
__global__ void __launch_bounds__(kThreads)
    causal_softmax_kernel(float* p, bf16* saved, std::int64_t rows, std::int64_t T, float scale) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const std::int64_t t = row % T;  // query position: columns [0, t] are live
  float* r = p + row * T;

  float m = -FLT_MAX, s = 0.0f;
  for (std::int64_t j = lane; j <= t; j += kWarp) {
    const float x = r[j] * scale;
    const float e = expf(fminf(m, x) - fmaxf(m, x));  // exp(-|x - m|)
    s = x > m ? s * e + 1.0f : s + e;
    m = fmaxf(m, x);
  }
  const float mx = nn::warp_max(m);
  // A lane without columns has s = 0, so its (possibly huge) exponent contributes nothing.
  const float sum = nn::warp_sum(s * expf(m - mx));
  const float inv = 1.0f / sum;

  bf16* keep = saved != nullptr ? saved + row * T : nullptr;
  for (std::int64_t j = lane; j < T; j += kWarp) {
    r[j] = j <= t ? expf(r[j] * scale - mx) * inv : 0.0f;
    if (keep != nullptr) store(keep, j, r[j]);
  }
}

// In place over dP [B H T, T]: dS = scale * P * (dP - rowsum(dP * P)) on the causal part, zeros above it (the
// gradient GEMMs that follow read whole rows).
template <class P>  // the probabilities' storage: float or bfloat16
__global__ void __launch_bounds__(kThreads)
    causal_softmax_backward_kernel(const P* __restrict__ probs, float* dp, std::int64_t rows, std::int64_t T,
                                   float scale) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const std::int64_t t = row % T;
  const P* pr = probs + row * T;
  float* r = dp + row * T;

  float acc = 0.0f;
  for (std::int64_t j = lane; j <= t; j += kWarp) acc += load(pr, j) * r[j];
  const float pd = nn::warp_sum(acc);

  for (std::int64_t j = lane; j < T; j += kWarp) r[j] = j <= t ? scale * load(pr, j) * (r[j] - pd) : 0.0f;
}

unsigned warp_row_blocks(std::int64_t rows) { return static_cast<unsigned>(nn::ceil_div(rows, kRowsPerBlock)); }

// Float4 permutes need whole vectors inside each head and 16-byte aligned bases (C = H D is then a multiple of
// 4 too, so every row start stays aligned).
template <class S>
bool vec4_ok(int D, const S* packed, std::initializer_list<const float*> head_major) {
  if (D % 4 != 0 || !nn::vec4_aligned(packed)) return false;
  for (const float* p : head_major)
    if (!nn::aligned16(p)) return false;
  return true;
}

template <class S>
void split_heads(const CudaContext& ctx, const S* src, std::int64_t ld, Parts dst, int parts, std::int64_t B,
                 std::int64_t T, int H, int D) {
  const bool vec = vec4_ok(D, src, {dst.p[0], parts > 1 ? dst.p[1] : dst.p[0], parts > 2 ? dst.p[2] : dst.p[0]});
  if (vec)
    split_heads_kernel<S, 4><<<warp_row_blocks(B * T), kThreads, 0, ctx.stream>>>(src, ld, dst, parts, B, T, H, D);
  else
    split_heads_kernel<S, 1><<<warp_row_blocks(B * T), kThreads, 0, ctx.stream>>>(src, ld, dst, parts, B, T, H, D);
  PIPE_CUDA_CHECK_LAUNCH("split_heads_kernel");
}

template <class S>
void merge_heads(const CudaContext& ctx, ConstParts src, int parts, S* dst, std::int64_t ld, std::int64_t B,
                 std::int64_t T, int H, int D) {
  const bool vec = vec4_ok(D, static_cast<const S*>(dst),
                           {src.p[0], parts > 1 ? src.p[1] : src.p[0], parts > 2 ? src.p[2] : src.p[0]});
  if (vec)
    merge_heads_kernel<S, 4><<<warp_row_blocks(B * T), kThreads, 0, ctx.stream>>>(src, parts, dst, ld, B, T, H, D);
  else
    merge_heads_kernel<S, 1><<<warp_row_blocks(B * T), kThreads, 0, ctx.stream>>>(src, parts, dst, ld, B, T, H, D);
  PIPE_CUDA_CHECK_LAUNCH("merge_heads_kernel");
}

// Head-major scratch: `count` tensors of n floats each, each starting on a 256-byte boundary.
struct HeadScratch {
  std::shared_ptr<void> mem;
  std::size_t stride_floats = 0;
  float* at(int i) const { return static_cast<float*>(mem.get()) + static_cast<std::size_t>(i) * stride_floats; }
};

HeadScratch head_scratch(const CudaContext& ctx, std::int64_t n, int count) {
  HeadScratch s;
  s.stride_floats = nn::round_up_256(static_cast<std::size_t>(n) * sizeof(float)) / sizeof(float);
  s.mem = nn::scratch(ctx, s.stride_floats * sizeof(float) * static_cast<std::size_t>(count));
  return s;
}

void check_dims(const char* op, std::int64_t heads, std::int64_t head_dim) {
  // Channels are indexed in int inside the permute kernels.
  if (heads * head_dim * 3 > 0x7fffffff)
    throw Error(std::string(op) + ": " + std::to_string(heads) + " heads of " + std::to_string(head_dim) +
                " channels are too many for the CUDA kernels");
}

// The probabilities in float32 for the GEMMs that read them: the probabilities themselves, or (bfloat16, saved
// by mixed precision) a widened copy in `keep`.
const float* float_probs(const CudaContext&, const float* probs, std::int64_t, std::shared_ptr<void>&) {
  return probs;
}
const float* float_probs(const CudaContext& ctx, const bf16* probs, std::int64_t n, std::shared_ptr<void>& keep) {
  keep = nn::scratch(ctx, static_cast<std::size_t>(n) * sizeof(float));
  from_bf16(ctx, probs, static_cast<float*>(keep.get()), n);
  return static_cast<const float*>(keep.get());
}

// S: the storage of qkv, out, probs and their gradients (float, or bfloat16 under mixed precision). The heads,
// scores and GEMMs are float either way; bfloat16 is read by split_heads and the softmax backward and written by
// merge_heads and the softmax.
template <class S>
void forward(const CudaContext& ctx, const S* qkv, S* out, S* probs, std::int64_t batch, std::int64_t seq,
             std::int64_t heads, std::int64_t head_dim) {
  const std::int64_t B = batch, T = seq, H = heads, D = head_dim, C = H * D;
  if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
  check_dims("attention_forward", H, D);
  const int h32 = static_cast<int>(H), d32 = static_cast<int>(D);
  const std::int64_t n = B * H * T * D;  // one head-major tensor
  const std::int64_t bh = B * H;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  // q, k, v; the attention output per head reuses q's slot once the scores are made.
  HeadScratch s = head_scratch(ctx, n, 3);
  float* q = s.at(0);
  float* k = s.at(1);
  float* v = s.at(2);
  split_heads(ctx, qkv, 3 * C, Parts{{q, k, v}}, 3, B, T, h32, d32);

  // scores[bh] = Q K^T (T x T): straight into float probabilities, which the softmax scales and masks in place;
  // bfloat16 ones are the softmax's rounded copy of a float scratch that the P V product reads.
  float* scores = nullptr;
  bf16* saved = nullptr;
  std::shared_ptr<void> score_mem;
  if constexpr (std::is_same_v<S, float>) {
    scores = probs;
  } else {
    score_mem = nn::scratch(ctx, static_cast<std::size_t>(bh * T * T) * sizeof(float));
    scores = static_cast<float*>(score_mem.get());
    saved = probs;
  }
  ctx.backend->gemm_strided_batched(false, true, T, T, D, 1.0f, q, D, T * D, k, D, T * D, 0.0f, scores, T, T * T,
                                    bh);
  causal_softmax_kernel<<<warp_row_blocks(bh * T), kThreads, 0, ctx.stream>>>(scores, saved, bh * T, T, scale);
  PIPE_CUDA_CHECK_LAUNCH("causal_softmax_kernel");

  // out_h[bh] = P V (T x D), into q's slot, then back to [B, T, C].
  float* out_h = q;
  ctx.backend->gemm_strided_batched(false, false, T, D, T, 1.0f, scores, T, T * T, v, D, T * D, 0.0f, out_h, D,
                                    T * D, bh);
  merge_heads(ctx, ConstParts{{out_h, nullptr, nullptr}}, 1, out, C, B, T, h32, d32);
}

// With P = softmax(scale Q K^T) and O = P V:
//   dV = P^T dO, dP = dO V^T, dS = scale P * (dP - rowsum(dP * P)), dQ = dS K, dK = dS^T Q.
template <class S>
void backward(const CudaContext& ctx, const S* dout, const S* qkv, const S* probs, S* dqkv, std::int64_t batch,
              std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  const std::int64_t B = batch, T = seq, H = heads, D = head_dim, C = H * D;
  if (B <= 0 || T <= 0 || H <= 0 || D <= 0) return;
  check_dims("attention_backward", H, D);
  const int h32 = static_cast<int>(H), d32 = static_cast<int>(D);
  const std::int64_t n = B * H * T * D;
  const std::int64_t bh = B * H;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));

  // Slots 0-3: q, k, v, dO (head-major); slot 4 onwards: dP / dS [B H, T, T]. The gradients reuse slots whose
  // contents are no longer needed (every op runs in order on ctx.stream): dV -> v's, dQ -> dO's, dK -> k's.
  const std::int64_t n_ds = bh * T * T;
  HeadScratch s;
  s.stride_floats = nn::round_up_256(static_cast<std::size_t>(n) * sizeof(float)) / sizeof(float);
  s.mem = nn::scratch(ctx, (4 * s.stride_floats + static_cast<std::size_t>(n_ds)) * sizeof(float));
  float* q = s.at(0);
  float* k = s.at(1);
  float* v = s.at(2);
  float* dO = s.at(3);
  float* ds = s.at(4);
  split_heads(ctx, qkv, 3 * C, Parts{{q, k, v}}, 3, B, T, h32, d32);
  split_heads(ctx, dout, C, Parts{{dO, nullptr, nullptr}}, 1, B, T, h32, d32);

  // dP[bh] = dO V^T (T x T); the last reader of v.
  ctx.backend->gemm_strided_batched(false, true, T, T, D, 1.0f, dO, D, T * D, v, D, T * D, 0.0f, ds, T, T * T, bh);
  // dV[bh] = P^T dO (T x D), into v's slot; the last reader of dO.
  std::shared_ptr<void> probs_mem;
  const float* p32 = float_probs(ctx, probs, n_ds, probs_mem);
  float* dv = v;
  ctx.backend->gemm_strided_batched(true, false, T, D, T, 1.0f, p32, T, T * T, dO, D, T * D, 0.0f, dv, D, T * D, bh);
  causal_softmax_backward_kernel<S><<<warp_row_blocks(bh * T), kThreads, 0, ctx.stream>>>(probs, ds, bh * T, T,
                                                                                          scale);
  PIPE_CUDA_CHECK_LAUNCH("causal_softmax_backward_kernel");
  // dQ[bh] = dS K (T x D), into dO's slot; the last reader of k.
  float* dq = dO;
  ctx.backend->gemm_strided_batched(false, false, T, D, T, 1.0f, ds, T, T * T, k, D, T * D, 0.0f, dq, D, T * D, bh);
  // dK[bh] = dS^T Q (T x D), into k's slot.
  float* dk = k;
  ctx.backend->gemm_strided_batched(true, false, T, D, T, 1.0f, ds, T, T * T, q, D, T * D, 0.0f, dk, D, T * D, bh);

  merge_heads(ctx, ConstParts{{dq, dk, dv}}, 3, dqkv, 3 * C, B, T, h32, d32);
}

}  // namespace

void attention_forward(const CudaContext& ctx, const float* qkv, float* out, float* probs, std::int64_t batch,
                       std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  forward(ctx, qkv, out, probs, batch, seq, heads, head_dim);
}
void attention_forward(const CudaContext& ctx, const bf16* qkv, bf16* out, bf16* probs, std::int64_t batch,
                       std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  forward(ctx, qkv, out, probs, batch, seq, heads, head_dim);
}

void attention_backward(const CudaContext& ctx, const float* dout, const float* qkv, const float* probs, float* dqkv,
                        std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  backward(ctx, dout, qkv, probs, dqkv, batch, seq, heads, head_dim);
}
void attention_backward(const CudaContext& ctx, const bf16* dout, const bf16* qkv, const bf16* probs, bf16* dqkv,
                        std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  backward(ctx, dout, qkv, probs, dqkv, batch, seq, heads, head_dim);
}

// ---- the backend's ops (CudaBackend, pipe/backend_ops.inc) on these kernels; left out of the CUDA-on-CPU
// emulator, which tests the launchers above against the CPU backend.
#ifndef PIPE_CUDA_EMULATOR

void CudaBackend::attention_forward(In qkv, Out out, Out probs, std::int64_t batch, std::int64_t seq,
                                    std::int64_t heads, std::int64_t head_dim) {
  bind();
  if (all_bf16({qkv.dtype, out.dtype, probs.dtype}))
    return cuda::attention_forward(ctx_, bits(qkv), bits(out), bits(probs), batch, seq, heads, head_dim);
  const std::int64_t c = heads * head_dim;
  Float32Views v(*this, "attention_forward");
  cuda::attention_forward(ctx_, v.in(qkv, batch * seq * 3 * c), v.out(out, batch * seq * c),
                          v.out(probs, batch * heads * seq * seq), batch, seq, heads, head_dim);
  v.finish();
}

void CudaBackend::attention_backward(In dout, In qkv, In probs, Out dqkv, std::int64_t batch, std::int64_t seq,
                                     std::int64_t heads, std::int64_t head_dim) {
  bind();
  if (all_bf16({dout.dtype, qkv.dtype, probs.dtype, dqkv.dtype}))
    return cuda::attention_backward(ctx_, bits(dout), bits(qkv), bits(probs), bits(dqkv), batch, seq, heads, head_dim);
  const std::int64_t c = heads * head_dim;
  Float32Views v(*this, "attention_backward");
  cuda::attention_backward(ctx_, v.in(dout, batch * seq * c), v.in(qkv, batch * seq * 3 * c),
                           v.in(probs, batch * heads * seq * seq), v.out(dqkv, batch * seq * 3 * c), batch, seq, heads,
                           head_dim);
  v.finish();
}

#endif  // PIPE_CUDA_EMULATOR

}  // namespace libpipe::cuda
