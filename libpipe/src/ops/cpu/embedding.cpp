// GPT-2's embedding on the CPU: token and position rows added; the backward
// scatter-adds into the token table.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "cpu_backend.hpp"
#include "cpu_math.hpp"
#include "ops/float32_views.hpp"
#include "pipe/error.hpp"

namespace libpipe::cpu {

// ---- embedding

namespace {

template <int W>
PIPE_INLINE void embedding_kernel(const std::int32_t* tokens, const float* wte, const float* wpe, float* out,
                                  std::int64_t batch, std::int64_t seq, std::int64_t dim) {
  for (std::int64_t r = 0; r < batch * seq; ++r) {
    const float* e = wte + static_cast<std::int64_t>(tokens[r]) * dim;
    float* o = out + r * dim;
    if (wpe == nullptr) {
      for (std::int64_t c = 0; c < dim; ++c) o[c] = e[c];
      continue;
    }
    const float* p = wpe + (r % seq) * dim;
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
      for (std::int64_t c = 0; c < dim; ++c) e[c] += g[c];
      if (dwpe == nullptr) continue;
      float* p = dwpe + t * dim;
      for (std::int64_t c = 0; c < dim; ++c) p[c] += g[c];
    }
}
PIPE_ISA_DISPATCH(embedding_backward_kernel,
                  (const std::int32_t* tokens, const float* dout, float* dwte, float* dwpe, std::int64_t batch,
                   std::int64_t seq, std::int64_t dim),
                  (tokens, dout, dwte, dwpe, batch, seq, dim))

}  // namespace

void CpuBackend::embedding_forward(const std::int32_t* tokens, In wte, In wpe, Out out, std::int64_t batch,
                                   std::int64_t seq, std::int64_t dim, std::int64_t vocab) {
  const std::int64_t rows = batch * seq;
  for (std::int64_t r = 0; r < rows; ++r)
    if (tokens[r] < 0 || tokens[r] >= vocab)
      throw Error("embedding: token " + std::to_string(tokens[r]) + " at row " + std::to_string(r) + " (sample " +
                  std::to_string(r / seq) + ", position " + std::to_string(r % seq) + ") is outside [0, " +
                  std::to_string(vocab) + ")");
  Float32Views v(*this, "embedding_forward");
  // Only the first `seq` rows of wpe are read.
  const float* positions = wpe.data == nullptr ? nullptr : v.in(wpe, seq * dim);
  embedding_kernel_any(tokens, v.in(wte, vocab * dim), positions, v.out(out, rows * dim), batch, seq, dim);
  v.finish();
}

// dwte[token] += dout (scatter-add), dwpe[t] += sum_b dout[b, t]
void CpuBackend::embedding_backward(const std::int32_t* tokens, In dout, float* dwte, float* dwpe, std::int64_t batch,
                                    std::int64_t seq, std::int64_t dim) {
  Float32Views v(*this, "embedding_backward");
  embedding_backward_kernel_any(tokens, v.in(dout, batch * seq * dim), dwte, dwpe, batch, seq, dim);
}

}  // namespace libpipe::cpu
