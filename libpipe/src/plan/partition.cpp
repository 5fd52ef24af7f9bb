// The partitioner: uniform splits and bottleneck-optimal balanced splits.
//
// partition_balanced bisects on the bottleneck. For a candidate limit, a
// greedy sweep that makes each stage as long as the limit allows decides in
// O(S log n) whether S stages suffice; the smallest feasible limit is the
// optimum. Candidates are integers when every weight is (exact), otherwise the
// bit patterns of non-negative doubles, which order like their values, so the
// bisection ends on the smallest representable feasible limit instead of
// stopping at a tolerance.
#include "pipe/partition.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "pipe/error.hpp"
#include "run_sums.hpp"

namespace libpipe {
namespace {

// Shortest text that reads back as the same double ("0.1", not "0.10000000000000001").
std::string number_str(double value) {
  char buffer[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

std::string layers_str(std::int64_t n) { return std::to_string(n) + (n == 1 ? " layer" : " layers"); }
std::string stages_str(int s) { return std::to_string(s) + (s == 1 ? " stage" : " stages"); }

void check_stage_count(int num_stages) {
  if (num_stages < 1)
    throw Error("the number of pipeline stages must be at least 1, got " + std::to_string(num_stages));
}

void check_layer_count(std::int64_t num_layers, int num_stages) {
  if (num_layers > std::numeric_limits<int>::max())
    throw Error("cannot partition " + std::to_string(num_layers) + " layers: at most " +
                std::to_string(std::numeric_limits<int>::max()) + " are supported");
  if (num_layers < num_stages)
    throw Error("cannot split " + layers_str(num_layers) + " into " + stages_str(num_stages) +
                ": every stage needs at least one layer");
}

void check_weights(const std::vector<double>& weights) {
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (!std::isfinite(weights[i]) || weights[i] < 0)
      throw Error("layer " + std::to_string(i) + " has weight " + number_str(weights[i]) +
                  ": partition weights must be finite and non-negative");
}

// Can `count` items be cut into at most `stages` non-empty runs whose sums
// are all <= limit? Greedy from the left, each run as long as the limit
// allows: no other cut reaches further with the same number of runs.
template <class Sum, class Limit>
bool fits(const Sum& sum, std::size_t count, int stages, Limit limit) {
  std::size_t a = 0;
  for (int used = 0; a < count; ++used) {
    if (used == stages || sum(a, a + 1) > limit) return false;
    // Largest b in (a, count] with sum(a, b) <= limit.
    std::size_t lo = a + 1, hi = count;
    while (lo < hi) {
      std::size_t mid = lo + (hi - lo + 1) / 2;
      if (sum(a, mid) <= limit)
        lo = mid;
      else
        hi = mid - 1;
    }
    a = lo;
  }
  return true;
}

// The tie-break: with an optimal limit, cut from the right, starting every
// run as far left as the limit allows while leaving one item for each stage
// before it. By exchange, each start is <= the same start in any partition
// that meets the limit, so this is the componentwise-leftmost optimum.
// Returns the first item of stages 1..S-1.
template <class Sum, class Limit>
std::vector<std::size_t> cut_from_right(const Sum& sum, std::size_t count, int stages, Limit limit) {
  std::vector<std::size_t> starts(static_cast<std::size_t>(stages), 0);
  std::size_t end = count;
  for (int s = stages - 1; s >= 1; --s) {
    auto first = static_cast<std::size_t>(s);  // stages 0..s-1 need one item each
    // Smallest a in [first, end-1] with sum(a, end) <= limit; sum(end-1, end)
    // fits because a single item never outweighs the optimum.
    std::size_t lo = first, hi = end - 1;
    while (lo < hi) {
      std::size_t mid = lo + (hi - lo) / 2;
      if (sum(mid, end) <= limit)
        hi = mid;
      else
        lo = mid + 1;
    }
    starts[static_cast<std::size_t>(s)] = lo;
    end = lo;
  }
  if (sum(0, end) > limit) throw Error("internal error in partition_balanced: stage 0 exceeds the optimal bottleneck");
  return starts;
}

// The V-shaped cut (partition_balanced_v_shape) for a limit: can `count` items be cut into 2S non-empty runs of
// at most `cap` each, stage r holding runs r and 2S-1-r, each stage's two runs summing to <= limit? Worked outside
// in: once stages
// 0..r-1 have taken their runs, what is left is one interval [L, R), and reach[r] marks the intervals stage r
// can start from. Stage S-1 takes the middle interval whole (its two runs are adjacent).
template <class Sum, class Weight>
class VShapeCut {
 public:
  VShapeCut(const Sum& sum, std::size_t count, int stages, Weight cap)
      : sum_(sum), m_(count), stages_(stages), cap_(cap) {}

  template <class Limit>
  bool fits(Limit limit) {
    const std::size_t w = m_ + 1;
    reach_.assign(static_cast<std::size_t>(stages_), std::vector<char>());
    reach_[0].assign(w * w, 0);
    reach_[0][m_] = 1;  // [0, m)
    for (int r = 0; r + 1 < stages_; ++r) {
      const std::size_t need = 2 * static_cast<std::size_t>(stages_ - 1 - r);  // items the later stages need
      std::vector<int> marks(w * (w + 1), 0);  // per row a: +1 at the first b of a run of reachable b, -1 after it
      bool any = false;
      for (std::size_t L = 0; L < w; ++L)
        for (std::size_t R = L + need + 2; R < w; ++R) {
          if (!reach_[static_cast<std::size_t>(r)][L * w + R]) continue;
          std::size_t b = 0;  // the first right cut that fits, for the current a; only grows with a
          for (std::size_t a = L + 1; a + need < R; ++a) {
            const auto left = sum_(L, a);
            if (left > limit || left > cap_) break;
            b = std::max(b, a + need);
            while (b < R && (left + sum_(b, R) > limit || sum_(b, R) > cap_)) ++b;
            if (b >= R) break;  // a larger a leaves less room for the right run
            marks[a * (w + 1) + b] += 1;
            marks[a * (w + 1) + R] -= 1;
            any = true;
          }
        }
      if (!any) return false;
      std::vector<char>& next = reach_[static_cast<std::size_t>(r) + 1];
      next.assign(w * w, 0);
      for (std::size_t a = 0; a < w; ++a) {
        int open = 0;
        for (std::size_t b = 0; b < w; ++b) {
          open += marks[a * (w + 1) + b];
          next[a * w + b] = open > 0 ? 1 : 0;
        }
      }
    }
    const std::vector<char>& last = reach_.back();
    for (std::size_t L = 0; L < w; ++L)
      for (std::size_t R = L + 2; R < w; ++R)
        if (last[L * w + R] && middle_split(L, R, limit) != 0) return true;
    return false;
  }

  // The 2S+1 cuts of a partition that meets `limit`, after fits(limit) returned true. The middle stage's two runs
  // split its interval as evenly as its items allow (it balances the two chunks a schedule runs one after another).
  template <class Limit>
  std::vector<std::size_t> cuts(Limit limit) const {
    const std::size_t w = m_ + 1;
    const auto S = static_cast<std::size_t>(stages_);
    std::vector<std::size_t> cut(2 * S + 1, 0);
    cut[2 * S] = m_;
    std::size_t L = 0, R = 0;
    bool found = false;
    std::size_t mid = 0;
    for (std::size_t l = 0; l < w && !found; ++l)
      for (std::size_t r = l + 2; r < w && !found; ++r)
        if (reach_.back()[l * w + r] && (mid = middle_split(l, r, limit)) != 0) {
          L = l;
          R = r;
          found = true;
        }
    cut[S - 1] = L;
    cut[S] = mid;
    cut[S + 1] = R;
    // Back out: for stage r, an interval [l, r) of reach[r] whose two runs [l, L) and [R, r) fit.
    for (std::size_t st = S - 1; st-- > 0;) {
      found = false;
      for (std::size_t l = 0; l < L && !found; ++l)
        for (std::size_t r = R + 1; r < w && !found; ++r)
          if (reach_[st][l * w + r] && sum_(l, L) + sum_(R, r) <= limit && sum_(l, L) <= cap_ &&
              sum_(R, r) <= cap_) {
            cut[st] = l;
            cut[2 * S - st] = r;
            L = l;
            R = r;
            found = true;
          }
      if (!found) throw Error("internal error in partition_balanced_v_shape: no way back from stage " +
                              std::to_string(st + 1));
    }
    return cut;
  }

 private:
  // The middle stage holds [L, R) as two chunks [L, x) and [x, R), its weight their sum (as every stage's is
  // summed, chunk by chunk). The x whose larger chunk is lightest among those within the limit, or 0 if none is.
  template <class Limit>
  std::size_t middle_split(std::size_t L, std::size_t R, Limit limit) const {
    std::size_t best = 0;
    for (std::size_t x = L + 1; x < R; ++x)
      if (sum_(L, x) + sum_(x, R) <= limit && sum_(L, x) <= cap_ && sum_(x, R) <= cap_ &&
          (best == 0 || std::max(sum_(L, x), sum_(x, R)) < std::max(sum_(L, best), sum_(best, R))))
        best = x;
    return best;
  }

  const Sum& sum_;
  std::size_t m_;
  int stages_;
  Weight cap_;
  std::vector<std::vector<char>> reach_;
};

}  // namespace

Parts partition_uniform(std::int64_t num_layers, int num_stages) {
  check_stage_count(num_stages);
  check_layer_count(num_layers, num_stages);
  const std::int64_t base = num_layers / num_stages, extra = num_layers % num_stages;
  Parts parts(static_cast<std::size_t>(num_stages) + 1, 0);
  for (int s = 0; s < num_stages; ++s)
    parts[static_cast<std::size_t>(s) + 1] =
        parts[static_cast<std::size_t>(s)] + static_cast<int>(base + (s < extra ? 1 : 0));
  return parts;
}

Parts partition_balanced(const std::vector<double>& weights, int num_stages) {
  check_stage_count(num_stages);
  check_weights(weights);
  const auto n = static_cast<std::int64_t>(weights.size());
  check_layer_count(n, num_stages);

  // Only the positive-weight layers take part in the search; the zeros are
  // placed afterwards by the rule in the header. Without zeros (the usual
  // case) the weights are used as they are.
  const auto count_positive =
      static_cast<std::size_t>(std::count_if(weights.begin(), weights.end(), [](double w) { return w > 0; }));
  std::vector<int> positive;
  std::vector<double> compressed;
  if (count_positive < weights.size()) {
    positive.reserve(count_positive);
    compressed.reserve(count_positive);
    for (std::size_t i = 0; i < weights.size(); ++i)
      if (weights[i] > 0) {
        positive.push_back(static_cast<int>(i));
        compressed.push_back(weights[i]);
      }
  }
  const std::vector<double>& items = count_positive < weights.size() ? compressed : weights;
  const std::size_t count = items.size();
  if (count < static_cast<std::size_t>(num_stages)) {
    std::string have = count == 0   ? "no layer has weight"
                       : count == 1 ? "only 1 layer has weight"
                                    : "only " + std::to_string(count) + " layers have weight";
    std::string stages = num_stages == 1 ? "there is 1 stage" : "there are " + std::to_string(num_stages) + " stages";
    throw Error(have + " but " + stages + ": every stage needs at least one");
  }

  const RunSums sums(items);
  std::vector<std::size_t> starts;
  if (sums.integral()) {
    auto sum = [&](std::size_t a, std::size_t b) { return sums.int_sum(a, b); };
    // The optimum lies between the lower bound max(max weight, ceil(total/S))
    // and the total.
    const std::int64_t total = sum(0, count);
    std::int64_t lo = total / num_stages + (total % num_stages != 0 ? 1 : 0);
    for (std::size_t i = 0; i < count; ++i) lo = std::max(lo, sum(i, i + 1));
    std::int64_t hi = total;
    while (lo < hi) {
      std::int64_t mid = lo + (hi - lo) / 2;
      if (fits(sum, count, num_stages, mid))
        hi = mid;
      else
        lo = mid + 1;
    }
    starts = cut_from_right(sum, count, num_stages, lo);
  } else {
    auto sum = [&](std::size_t a, std::size_t b) { return sums.sum(a, b); };
    // Non-negative doubles order like their bit patterns. The largest single
    // item is a lower bound here too (a run never sums below any of its
    // items, rounding included); the whole run is feasible.
    double largest = 0;
    for (std::size_t i = 0; i < count; ++i) largest = std::max(largest, sum(i, i + 1));
    std::uint64_t lo = bits_of(largest), hi = bits_of(sum(0, count));
    while (lo < hi) {
      std::uint64_t mid = lo + (hi - lo) / 2;
      if (fits(sum, count, num_stages, double_of(mid)))
        hi = mid;
      else
        lo = mid + 1;
    }
    starts = cut_from_right(sum, count, num_stages, double_of(lo));
  }

  Parts parts(static_cast<std::size_t>(num_stages) + 1, 0);
  for (std::size_t s = 1; s < starts.size(); ++s)
    parts[s] = positive.empty() ? static_cast<int>(starts[s]) : positive[starts[s]];
  parts.back() = static_cast<int>(n);
  return parts;
}

Parts partition_balanced_v_shape(const std::vector<double>& weights, int num_stages) {
  check_stage_count(num_stages);
  check_weights(weights);
  const int chunks = 2 * num_stages;
  check_layer_count(static_cast<std::int64_t>(weights.size()), chunks);
  std::vector<int> positive;
  std::vector<double> items;
  for (std::size_t i = 0; i < weights.size(); ++i)
    if (weights[i] > 0) {
      positive.push_back(static_cast<int>(i));
      items.push_back(weights[i]);
    }
  const std::size_t count = items.size();
  if (count < static_cast<std::size_t>(chunks)) {
    std::string have = count == 0   ? "no layer has weight"
                       : count == 1 ? "only 1 layer has weight"
                                    : "only " + std::to_string(count) + " layers have weight";
    throw Error(have + " but there are " + std::to_string(chunks) + " chunks (" + stages_str(num_stages) +
                " x 2): every chunk needs at least one");
  }
  if (count > kVShapeExactLimit) return partition_balanced(weights, chunks);

  const RunSums sums(items);
  // The chunks balanced one by one: their largest chunk is the cap (no chunk grows beyond the optimum), and
  // their largest stage, summed as the search sums, a limit that fits.
  const Parts by_chunk = partition_balanced(items, chunks);
  auto largest_chunk = [&](const auto& sum) {
    auto worst = sum(0, 0);
    for (std::size_t c = 0; c < static_cast<std::size_t>(chunks); ++c)
      worst = std::max(worst, sum(static_cast<std::size_t>(by_chunk[c]), static_cast<std::size_t>(by_chunk[c + 1])));
    return worst;
  };
  auto chunkwise = [&](const auto& sum) {
    auto worst = sum(0, 0);
    for (std::size_t s = 0; s < static_cast<std::size_t>(num_stages); ++s) {
      const std::size_t mirror = static_cast<std::size_t>(chunks) - 1 - s;
      worst = std::max(worst, sum(static_cast<std::size_t>(by_chunk[s]), static_cast<std::size_t>(by_chunk[s + 1])) +
                                  sum(static_cast<std::size_t>(by_chunk[mirror]),
                                      static_cast<std::size_t>(by_chunk[mirror + 1])));
    }
    return worst;
  };
  std::vector<std::size_t> cut;
  if (sums.integral()) {
    auto sum = [&](std::size_t a, std::size_t b) { return sums.int_sum(a, b); };
    VShapeCut<decltype(sum), std::int64_t> search(sum, count, num_stages, largest_chunk(sum));
    // Between the mean stage and what balancing the chunks one by one reaches.
    const std::int64_t total = sum(0, count);
    std::int64_t lo = total / num_stages + (total % num_stages != 0 ? 1 : 0), hi = chunkwise(sum);
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo) / 2;
      if (search.fits(mid))
        hi = mid;
      else
        lo = mid + 1;
    }
    if (!search.fits(lo)) throw Error("internal error in partition_balanced_v_shape: the chunkwise cut does not fit");
    cut = search.cuts(lo);
  } else {
    auto sum = [&](std::size_t a, std::size_t b) { return sums.sum(a, b); };
    VShapeCut<decltype(sum), double> search(sum, count, num_stages, largest_chunk(sum));
    std::uint64_t lo = 0, hi = bits_of(chunkwise(sum));
    while (lo < hi) {
      const std::uint64_t mid = lo + (hi - lo) / 2;
      if (search.fits(double_of(mid)))
        hi = mid;
      else
        lo = mid + 1;
    }
    if (!search.fits(double_of(lo)))
      throw Error("internal error in partition_balanced_v_shape: the chunkwise cut does not fit");
    cut = search.cuts(double_of(lo));
  }
  // Zero-weight layers by partition_balanced's rule: every chunk after the first starts at a weighted layer.
  Parts parts(static_cast<std::size_t>(chunks) + 1, 0);
  for (std::size_t c = 1; c < static_cast<std::size_t>(chunks); ++c) parts[c] = positive[cut[c]];
  parts.back() = static_cast<int>(weights.size());
  return parts;
}

std::vector<double> v_shape_stage_weights(const std::vector<double>& weights, const Parts& parts) {
  const std::vector<double> chunk = stage_weights(weights, parts);
  if (chunk.size() % 2 != 0)
    throw Error("a V-shaped partition has an even number of chunks, got " + std::to_string(chunk.size()));
  const std::size_t stages = chunk.size() / 2;
  std::vector<double> out(stages);
  for (std::size_t s = 0; s < stages; ++s) out[s] = chunk[s] + chunk[2 * stages - 1 - s];
  return out;
}

void validate_parts(const Parts& parts, std::int64_t num_layers) {
  if (parts.size() < 2)
    throw Error("a partition needs at least 2 boundaries (0 and the layer count " + std::to_string(num_layers) +
                "), got " + std::to_string(parts.size()));
  if (parts[0] != 0) throw Error("a partition must start at layer 0, but parts[0] = " + std::to_string(parts[0]));
  for (std::size_t s = 0; s + 1 < parts.size(); ++s) {
    const std::string here = "parts[" + std::to_string(s) + "] = ";
    const std::string next = "parts[" + std::to_string(s + 1) + "] = ";
    if (parts[s + 1] == parts[s])
      throw Error("stage " + std::to_string(s) + " is empty: " + here + next + std::to_string(parts[s]));
    if (parts[s + 1] < parts[s])
      throw Error("partition boundaries must increase, but " + here + std::to_string(parts[s]) + " > " + next +
                  std::to_string(parts[s + 1]));
  }
  if (parts.back() != num_layers)
    throw Error("a partition of " + layers_str(num_layers) + " must end at " + std::to_string(num_layers) +
                ", but parts[" + std::to_string(parts.size() - 1) + "] = " + std::to_string(parts.back()));
}

std::vector<double> stage_weights(const std::vector<double>& weights, const Parts& parts) {
  check_weights(weights);
  validate_parts(parts, static_cast<std::int64_t>(weights.size()));
  const RunSums sums(weights);
  std::vector<double> out;
  out.reserve(parts.size() - 1);
  for (std::size_t s = 0; s + 1 < parts.size(); ++s)
    out.push_back(sums.sum(static_cast<std::size_t>(parts[s]), static_cast<std::size_t>(parts[s + 1])));
  return out;
}

double bottleneck(const std::vector<double>& weights, const Parts& parts) {
  auto w = stage_weights(weights, parts);
  return *std::max_element(w.begin(), w.end());
}

}  // namespace libpipe
