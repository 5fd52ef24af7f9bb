// Memory-aware partitioning: partition_balanced_capped and smallest_peak_cost
// against brute force over every cut of random instances (stage-dependent,
// range-monotone costs), StageMemoryBound against predict_memory on gpt-tiny
// for every cut, plan_partition_memory's cuts and errors, and byte sizes.
#define BOOST_TEST_MODULE memory_partition
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/memory_partition.hpp"
#include "pipe/partition_capped.hpp"
#include "pipe/schedule.hpp"
#include "shipped_model.hpp"
#include "test_util.hpp"

using pipe_test::error_of;

namespace {

// Every cut of n layers into S non-empty stages.
void each_cut(int n, int S, const std::function<void(const libpipe::Parts&)>& visit) {
  libpipe::Parts parts(static_cast<std::size_t>(S) + 1, 0);
  parts.back() = n;
  std::function<void(int)> place = [&](int s) {
    if (s == S) return visit(parts);
    for (int b = parts[static_cast<std::size_t>(s) - 1] + 1; b <= n - (S - s); ++b) {
      parts[static_cast<std::size_t>(s)] = b;
      place(s + 1);
    }
  };
  if (S == 1) return visit(parts);
  place(1);
}

double peak_of(const libpipe::StageCost& cost, const libpipe::Parts& parts) {
  double peak = 0;
  for (std::size_t s = 0; s + 1 < parts.size(); ++s)
    peak = std::max(peak, cost(static_cast<int>(s), parts[s], parts[s + 1]));
  return peak;
}

// A random cost that grows with the range: per-stage multiples of two running sums plus the largest of a third
// value over the range (as the memory bound's buffers are).
struct RandomCost {
  std::vector<double> a, b, c;
  std::vector<double> k;  // per stage
  double operator()(int s, int begin, int end) const {
    double sa = 0, sb = 0, mc = 0;
    for (int i = begin; i < end; ++i) sa += a[static_cast<std::size_t>(i)], sb += b[static_cast<std::size_t>(i)],
                                      mc = std::max(mc, c[static_cast<std::size_t>(i)]);
    return sa + k[static_cast<std::size_t>(s)] * sb + mc;
  }
};

// Bytes of one sample of a boundary tensor.
double bytes_of(const libpipe::TensorType& t) {
  return static_cast<double>(libpipe::numel(t.shape)) * static_cast<double>(libpipe::dtype_size(t.dtype));
}

const libpipe::ModelDescription& gpt_tiny() { return pipe_test::shipped_model("gpt-tiny"); }

std::vector<libpipe::Schedule> schedules(const std::string& kind, int S, int M) {
  std::vector<libpipe::Schedule> out;
  for (int s = 0; s < S; ++s) out.push_back(libpipe::make_schedule(kind, S, M, s, 1));
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(capped_matches_brute_force) {
  std::mt19937 rng(20261207);
  int binding = 0, infeasible = 0;
  for (int trial = 0; trial < 600; ++trial) {
    const int n = 2 + static_cast<int>(rng() % 9), S = 1 + static_cast<int>(rng() % std::min(n, 4));
    std::vector<double> w(static_cast<std::size_t>(n));
    RandomCost cost;
    for (int i = 0; i < n; ++i) {
      // Integer weights (some zero) in half the trials, real ones in the other half.
      w[static_cast<std::size_t>(i)] = trial % 2 ? static_cast<double>(rng() % 6) : (rng() % 1000) / 97.0;
      cost.a.push_back(rng() % 10);
      cost.b.push_back(rng() % 10);
      cost.c.push_back(rng() % 30);
    }
    for (int s = 0; s < S; ++s) cost.k.push_back(1 + rng() % 4);
    const libpipe::StageCost f = cost;
    // Brute force: the smallest peak, and for a cap, the smallest bottleneck among the cuts that fit.
    double best_peak = std::numeric_limits<double>::infinity();
    each_cut(n, S, [&](const libpipe::Parts& p) { best_peak = std::min(best_peak, peak_of(f, p)); });
    BOOST_REQUIRE_EQUAL(libpipe::smallest_peak_cost(n, S, f), best_peak);
    const double cap = best_peak + static_cast<double>(rng() % 40);
    double best = std::numeric_limits<double>::infinity(), unconstrained = best;
    each_cut(n, S, [&](const libpipe::Parts& p) {
      const double b = libpipe::bottleneck(w, p);
      unconstrained = std::min(unconstrained, b);
      if (peak_of(f, p) <= cap) best = std::min(best, b);
    });
    const libpipe::Parts got = libpipe::partition_balanced_capped(w, S, f, cap);
    libpipe::validate_parts(got, n);
    BOOST_TEST_CONTEXT("trial " << trial << ", n " << n << ", S " << S) {
      BOOST_CHECK_LE(peak_of(f, got), cap);
      BOOST_CHECK_EQUAL(libpipe::bottleneck(w, got), best);
    }
    binding += best > unconstrained;
    // Below the smallest peak nothing fits.
    if (best_peak > 0) {
      BOOST_CHECK_THROW(libpipe::partition_balanced_capped(w, S, f, std::nextafter(best_peak, 0.0)), libpipe::Error);
      ++infeasible;
    }
  }
  // The cap must have changed the answer often enough for the test to mean something.
  BOOST_TEST_MESSAGE(binding << " of 600 trials had a binding cap");
  BOOST_CHECK_GE(binding, 60);
  BOOST_CHECK_GE(infeasible, 500);
}

BOOST_AUTO_TEST_CASE(a_cap_that_binds_nowhere_changes_nothing) {
  const std::vector<double> w = {3, 1, 4, 1, 5, 9, 2, 6};
  const libpipe::StageCost zero = [](int, int, int) { return 0.0; };
  BOOST_CHECK(libpipe::partition_balanced_capped(w, 3, zero, 1.0) == libpipe::partition_balanced(w, 3));
}

BOOST_AUTO_TEST_CASE(bound_covers_the_prediction_on_every_cut) {
  const auto& d = gpt_tiny();
  const int n = static_cast<int>(d.layers.size());
  for (const std::string kind : {"1f1b", "gpipe", "zb-h1"})
    for (int interval : {0, 1, 2})
      for (int S : {2, 3}) {
        libpipe::MemoryModelOptions o;
        o.micro_batch_size = 4;
        o.checkpoint_interval = interval;
        o.runtime_bytes = libpipe::kCpuRuntimeBytes;  // in both, once per stage
        const auto sch = schedules(kind, S, 4);
        const libpipe::StageMemoryBound bound(d, sch, o);
        each_cut(n, S, [&](const libpipe::Parts& p) {
          const auto m = libpipe::predict_memory(d, p, sch, o);
          for (int s = 0; s < S; ++s) {
            const int begin = p[static_cast<std::size_t>(s)], end = p[static_cast<std::size_t>(s) + 1];
            const double b = bound(s, begin, end), predicted = m[static_cast<std::size_t>(s)].total();
            BOOST_CHECK_GE(b, predicted);
            BOOST_CHECK_EQUAL(bound.in_flight(s), m[static_cast<std::size_t>(s)].peak_in_flight);
            if (interval != 0) continue;
            // Without checkpointing the bound exceeds the prediction by exactly what the header says: the largest
            // boundary tensors in the range instead of those at its ends, and a tie within the stage twice.
            double in = 0, out = 0, tied = 0;
            for (int i = begin; i < end; ++i) {
              in = std::max(in, bytes_of(d.layers[static_cast<std::size_t>(i)].input));
              out = std::max(out, bytes_of(d.layers[static_cast<std::size_t>(i)].description.output));
            }
            for (const auto& tie : d.ties)
              if (tie.layers.front() >= begin && tie.layers.back() < end)
                tied += static_cast<double>(libpipe::numel(tie.shape)) * (tie.layers.size() - 1);
            const double gap = 2 * 4.0 * ((in - bytes_of(d.layers[static_cast<std::size_t>(begin)].input)) +
                                          (out - bytes_of(d.layers[static_cast<std::size_t>(end) - 1].description.output))) +
                               16 * tied;
            BOOST_CHECK_EQUAL(b, predicted + gap);
          }
        });
      }
}

BOOST_AUTO_TEST_CASE(memory_limit_moves_the_cut_where_it_must) {
  const auto& d = gpt_tiny();
  libpipe::MemoryLimitRequest r;
  r.schedule = "1f1b";
  r.micro_batches = 8;
  r.memory.micro_batch_size = 16;
  const libpipe::PartitionMethod method = libpipe::PartitionMethod::parse("parameters");
  const libpipe::Parts balanced = libpipe::plan_partition(d, method, 2).parts;
  const libpipe::StageMemoryBound bound(d, schedules("1f1b", 2, 8), r.memory);
  const double stage0 = bound(0, balanced[0], balanced[1]), stage1 = bound(1, balanced[1], balanced[2]);
  // 1F1B: stage 0 holds twice the micro-batches of stage 1, so the time-balanced cut is heavier there.
  BOOST_REQUIRE_GT(stage0, stage1);
  // A limit above the balanced cut's peak keeps it.
  r.limit = stage0;
  BOOST_CHECK(libpipe::plan_partition_memory(d, method, 2, r).parts == balanced);
  // A limit just below it moves the cut: stage 0 gives up layers and fits.
  r.limit = std::nextafter(stage0, 0.0);
  const libpipe::Parts capped = libpipe::plan_partition_memory(d, method, 2, r).parts;
  BOOST_CHECK_LT(capped[1], balanced[1]);
  const auto m = libpipe::predict_memory(d, capped, schedules("1f1b", 2, 8), r.memory);
  for (const auto& rank : m) BOOST_CHECK_LE(rank.total(), r.limit);
  // A limit nothing meets: the error gives the smallest peak and what would lower it.
  r.limit = 1024;
  const std::string e = error_of([&] { libpipe::plan_partition_memory(d, method, 2, r); });
  BOOST_TEST_MESSAGE(e);
  BOOST_CHECK(e.find("--memory-limit 1.00 KiB: no cut of gpt-tiny into 2 stages fits (1f1b, 8 micro-batches of 16)"
                     "; the smallest peak any cut reaches is ") == 0);
  BOOST_CHECK(e.find("--activation-checkpoint-interval 1 (") != std::string::npos);
  BOOST_CHECK(e.find("--micro-batch-size 8 (") != std::string::npos);
  BOOST_CHECK(e.find("more stages") != std::string::npos);
  BOOST_CHECK(e.find("--zero 1") == std::string::npos);  // one replica: nothing to shard over
  r.data_parallel = 2;
  BOOST_CHECK(error_of([&] { libpipe::plan_partition_memory(d, method, 2, r); }).find("--zero 1 (") !=
              std::string::npos);
  // A manual cut is never moved.
  r.limit = std::nextafter(stage0, 0.0);
  const std::string manual = error_of([&] {
    libpipe::plan_partition_memory(d, libpipe::PartitionMethod::parse("manual:" + std::to_string(balanced[1])), 2, r);
  });
  BOOST_CHECK(manual.find("the manual:") != std::string::npos && manual.find("on stage 0") != std::string::npos);
  // Interleaved schedules are refused: the bound needs one chunk per stage.
  BOOST_CHECK(error_of([&] {
                libpipe::StageMemoryBound(d, {libpipe::make_schedule("interleaved-1f1b", 2, 4, 0, 2)}, r.memory);
              }).find("one chunk per stage") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(byte_sizes) {
  BOOST_CHECK_EQUAL(libpipe::parse_byte_size("8GiB"), 8.0 * 1024 * 1024 * 1024);
  BOOST_CHECK_EQUAL(libpipe::parse_byte_size("512mib"), 512.0 * 1024 * 1024);
  BOOST_CHECK_EQUAL(libpipe::parse_byte_size("1.5GB"), 1.5e9);
  BOOST_CHECK_EQUAL(libpipe::parse_byte_size("4096"), 4096.0);
  BOOST_CHECK_EQUAL(libpipe::parse_byte_size("2k"), 2000.0);
  for (const std::string bad : {"", "GiB", "-1GiB", "0", "8 GiB", "8XB", "nan"})
    BOOST_CHECK_EQUAL(error_of([&] { libpipe::parse_byte_size(bad); }),
                      "--memory-limit " + bad + ": expected a positive size in bytes, such as 8GiB, 512MiB, 1.5GB "
                      "or 4096");
  BOOST_CHECK_EQUAL(libpipe::byte_size_str(1.5 * 1024 * 1024 * 1024), "1.50 GiB");
  BOOST_CHECK_EQUAL(libpipe::byte_size_str(640.0 * 1024 * 1024), "640 MiB");
  BOOST_CHECK_EQUAL(libpipe::byte_size_str(100), "100 B");
}
