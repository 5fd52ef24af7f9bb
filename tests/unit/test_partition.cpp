// The partitioner against DeepSpeed's uniform split, against brute force
// (every composition of small random cases: the balanced bottleneck must be
// the true minimum, bit for bit), against its documented tie-break and
// zero-weight placement, and against the exact text of its errors.
#define BOOST_TEST_MODULE partition
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/partition.hpp"
#include "test_util.hpp"

using libpipe::Parts;
using Weights = std::vector<double>;

namespace {

using pipe_test::error_of;

std::vector<int> sizes_of(const Parts& parts) {
  std::vector<int> sizes;
  for (std::size_t s = 0; s + 1 < parts.size(); ++s) sizes.push_back(parts[s + 1] - parts[s]);
  return sizes;
}

// Every partition of n layers into S non-empty stages, as boundaries.
void for_each_partition(int n, int stages, const std::function<void(const Parts&)>& visit) {
  Parts parts(static_cast<std::size_t>(stages) + 1, 0);
  parts.back() = n;
  std::function<void(int, int)> place = [&](int s, int from) {
    if (s == stages) return visit(parts);
    // Stage s starts at `b`, leaving one layer for each later stage.
    for (int b = from; b <= n - (stages - s); ++b) {
      parts[static_cast<std::size_t>(s)] = b;
      place(s + 1, b + 1);
    }
  };
  place(1, 1);
  if (stages == 1) visit(parts);
}

bool every_stage_weighted(const Weights& w, const Parts& parts) {
  for (std::size_t s = 0; s + 1 < parts.size(); ++s) {
    bool any = false;
    for (int i = parts[s]; i < parts[s + 1]; ++i) any = any || w[static_cast<std::size_t>(i)] > 0;
    if (!any) return false;
  }
  return true;
}

// The zero-weight placement rule applied to any partition: every boundary
// after the first moves right onto its stage's first weighted layer.
Parts canonical(const Weights& w, Parts parts) {
  for (std::size_t s = 1; s + 1 < parts.size(); ++s)
    while (w[static_cast<std::size_t>(parts[s])] == 0) ++parts[s];
  return parts;
}

struct BruteForce {
  double best = std::numeric_limits<double>::infinity();
  Parts leftmost;  // componentwise minimum of the optimal partitions (canonical)
  int optimal = 0;
};

// The optimum by enumeration, with stage weights summed by the library's own
// stage_weights (so that real weights are compared under one arithmetic) and,
// for integer weights, checked against a plain exact integer sum.
BruteForce brute_force(const Weights& w, int stages, bool integral) {
  BruteForce out;
  std::vector<Parts> optima;
  const int n = static_cast<int>(w.size());
  for_each_partition(n, stages, [&](const Parts& parts) {
    if (!every_stage_weighted(w, parts)) return;
    double worst = libpipe::bottleneck(w, parts);
    if (integral) {
      std::int64_t exact = 0;
      for (std::size_t s = 0; s + 1 < parts.size(); ++s) {
        std::int64_t sum = 0;
        for (int i = parts[s]; i < parts[s + 1]; ++i) sum += static_cast<std::int64_t>(w[static_cast<std::size_t>(i)]);
        exact = std::max(exact, sum);
      }
      BOOST_REQUIRE_EQUAL(worst, static_cast<double>(exact));
    }
    if (worst < out.best) {
      out.best = worst;
      optima.clear();
    }
    if (worst == out.best) optima.push_back(canonical(w, parts));
  });
  out.optimal = static_cast<int>(optima.size());
  if (!optima.empty()) {
    out.leftmost = optima.front();
    for (const auto& p : optima)
      for (std::size_t s = 0; s < p.size(); ++s) out.leftmost[s] = std::min(out.leftmost[s], p[s]);
  }
  return out;
}

int positive_count(const Weights& w) {
  return static_cast<int>(std::count_if(w.begin(), w.end(), [](double x) { return x > 0; }));
}

// Checks partition_balanced on one small case against brute force.
void check_against_brute_force(const Weights& w, int stages, bool integral) {
  const int n = static_cast<int>(w.size());
  if (n < stages || positive_count(w) < stages) {
    BOOST_CHECK_THROW(libpipe::partition_balanced(w, stages), libpipe::Error);
    return;
  }
  Parts parts = libpipe::partition_balanced(w, stages);
  BOOST_REQUIRE_NO_THROW(libpipe::validate_parts(parts, n));  // all layers, no empty stage
  BOOST_REQUIRE(every_stage_weighted(w, parts));
  BruteForce best = brute_force(w, stages, integral);
  // Exact: the same double, not "close".
  BOOST_REQUIRE_EQUAL(libpipe::bottleneck(w, parts), best.best);
  // The tie-break: the componentwise-leftmost optimum, with zeros placed by rule.
  BOOST_REQUIRE(parts == canonical(w, parts));
  BOOST_TEST_REQUIRE(parts == best.leftmost, boost::test_tools::per_element());
}

// Is there a partition into at most `stages` runs of sum <= limit? Plain
// linear greedy over exact integers: an independent certificate of optimality.
bool fits_linear(const std::vector<std::int64_t>& w, int stages, std::int64_t limit) {
  int used = 1;
  std::int64_t run = 0;
  for (auto x : w) {
    if (x > limit) return false;
    if (run + x > limit) {
      ++used;
      run = 0;
    }
    run += x;
  }
  return used <= stages;
}

}  // namespace

BOOST_AUTO_TEST_CASE(uniform_matches_deepspeed) {
  BOOST_TEST(sizes_of(libpipe::partition_uniform(38, 8)) == std::vector<int>({5, 5, 5, 5, 5, 5, 4, 4}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::partition_uniform(38, 8) == Parts({0, 5, 10, 15, 20, 25, 30, 34, 38}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::partition_uniform(8, 2) == Parts({0, 4, 8}), boost::test_tools::per_element());
  BOOST_TEST(libpipe::partition_uniform(10, 4) == Parts({0, 3, 6, 8, 10}), boost::test_tools::per_element());
  BOOST_TEST(libpipe::partition_uniform(16, 16) == Parts({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::partition_uniform(7, 1) == Parts({0, 7}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(uniform_errors) {
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_uniform(3, 4); }),
                    "cannot split 3 layers into 4 stages: every stage needs at least one layer");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_uniform(1, 2); }),
                    "cannot split 1 layer into 2 stages: every stage needs at least one layer");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_uniform(0, 1); }),
                    "cannot split 0 layers into 1 stage: every stage needs at least one layer");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_uniform(8, 0); }),
                    "the number of pipeline stages must be at least 1, got 0");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_uniform(3000000000LL, 2); }),
                    "cannot partition 3000000000 layers: at most 2147483647 are supported");
}

BOOST_AUTO_TEST_CASE(balanced_small_examples) {
  BOOST_TEST(libpipe::partition_balanced({1, 2, 3, 4, 5, 6, 7, 8, 9}, 3) == Parts({0, 5, 7, 9}),
             boost::test_tools::per_element());  // 15 | 13 | 17: the optimum is 17
  BOOST_CHECK_EQUAL(libpipe::bottleneck({1, 2, 3, 4, 5, 6, 7, 8, 9}, {0, 5, 7, 9}), 17.0);
  BOOST_TEST(libpipe::partition_balanced({5}, 1) == Parts({0, 1}), boost::test_tools::per_element());
  BOOST_TEST(libpipe::partition_balanced({1, 1, 1, 1}, 4) == Parts({0, 1, 2, 3, 4}), boost::test_tools::per_element());
  // One heavy layer: 2 | 102 and 102 | 2 tie; the heavy side goes to the later stage.
  BOOST_TEST(libpipe::partition_balanced({1, 1, 100, 1, 1}, 2) == Parts({0, 2, 5}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(tie_break_fills_later_stages_first) {
  // 1 | 1 1 and 1 1 | 1 are both optimal (bottleneck 2): stage 0 gets the lighter share.
  BOOST_TEST(libpipe::partition_balanced({1, 1, 1}, 2) == Parts({0, 1, 3}), boost::test_tools::per_element());
  // 4 on 3: every optimum has bottleneck 2; the last stages take 2 each.
  BOOST_TEST(libpipe::partition_balanced({1, 1, 1, 1}, 3) == Parts({0, 1, 2, 4}), boost::test_tools::per_element());
  // 10 equal layers on 4: bottleneck 3, sizes 1,3,3,3.
  BOOST_TEST(sizes_of(libpipe::partition_balanced(Weights(10, 1.0), 4)) == std::vector<int>({1, 3, 3, 3}),
             boost::test_tools::per_element());
  // gpt-tiny under type:TransformerBlock on 2 stages: DeepSpeed's split,
  // embedding + 2 blocks | 2 blocks + norm + head + loss.
  BOOST_TEST(libpipe::partition_balanced({0, 1, 1, 1, 1, 0, 0, 0}, 2) == Parts({0, 3, 8}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(zero_weight_layers_are_placed_by_rule) {
  // Leading zeros join stage 0, interior zeros the weighted layer before
  // them, trailing zeros the last stage.
  BOOST_TEST(libpipe::partition_balanced({0, 0, 1, 0, 1, 0, 0}, 2) == Parts({0, 4, 7}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::partition_balanced({0, 3, 0, 0, 3, 0, 3, 0}, 3) == Parts({0, 4, 6, 8}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::partition_balanced({0, 0, 0, 2}, 1) == Parts({0, 4}), boost::test_tools::per_element());
  // Every stage starts with a weighted layer (stage 0 excepted) and has weight.
  Weights w = {0, 2, 0, 0, 5, 0, 1, 1, 0, 0, 4, 0};
  Parts parts = libpipe::partition_balanced(w, 4);
  for (std::size_t s = 1; s + 1 < parts.size(); ++s) BOOST_CHECK_GT(w[static_cast<std::size_t>(parts[s])], 0.0);
  for (double x : libpipe::stage_weights(w, parts)) BOOST_CHECK_GT(x, 0.0);
}

BOOST_AUTO_TEST_CASE(balanced_is_optimal_by_brute_force_integer_weights) {
  std::mt19937_64 rng(20240601);
  int checked = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 12);
    const int stages = 1 + static_cast<int>(rng() % 5);
    Weights w(static_cast<std::size_t>(n));
    // Small values make many ties; a third of the layers weigh nothing.
    const std::uint64_t range = trial % 2 ? 4 : 1000;
    for (auto& x : w) x = rng() % 3 == 0 ? 0.0 : static_cast<double>(1 + rng() % range);
    BOOST_TEST_CONTEXT("trial " << trial << ", " << n << " layers, " << stages << " stages") {
      check_against_brute_force(w, stages, true);
    }
    checked += n >= stages && positive_count(w) >= stages;
  }
  BOOST_TEST_MESSAGE(checked << " feasible integer cases checked");
  BOOST_CHECK_GT(checked, 1500);
}

BOOST_AUTO_TEST_CASE(balanced_is_optimal_by_brute_force_real_weights) {
  std::mt19937_64 rng(77);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double decimals[] = {0.1, 0.2, 0.3, 0.7};  // not exact in binary: rounding ties
  int checked = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 12);
    const int stages = 1 + static_cast<int>(rng() % 5);
    Weights w(static_cast<std::size_t>(n));
    for (auto& x : w) {
      if (rng() % 4 == 0)
        x = 0.0;
      else if (trial % 3 == 0)
        x = decimals[rng() % 4];
      else if (trial % 3 == 1)
        x = unit(rng);
      else
        x = std::ldexp(unit(rng), static_cast<int>(rng() % 80) - 40);  // wide range of magnitudes
    }
    BOOST_TEST_CONTEXT("trial " << trial << ", " << n << " layers, " << stages << " stages") {
      check_against_brute_force(w, stages, false);
      // The library's stage sums are the real sums up to the documented
      // rounding: a tiny fraction of the total (differences of long double
      // prefix sums), not of the stage, which is all the bottleneck needs.
      if (n >= stages && positive_count(w) >= stages) {
        Parts parts = libpipe::partition_balanced(w, stages);
        auto sums = libpipe::stage_weights(w, parts);
        double total = 0;
        for (double x : w) total += x;
        for (std::size_t s = 0; s < sums.size(); ++s) {
          double plain = 0;
          for (int i = parts[s]; i < parts[s + 1]; ++i) plain += w[static_cast<std::size_t>(i)];
          BOOST_CHECK_LE(std::fabs(sums[s] - plain), 1e-15 * total + 1e-15 * plain);
        }
      }
    }
    checked += n >= stages && positive_count(w) >= stages;
  }
  BOOST_CHECK_GT(checked, 1500);
}

BOOST_AUTO_TEST_CASE(stage_weights_and_bottleneck) {
  Weights w = {1, 2, 3, 4};
  BOOST_TEST(libpipe::stage_weights(w, {0, 1, 3, 4}) == Weights({1, 5, 4}), boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(libpipe::bottleneck(w, {0, 1, 3, 4}), 5.0);
  BOOST_CHECK_EQUAL(libpipe::bottleneck(w, {0, 4}), 10.0);
  // Integer weights past 2^53 are summed exactly (in int64) before rounding.
  const double big = 9007199254740992.0;  // 2^53
  BOOST_CHECK_EQUAL(libpipe::bottleneck({big, 1, 1}, {0, 3}), big + 2);
}

BOOST_AUTO_TEST_CASE(huge_weights_fall_back_to_long_double) {
  // Integers whose total overflows int64: summed in long double instead.
  Weights w(64, std::ldexp(1.0, 60));
  w[10] = 0;
  Parts parts = libpipe::partition_balanced(w, 7);
  BOOST_REQUIRE_NO_THROW(libpipe::validate_parts(parts, 64));
  // 63 equal weighted layers on 7 stages: 9 each.
  BOOST_CHECK_EQUAL(libpipe::bottleneck(w, parts), 9 * std::ldexp(1.0, 60));
}

BOOST_AUTO_TEST_CASE(balanced_errors) {
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::partition_balanced({1, 0, 1, 0, 1}, 4);
                    }),
                    "only 3 layers have weight but there are 4 stages: every stage needs at least one");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::partition_balanced({0, 7, 0}, 2);
                    }),
                    "only 1 layer has weight but there are 2 stages: every stage needs at least one");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::partition_balanced({0, 0}, 1);
                    }),
                    "no layer has weight but there is 1 stage: every stage needs at least one");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::partition_balanced({1, 2, 3}, 4);
                    }),
                    "cannot split 3 layers into 4 stages: every stage needs at least one layer");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_balanced({}, 1); }),
                    "cannot split 0 layers into 1 stage: every stage needs at least one layer");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::partition_balanced({1, 2}, -1);
                    }),
                    "the number of pipeline stages must be at least 1, got -1");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::partition_balanced({1, -1.5, 2}, 2);
                    }),
                    "layer 1 has weight -1.5: partition weights must be finite and non-negative");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::partition_balanced({1, 2, std::nan("")}, 2);
                    }),
                    "layer 2 has weight nan: partition weights must be finite and non-negative");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_balanced({std::numeric_limits<double>::infinity()}, 1); }),
                    "layer 0 has weight inf: partition weights must be finite and non-negative");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::stage_weights({0.1, -0.2}, {0, 2});
                    }),
                    "layer 1 has weight -0.2: partition weights must be finite and non-negative");
}

BOOST_AUTO_TEST_CASE(validate_parts_errors) {
  BOOST_CHECK_NO_THROW(libpipe::validate_parts({0, 3, 8}, 8));
  BOOST_CHECK_EQUAL(error_of([] { libpipe::validate_parts({0}, 8); }),
                    "a partition needs at least 2 boundaries (0 and the layer count 8), got 1");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::validate_parts({1, 3, 8}, 8);
                    }),
                    "a partition must start at layer 0, but parts[0] = 1");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::validate_parts({0, 3, 3, 8}, 8);
                    }),
                    "stage 1 is empty: parts[1] = parts[2] = 3");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::validate_parts({0, 5, 3, 8}, 8);
                    }),
                    "partition boundaries must increase, but parts[1] = 5 > parts[2] = 3");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::validate_parts({0, 3, 7}, 8);
                    }),
                    "a partition of 8 layers must end at 8, but parts[2] = 7");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::validate_parts({0, 3, 9}, 8);
                    }),
                    "a partition of 8 layers must end at 8, but parts[2] = 9");
  BOOST_CHECK_EQUAL(error_of([] {
                      libpipe::stage_weights({1, 1, 1}, {0, 2, 4});
                    }),
                    "a partition of 3 layers must end at 3, but parts[2] = 4");
}

BOOST_AUTO_TEST_CASE(a_million_layers_on_1024_stages) {
  // Runs it (the benchmark, pipe-bench partition, times it) and certifies
  // the result with an independent linear greedy: bottleneck - 1 is infeasible.
  const int n = 1000000, stages = 1024;
  std::mt19937_64 rng(1);
  std::vector<std::int64_t> ints(static_cast<std::size_t>(n));
  Weights w(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < w.size(); ++i) {
    ints[i] = static_cast<std::int64_t>(1 + rng() % 1000);
    w[i] = static_cast<double>(ints[i]);
  }
  Parts parts = libpipe::partition_balanced(w, stages);
  BOOST_REQUIRE_NO_THROW(libpipe::validate_parts(parts, n));
  auto limit = static_cast<std::int64_t>(libpipe::bottleneck(w, parts));
  BOOST_CHECK(fits_linear(ints, stages, limit));
  BOOST_CHECK(!fits_linear(ints, stages, limit - 1));

  // Real weights at the same size: valid, and no worse than the integer-rounded bound says.
  for (auto& x : w) x = x / 7.0;
  Parts real_parts = libpipe::partition_balanced(w, stages);
  BOOST_REQUIRE_NO_THROW(libpipe::validate_parts(real_parts, n));
  BOOST_CHECK_LE(libpipe::bottleneck(w, real_parts), (static_cast<double>(limit) / 7.0) * (1 + 1e-12));
}

// ---- the V-shaped placement (zb-v): stage s holds chunks s and 2S-1-s

namespace {

// The best largest stage over every cut into 2S chunks each holding a weighted layer and no chunk above the
// smallest possible largest chunk, stage sums as the library adds them (v_shape_stage_weights).
double v_shape_brute_force(const Weights& w, int stages) {
  double best_chunk = std::numeric_limits<double>::infinity();
  for_each_partition(static_cast<int>(w.size()), 2 * stages, [&](const Parts& parts) {
    if (every_stage_weighted(w, parts)) best_chunk = std::min(best_chunk, libpipe::bottleneck(w, parts));
  });
  double best = std::numeric_limits<double>::infinity();
  for_each_partition(static_cast<int>(w.size()), 2 * stages, [&](const Parts& parts) {
    if (!every_stage_weighted(w, parts) || libpipe::bottleneck(w, parts) > best_chunk) return;
    const auto sums = libpipe::v_shape_stage_weights(w, parts);
    best = std::min(best, *std::max_element(sums.begin(), sums.end()));
  });
  return best;
}

double v_shape_bottleneck(const Weights& w, const Parts& parts) {
  const auto sums = libpipe::v_shape_stage_weights(w, parts);
  return *std::max_element(sums.begin(), sums.end());
}

}  // namespace

BOOST_AUTO_TEST_CASE(v_shape_is_optimal_by_brute_force) {
  std::mt19937_64 rng(7);
  int checked = 0, better_than_chunks = 0;
  for (int round = 0; round < 400; ++round) {
    const int stages = 1 + static_cast<int>(rng() % 3);
    const int n = 2 * stages + static_cast<int>(rng() % 5);
    const bool integral = round % 2 == 0;
    Weights w(static_cast<std::size_t>(n));
    for (auto& x : w) {
      x = integral ? static_cast<double>(rng() % 20) : static_cast<double>(rng() % 1000) / 37.0;
      if (rng() % 6 == 0) x = 0;  // zero-weight layers too
    }
    if (positive_count(w) < 2 * stages) {
      BOOST_CHECK_THROW(libpipe::partition_balanced_v_shape(w, stages), libpipe::Error);
      continue;
    }
    const Parts parts = libpipe::partition_balanced_v_shape(w, stages);
    BOOST_REQUIRE_EQUAL(parts.size(), static_cast<std::size_t>(2 * stages + 1));
    BOOST_REQUIRE_NO_THROW(libpipe::validate_parts(parts, n));
    BOOST_REQUIRE(every_stage_weighted(w, parts));
    BOOST_REQUIRE(parts == canonical(w, parts));  // zero-weight layers by partition_balanced's rule
    // Exact: chunks as balanced as partition_balanced's, and the same double as the best stage of such cuts.
    BOOST_REQUIRE_EQUAL(libpipe::bottleneck(w, parts), libpipe::bottleneck(w, libpipe::partition_balanced(w, 2 * stages)));
    BOOST_REQUIRE_EQUAL(v_shape_bottleneck(w, parts), v_shape_brute_force(w, stages));
    const double chunkwise = v_shape_bottleneck(w, libpipe::partition_balanced(w, 2 * stages));
    BOOST_REQUIRE_LE(v_shape_bottleneck(w, parts), chunkwise);
    if (v_shape_bottleneck(w, parts) < chunkwise) ++better_than_chunks;
    ++checked;
  }
  BOOST_TEST_MESSAGE(checked << " cases, " << better_than_chunks << " better than balancing chunks one by one");
  BOOST_CHECK_GT(checked, 300);
  BOOST_CHECK_GT(better_than_chunks, 10);  // the point of it: chunk balance is not stage balance
}

BOOST_AUTO_TEST_CASE(v_shape_balances_a_gpt_like_model) {
  // Embedding, 4 equal blocks, a head as heavy as a block: balancing the 4 chunks alone leaves stage 0 with the
  // embedding, a block and the head; the V-shaped cut pairs them so that both stages carry 3 units.
  const Weights w = {0.5, 1, 1, 1, 1, 0.5, 1};
  const Parts parts = libpipe::partition_balanced_v_shape(w, 2);
  BOOST_CHECK_EQUAL(v_shape_bottleneck(w, parts), 3.0);
  BOOST_CHECK_GT(v_shape_bottleneck(w, libpipe::partition_balanced(w, 4)), 3.0);
  // The middle stage's three blocks split 1 + 2, as evenly as they allow.
  const auto chunks = libpipe::stage_weights(w, parts);
  BOOST_CHECK_EQUAL(chunks[1] + chunks[2], 3.0);
  BOOST_CHECK_EQUAL(std::max(chunks[1], chunks[2]), 2.0);
}

BOOST_AUTO_TEST_CASE(v_shape_errors_and_large_models) {
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_balanced_v_shape({1, 0, 1, 1, 0}, 2); }),
                    "only 3 layers have weight but there are 4 chunks (2 stages x 2): every chunk needs at least one");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::partition_balanced_v_shape({1, 1, 1}, 2); }),
                    "cannot split 3 layers into 4 stages: every stage needs at least one layer");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::v_shape_stage_weights({1, 1, 1}, {0, 1, 2, 3}); }),
                    "a V-shaped partition has an even number of chunks, got 3");
  // At the exact limit on 8 stages: optimal against the chunk-by-chunk cut, and beyond it that cut itself.
  std::mt19937_64 rng(3);
  Weights w(libpipe::kVShapeExactLimit);
  for (auto& x : w) x = static_cast<double>(1 + rng() % 100);
  const Parts exact = libpipe::partition_balanced_v_shape(w, 8);
  BOOST_CHECK_LE(v_shape_bottleneck(w, exact), v_shape_bottleneck(w, libpipe::partition_balanced(w, 16)));
  w.push_back(1);
  BOOST_CHECK(libpipe::partition_balanced_v_shape(w, 8) == libpipe::partition_balanced(w, 16));
}
