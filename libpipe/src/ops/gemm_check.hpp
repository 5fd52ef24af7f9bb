// The GEMM argument check every backend applies before calling its BLAS: BLAS
// libraries take int dimensions, so anything that would wrap, and leading
// dimensions too small for the row-major operands, is a libpipe::Error with
// the same message on every device.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "pipe/error.hpp"

namespace libpipe::detail {

inline std::string gemm_dims_str(std::int64_t m, std::int64_t n, std::int64_t k) {
  return "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k);
}

inline void check_gemm(const char* op, bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                       std::int64_t lda, std::int64_t ldb, std::int64_t ldc) {
  const std::int64_t int_max = std::numeric_limits<int>::max();
  if (m < 0 || n < 0 || k < 0 || m > int_max || n > int_max || k > int_max)
    throw Error(std::string(op) + ": dimensions out of range (" + gemm_dims_str(m, n, k) + ")");
  const std::int64_t need_a = std::max<std::int64_t>(1, trans_a ? m : k);
  const std::int64_t need_b = std::max<std::int64_t>(1, trans_b ? k : n);
  const std::int64_t need_c = std::max<std::int64_t>(1, n);
  if (lda < need_a || ldb < need_b || ldc < need_c || lda > int_max || ldb > int_max || ldc > int_max)
    throw Error(std::string(op) + ": leading dimensions lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) +
                " ldc=" + std::to_string(ldc) + " too small for " + gemm_dims_str(m, n, k) +
                " (trans_a=" + std::to_string(trans_a) + ", trans_b=" + std::to_string(trans_b) + ")");
}

}  // namespace libpipe::detail
