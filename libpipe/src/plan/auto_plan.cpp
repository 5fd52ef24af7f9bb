// The planner's search (see auto_plan.hpp).
#include "pipe/auto_plan.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>

#include "pipe/error.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/memory_partition.hpp"
#include "pipe/partition_capped.hpp"
#include "pipe/schedule.hpp"
#include "pipe/simulate.hpp"

namespace libpipe {
namespace {

std::vector<std::int64_t> divisors(std::int64_t n, std::int64_t at_most) {
  std::vector<std::int64_t> out;
  for (std::int64_t d = 1; d <= n && d <= at_most; ++d)
    if (n % d == 0) out.push_back(d);
  return out;
}

}  // namespace

SimResult predict_step(const ModelDescription& d, const Parts& parts, const std::string& schedule, int stages,
                       int virtual_stages, int micro_batches, std::int64_t micro_batch_size, int checkpoint_interval,
                       const AutoPlanRequest& r) {
  std::vector<StageCosts> costs;
  for (int c = 0; c < stages * virtual_stages; ++c) {
    const int begin = parts.at(static_cast<std::size_t>(c)), end = parts.at(static_cast<std::size_t>(c) + 1);
    double f = 0;
    for (int i = begin; i < end; ++i) f += static_cast<double>(d.layers[static_cast<std::size_t>(i)].description.flops);
    const double seconds =
        f * static_cast<double>(micro_batch_size) / r.flops_per_s + (end - begin) * r.overhead_per_layer_s;
    StageCosts sc{seconds * r.forward_share, seconds * r.backward_input_share, seconds * r.backward_weight_share};
    if (checkpoint_interval > 0) sc.backward_input += sc.forward;  // the group's forward again, before its backward
    costs.push_back(sc);
  }
  return simulate(schedule, stages, micro_batches, costs, 0, false, virtual_stages);
}

AutoPlanResult search_plans(const ModelDescription& d, const AutoPlanRequest& r) {
  if (r.world_size < 1) throw Error("the planner needs a world size of at least 1, not " + std::to_string(r.world_size));
  if (r.global_batch < 1)
    throw Error("the planner needs a global batch of at least 1 sample, not " + std::to_string(r.global_batch));
  if (!(r.flops_per_s > 0) || !std::isfinite(r.flops_per_s))
    throw Error("the planner needs a positive device rate (FLOP/s)");
  const int n = static_cast<int>(d.layers.size());
  AutoPlanResult result;
  result.smallest_peak = std::numeric_limits<double>::infinity();
  bool divisible = false;
  for (std::int64_t S : divisors(r.world_size, n)) {
    const int stages = static_cast<int>(S), D = r.world_size / stages;
    if (r.global_batch % D != 0) continue;
    divisible = true;
    const std::int64_t per_replica = r.global_batch / D;
    for (const std::string& kind : r.schedules) {
      if (stages == 1 && kind != r.schedules.front()) continue;  // on one stage every schedule is the same
      const int V = schedule_virtual_stages(kind, 0);
      if (stages * V > n) continue;
      PartitionPlan own;
      try {
        own = plan_chunk_partition(d, r.method, stages, V, schedule_placement(kind));
      } catch (const Error&) {
        continue;  // too few layers (of weight) for this many chunks
      }
      for (std::int64_t B : divisors(per_replica, r.max_micro_batch_size)) {
        const std::int64_t M = per_replica / B;
        if (M > r.max_micro_batches) continue;
        std::vector<Schedule> schedules;
        try {
          for (int s = 0; s < stages; ++s)
            schedules.push_back(make_schedule(kind, stages, static_cast<int>(M), s, V));
        } catch (const Error&) {
          continue;  // e.g. interleaving that needs more micro-batches
        }
        for (int ckpt : {0, 1})
          for (int zero : {0, 1}) {
            if (zero == 1 && D == 1) continue;
            ++result.considered;
            MemoryModelOptions mo;
            mo.micro_batch_size = B;
            mo.optimizer = r.optimizer;
            mo.bf16 = r.bf16;
            mo.checkpoint_interval = ckpt;
            mo.optimizer_shards = zero == 1 ? D : 1;
            mo.runtime_bytes = r.runtime_bytes;
            AutoPlan p;
            p.parts = own.parts;
            if (r.memory_limit > 0 && V == 1) {
              // The cut pipe-train makes under --memory-limit (plan_partition_memory's).
              const StageMemoryBound bound(d, schedules, mo);
              const std::optional<Parts> cut =
                  cut_within_memory_limit(own, r.method, bound, r.memory_limit, &p.memory_capped);
              if (!cut) {
                result.smallest_peak =
                    std::min(result.smallest_peak,
                             smallest_peak_cost(n, stages, [&](int s, int a, int b) { return bound(s, a, b); }));
                continue;
              }
              p.parts = *cut;
            }
            const std::vector<RankMemory> memory = predict_memory(d, p.parts, schedules, mo);
            for (const RankMemory& m : memory)
              if (m.total() > p.peak_bytes) p.peak_bytes = m.total(), p.peak_stage = m.stage;
            if (r.memory_limit > 0 && p.peak_bytes > r.memory_limit) {
              result.smallest_peak = std::min(result.smallest_peak, p.peak_bytes);
              continue;
            }
            const SimResult sim = predict_step(d, p.parts, kind, stages, V, static_cast<int>(M), B, ckpt, r);
            p.stages = stages;
            p.data_parallel = D;
            p.schedule = kind;
            p.virtual_stages = V;
            p.micro_batches = static_cast<int>(M);
            p.micro_batch_size = B;
            p.checkpoint_interval = ckpt;
            p.zero = zero;
            p.step_seconds = sim.makespan;
            p.samples_per_s = sim.makespan > 0 ? static_cast<double>(r.global_batch) / sim.makespan : 0;
            p.bubble = sim.bubble;
            result.plans.push_back(p);
          }
      }
    }
  }
  if (!divisible)
    throw Error("no data-parallel degree of a world of " + std::to_string(r.world_size) + " ranks divides the global "
                "batch of " + std::to_string(r.global_batch) + " samples");
  // Fastest first; then the smaller peak, fewer stages (less to go wrong), no checkpointing, no ZeRO.
  std::stable_sort(result.plans.begin(), result.plans.end(), [](const AutoPlan& a, const AutoPlan& b) {
    if (a.samples_per_s != b.samples_per_s) return a.samples_per_s > b.samples_per_s;
    if (a.peak_bytes != b.peak_bytes) return a.peak_bytes < b.peak_bytes;
    if (a.stages != b.stages) return a.stages < b.stages;
    if (a.checkpoint_interval != b.checkpoint_interval) return a.checkpoint_interval < b.checkpoint_interval;
    return a.zero < b.zero;
  });
  if (!result.plans.empty()) result.smallest_peak = 0;
  return result;
}

std::string plan_flags(const AutoPlan& p, const AutoPlanRequest& r) {
  std::string s = "--stages " + std::to_string(p.stages) + " --data-parallel " + std::to_string(p.data_parallel) +
                  " --schedule " + p.schedule + " --micro-batches " + std::to_string(p.micro_batches) +
                  " --micro-batch-size " + std::to_string(p.micro_batch_size) + " --partition-method " +
                  r.method.text();
  if (p.checkpoint_interval > 0) s += " --activation-checkpoint-interval " + std::to_string(p.checkpoint_interval);
  if (p.zero) s += " --zero 1";
  if (p.memory_capped) {
    char bytes[32];
    std::snprintf(bytes, sizeof bytes, "%.0f", std::floor(r.memory_limit));
    s += std::string(" --memory-limit ") + bytes;
  }
  if (r.optimizer != "adamw") s += " --optimizer " + r.optimizer;
  if (r.bf16) s += " --dtype bf16";
  return s;
}

}  // namespace libpipe
