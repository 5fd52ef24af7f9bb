// The GEMM sets that layers list in LayerDescription::gemms (see GemmShape in
// pipe/layer.hpp), written once so that every plugin describes a linear map or
// an attention the same way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/layer.hpp"

namespace libpipe {

// A linear map x[rows, in] -> y[rows, out] with weight [out, in]: the forward
// y = x W^T, the input gradient dx = dy W and the weight gradient dW += dy^T x.
// `rows` is per sample (tokens for a [T, C] input).
PIPE_API void add_linear_gemms(std::vector<GemmShape>& gemms, const std::string& layer, std::int64_t rows,
                               std::int64_t in, std::int64_t out);

// Causal attention over `heads` heads of [T, D] per sample (per-head contiguous
// layout): the scores QK^T and PV forward; dP, dV, dQ and dK backward.
PIPE_API void add_attention_gemms(std::vector<GemmShape>& gemms, const std::string& layer, std::int64_t heads,
                                  std::int64_t seq, std::int64_t head_dim);

}  // namespace libpipe
