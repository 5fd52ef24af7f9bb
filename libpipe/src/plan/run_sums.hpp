// Sums of runs of partition weights, shared by the partitioners (partition.cpp,
// partition_capped.cpp) so that every feasibility test and every reported
// stage weight is computed one way (internal; see partition.hpp, "exact").
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace libpipe {

// Sums of runs of weights, computed the same way for every caller so that the
// partitioner's feasibility test and the reported stage weights agree bit for
// bit. Built over the full weight list or over its positive entries only: the
// zeros in between add exactly nothing in either arithmetic.
class RunSums {
 public:
  explicit RunSums(const std::vector<double>& weights) {
    // 2^63: the first double that no longer fits in int64.
    constexpr double kInt64Limit = 9223372036854775808.0;
    ints_.resize(weights.size() + 1);
    ints_[0] = 0;
    for (std::size_t i = 0; i < weights.size(); ++i) {
      const double w = weights[i];
      if (w != std::floor(w) || w >= kInt64Limit ||
          static_cast<std::int64_t>(w) > std::numeric_limits<std::int64_t>::max() - ints_[i]) {
        integral_ = false;
        break;
      }
      ints_[i + 1] = ints_[i] + static_cast<std::int64_t>(w);
    }
    if (!integral_) {
      ints_ = {};
      reals_.resize(weights.size() + 1);
      reals_[0] = 0.0L;
      for (std::size_t i = 0; i < weights.size(); ++i) reals_[i + 1] = reals_[i] + weights[i];
    }
  }

  bool integral() const { return integral_; }
  // Items [a, b), exactly; only when integral().
  std::int64_t int_sum(std::size_t a, std::size_t b) const { return ints_[b] - ints_[a]; }
  // Items [a, b) as a double. Rounding is monotone, so this never decreases
  // when the run grows at either end, which is all the greedy sweeps need.
  double sum(std::size_t a, std::size_t b) const {
    if (integral_) return static_cast<double>(int_sum(a, b));
    return static_cast<double>(reals_[b] - reals_[a]);
  }

 private:
  bool integral_ = true;
  std::vector<std::int64_t> ints_;
  std::vector<long double> reals_;
};

// Non-negative doubles order like their bit patterns: a bisection over the
// patterns ends on the smallest representable value that passes a test.
inline std::uint64_t bits_of(double value) {
  std::uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

inline double double_of(std::uint64_t bits) {
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

}  // namespace libpipe
