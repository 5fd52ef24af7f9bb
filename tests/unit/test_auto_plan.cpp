// The planner (pipe/auto_plan.hpp) on gpt-tiny: every plan it returns fits the limit and keeps the global batch,
// the order is by predicted throughput, its predictions are the memory model's and the simulator's own, a limit
// that only checkpointing or ZeRO meets is met with them, and the errors.
#define BOOST_TEST_MODULE auto_plan
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "pipe/auto_plan.hpp"
#include "pipe/error.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/schedule.hpp"
#include "pipe/simulate.hpp"
#include "shipped_model.hpp"
#include "test_util.hpp"

using pipe_test::error_of;

namespace {

const libpipe::ModelDescription& gpt_tiny() { return pipe_test::shipped_model("gpt-tiny"); }

libpipe::AutoPlanRequest request(int world, std::int64_t batch, double limit = 0) {
  libpipe::AutoPlanRequest r;
  r.world_size = world;
  r.global_batch = batch;
  r.memory_limit = limit;
  r.flops_per_s = 5e10;
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(plans_fit_keep_the_batch_and_come_fastest_first) {
  const auto& d = gpt_tiny();
  const auto r = request(4, 64, 20.0 * 1024 * 1024);
  const libpipe::AutoPlanResult result = libpipe::search_plans(d, r);
  BOOST_REQUIRE(!result.plans.empty());
  BOOST_CHECK_GT(result.considered, static_cast<int>(result.plans.size()));  // the limit rules some out
  for (std::size_t i = 0; i < result.plans.size(); ++i) {
    const auto& p = result.plans[i];
    BOOST_TEST_CONTEXT("plan " << i << ": " << libpipe::plan_flags(p, r)) {
      BOOST_CHECK_EQUAL(p.stages * p.data_parallel, 4);
      BOOST_CHECK_EQUAL(p.micro_batches * p.micro_batch_size * p.data_parallel, 64);
      BOOST_CHECK_LE(p.peak_bytes, r.memory_limit);
      if (i > 0) BOOST_CHECK_GE(result.plans[i - 1].samples_per_s, p.samples_per_s);
      // The prediction is the memory model's for the plan's own cut and schedules.
      std::vector<libpipe::Schedule> schedules;
      for (int s = 0; s < p.stages; ++s)
        schedules.push_back(libpipe::make_schedule(p.schedule, p.stages, p.micro_batches, s, p.virtual_stages));
      libpipe::MemoryModelOptions mo;
      mo.micro_batch_size = p.micro_batch_size;
      mo.checkpoint_interval = p.checkpoint_interval;
      mo.optimizer_shards = p.zero ? p.data_parallel : 1;
      double peak = 0;
      for (const auto& m : libpipe::predict_memory(d, p.parts, schedules, mo)) peak = std::max(peak, m.total());
      BOOST_CHECK_EQUAL(peak, p.peak_bytes);
    }
  }
}

BOOST_AUTO_TEST_CASE(step_time_is_the_simulation_of_the_flops) {
  const auto& d = gpt_tiny();
  auto r = request(2, 16);
  r.schedules = {"gpipe"};
  const libpipe::AutoPlanResult result = libpipe::search_plans(d, r);
  for (const auto& p : result.plans) {
    if (p.stages != 2 || p.checkpoint_interval != 0) continue;
    std::vector<libpipe::StageCosts> costs;
    for (int s = 0; s < 2; ++s) {
      double flops = 0;
      for (int i = p.parts[s]; i < p.parts[s + 1]; ++i) flops += static_cast<double>(d.layers[i].description.flops);
      const double t = flops * static_cast<double>(p.micro_batch_size) / r.flops_per_s;
      costs.push_back({t / 3, t / 3, t / 3});
    }
    const libpipe::SimResult sim = libpipe::simulate("gpipe", 2, p.micro_batches, costs, 0, false);
    BOOST_CHECK_CLOSE(p.step_seconds, sim.makespan, 1e-9);
    BOOST_CHECK_CLOSE(p.samples_per_s, 16 / sim.makespan, 1e-9);
  }
}

BOOST_AUTO_TEST_CASE(a_fixed_cost_per_micro_batch_favours_bigger_micro_batches) {
  auto r = request(1, 16);
  r.overhead_per_layer_s = 1e-3;
  const auto best = libpipe::search_plans(gpt_tiny(), r).plans.front();
  BOOST_CHECK_EQUAL(best.micro_batch_size, 16);
  BOOST_CHECK_EQUAL(best.micro_batches, 1);
}

BOOST_AUTO_TEST_CASE(a_tight_limit_is_met_by_checkpointing_or_zero) {
  const auto& d = gpt_tiny();
  // The smallest peak without checkpointing or ZeRO, then a limit just below it.
  auto r = request(4, 64);
  double plain = 1e300;
  for (const auto& p : libpipe::search_plans(d, r).plans)
    if (p.checkpoint_interval == 0 && p.zero == 0) plain = std::min(plain, p.peak_bytes);
  r.memory_limit = plain * 0.99;
  const auto result = libpipe::search_plans(d, r);
  BOOST_REQUIRE(!result.plans.empty());
  for (const auto& p : result.plans) BOOST_CHECK(p.checkpoint_interval == 1 || p.zero == 1);
}

BOOST_AUTO_TEST_CASE(errors) {
  const auto& d = gpt_tiny();
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::search_plans(d, request(16, 3)); }),
                    "no data-parallel degree of a world of 16 ranks divides the global batch of 3 samples");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::search_plans(d, request(0, 4)); }),
                    "the planner needs a world size of at least 1, not 0");
  const auto none = libpipe::search_plans(d, request(2, 16, 1024));
  BOOST_CHECK(none.plans.empty());
  BOOST_CHECK_GT(none.smallest_peak, 1024);
}
