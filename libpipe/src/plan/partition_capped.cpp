// Partitioning under a per-stage cap (see partition_capped.hpp).
//
// For a bottleneck T and a cap L, a stage s may hold [a, b) when its weight is
// <= T and cost(s, a, b) <= L. Both only grow with the range, so a sub-range
// of an allowed range is allowed. The search keeps, for each s, the set of
// boundaries reachable after s stages as sorted disjoint intervals. From a run
// of starts p..q that can each hold at least their own layer, the ends reached
// are exactly p+1 .. f(q), f(a) being the farthest end from a (f only grows
// along such a run). Where a single layer alone breaks the cap on stage s
// ("blocked"), no range of stage s holds it, so the runs are cut there. With
// few blocked layers a stage costs a few binary searches, and the smallest
// feasible T is found by bisection over the bit patterns of doubles, as
// partition_balanced finds its own.
#include "pipe/partition_capped.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "pipe/error.hpp"
#include "run_sums.hpp"

namespace libpipe {
namespace {

struct Interval {
  int lo, hi;  // inclusive
};

class CappedSearch {
 public:
  CappedSearch(const RunSums& sums, int n, int stages, const StageCost& cost)
      : sums_(sums), n_(n), stages_(stages), cost_(cost) {}

  // Fixes the cap and finds, per stage, the layers that alone exceed it there.
  void set_cap(double cap) {
    cap_ = cap;
    blocked_.assign(static_cast<std::size_t>(stages_), {});
    for (int s = 0; s < stages_; ++s) find_blocked(s, s, n_ - (stages_ - 1 - s), blocked_[static_cast<std::size_t>(s)]);
  }

  // Whether some partition has every stage's weight <= `weight_limit` (and cost within the cap).
  bool fits(double weight_limit) {
    weight_limit_ = weight_limit;
    reach_.assign(static_cast<std::size_t>(stages_) + 1, {});
    reach_[0] = {{0, 0}};
    for (int s = 0; s < stages_; ++s) {
      const int last_end = n_ - (stages_ - 1 - s);  // leave a layer for each later stage
      const std::vector<int>& blocked = blocked_[static_cast<std::size_t>(s)];
      std::vector<Interval>& next = reach_[static_cast<std::size_t>(s) + 1];
      for (const Interval& from : reach_[static_cast<std::size_t>(s)]) {
        int p = from.lo;
        const int top = std::min(from.hi, last_end - 1);
        while (p <= top) {
          // The run of starts from p up to the next blocked layer (or the interval's end).
          auto it = std::lower_bound(blocked.begin(), blocked.end(), p);
          if (it != blocked.end() && *it == p) {
            ++p;
            continue;
          }
          // q can hold itself: not blocked, and no weight exceeds the limit (the search starts at the largest).
          const int q = std::min(top, it == blocked.end() ? top : *it - 1);
          add(next, {p + 1, farthest(s, q, last_end)});
          p = q + 1;
        }
      }
      if (next.empty()) return false;
    }
    return reach_.back().back().hi == n_;
  }

  // The cut of the last successful fits(): each stage, from the last, starts as early as it can.
  Parts cut() const {
    Parts parts(static_cast<std::size_t>(stages_) + 1, 0);
    parts.back() = n_;
    int end = n_;
    for (int s = stages_ - 1; s >= 1; --s) {
      // Smallest a with stage s allowed to hold [a, end): the allowed starts are an interval ending at end - 1.
      int lo = s, hi = end - 1;
      while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (allowed(s, mid, end))
          hi = mid;
        else
          lo = mid + 1;
      }
      int start = -1;
      for (const Interval& in : reach_[static_cast<std::size_t>(s)])
        if (in.hi >= lo) {
          start = std::max(in.lo, lo);
          break;
        }
      if (start < 0 || start >= end || !allowed(s, start, end))
        throw Error("internal error in partition_balanced_capped: no way back from stage " + std::to_string(s));
      parts[static_cast<std::size_t>(s)] = start;
      end = start;
    }
    if (!allowed(0, 0, end)) throw Error("internal error in partition_balanced_capped: stage 0 does not fit");
    return parts;
  }

 private:
  bool allowed(int s, int a, int b) const {
    return sums_.sum(static_cast<std::size_t>(a), static_cast<std::size_t>(b)) <= weight_limit_ && cost_(s, a, b) <= cap_;
  }

  // The largest b in (a, last_end] with [a, b) allowed; a itself when not even [a, a+1) is.
  int farthest(int s, int a, int last_end) const {
    if (!allowed(s, a, a + 1)) return a;
    int lo = a + 1, hi = last_end;
    while (lo < hi) {
      const int mid = lo + (hi - lo + 1) / 2;
      if (allowed(s, a, mid))
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo;
  }

  // Layers in [a, b) whose cost alone exceeds the cap on stage s, ascending. A range whose whole cost fits holds
  // none (the cost only grows with the range), so halving finds them in O((blocked + fitting blocks) log n).
  void find_blocked(int s, int a, int b, std::vector<int>& out) const {
    if (a >= b || cost_(s, a, b) <= cap_) return;
    if (b - a == 1) {
      out.push_back(a);
      return;
    }
    const int mid = a + (b - a) / 2;
    find_blocked(s, a, mid, out);
    find_blocked(s, mid, b, out);
  }

  static void add(std::vector<Interval>& list, Interval in) {
    if (!list.empty() && in.lo <= list.back().hi + 1) {
      list.back().hi = std::max(list.back().hi, in.hi);
      list.back().lo = std::min(list.back().lo, in.lo);
      return;
    }
    list.push_back(in);
  }

  const RunSums& sums_;
  int n_, stages_;
  const StageCost& cost_;
  double cap_ = 0, weight_limit_ = 0;
  std::vector<std::vector<int>> blocked_;
  std::vector<std::vector<Interval>> reach_;
};

void check_inputs(std::int64_t n, int stages) {
  if (stages < 1) throw Error("the number of pipeline stages must be at least 1, got " + std::to_string(stages));
  if (n > std::numeric_limits<int>::max()) throw Error("cannot partition " + std::to_string(n) + " layers");
  if (n < stages)
    throw Error("cannot split " + std::to_string(n) + " layers into " + std::to_string(stages) +
                " stages: every stage needs at least one layer");
}

}  // namespace

Parts partition_balanced_capped(const std::vector<double>& weights, int num_stages, const StageCost& cost,
                                double limit) {
  check_inputs(static_cast<std::int64_t>(weights.size()), num_stages);
  const int n = static_cast<int>(weights.size());
  // partition_balanced checks the weights; its optimum is the lower bound, and its cut the answer when it fits.
  double lower = 0;
  try {
    const Parts balanced = partition_balanced(weights, num_stages);
    bool fits = true;
    for (int s = 0; s < num_stages && fits; ++s)
      fits = cost(s, balanced[static_cast<std::size_t>(s)], balanced[static_cast<std::size_t>(s) + 1]) <= limit;
    if (fits) return balanced;
    lower = bottleneck(weights, balanced);
  } catch (const Error&) {
    stage_weights(weights, partition_uniform(n, num_stages));  // rethrows a bad weight; too few weighted is fine
  }
  const RunSums sums(weights);
  for (int i = 0; i < n; ++i)  // every layer is on some stage: no bottleneck is below the heaviest
    lower = std::max(lower, sums.sum(static_cast<std::size_t>(i), static_cast<std::size_t>(i) + 1));
  CappedSearch search(sums, n, num_stages, cost);
  search.set_cap(limit);
  const double total = sums.sum(0, static_cast<std::size_t>(n));
  if (!search.fits(total)) throw Error("no partition into " + std::to_string(num_stages) + " stages fits the cap");
  std::uint64_t lo = bits_of(lower), hi = bits_of(total);
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    if (search.fits(double_of(mid)))
      hi = mid;
    else
      lo = mid + 1;
  }
  if (!search.fits(double_of(lo))) throw Error("internal error in partition_balanced_capped: the optimum does not fit");
  return search.cut();
}

double smallest_peak_cost(int num_layers, int num_stages, const StageCost& cost) {
  check_inputs(num_layers, num_stages);
  const std::vector<double> none(static_cast<std::size_t>(num_layers), 0.0);
  const RunSums sums(none);
  CappedSearch search(sums, num_layers, num_stages, cost);
  // Every stage's range lies inside [0, n), so the largest whole-model cost fits; the search is over the caps.
  double top = 0;
  for (int s = 0; s < num_stages; ++s) top = std::max(top, cost(s, 0, num_layers));
  if (!std::isfinite(top) || top < 0) throw Error("smallest_peak_cost: costs must be finite and non-negative");
  // Halve until a cap fails, then bisect between it and the last that fitted. Far below the answer nearly every
  // layer is blocked and a cap costs O(n) per stage; halving never goes below half the answer.
  double fitted = top, failed = top;
  for (;;) {
    failed = fitted / 2;
    if (failed == 0) return 0;
    search.set_cap(failed);
    if (!search.fits(0.0)) break;
    fitted = failed;
  }
  std::uint64_t lo = bits_of(failed) + 1, hi = bits_of(fitted);
  while (lo < hi) {
    const std::uint64_t mid = lo + (hi - lo) / 2;
    search.set_cap(double_of(mid));
    if (search.fits(0.0))
      hi = mid;
    else
      lo = mid + 1;
  }
  return double_of(lo);
}

}  // namespace libpipe
