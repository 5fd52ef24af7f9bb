// pipe-plan --auto (see auto.hpp).
#include "auto.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "pipe/auto_plan.hpp"
#include "pipe/error.hpp"
#include "pipe/memory_partition.hpp"
#include "pipe/ops.hpp"
#include "plan_rate.hpp"

namespace pipe_plan {
namespace {

using json = nlohmann::json;

std::string seconds_str(double s) {
  char b[32];
  std::snprintf(b, sizeof b, s < 1 ? "%.1f ms" : "%.2f s", s < 1 ? s * 1e3 : s);
  return b;
}

}  // namespace

int plan_auto(const libpipe::ModelDescription& d, const AutoFlags& f) {
  libpipe::AutoPlanRequest r;
  r.world_size = f.world_size;
  r.global_batch = f.global_batch;
  r.memory_limit = f.memory_limit;
  r.optimizer = f.optimizer;
  r.bf16 = f.bf16;
  r.runtime_bytes = f.runtime_bytes;
  r.method = f.method;
  const std::string rate_source = pipe_apps::calibrate_rate(d, f.profiles, f.gflops, r);
  const auto t0 = std::chrono::steady_clock::now();
  const libpipe::AutoPlanResult result = libpipe::search_plans(d, r);
  const double search_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string limit = f.memory_limit > 0 ? libpipe::byte_size_str(f.memory_limit) + " per rank" : "none";
  if (result.plans.empty())
    throw libpipe::Error("--auto: none of the " + std::to_string(result.considered) + " plans for " + d.name + " on " +
                         std::to_string(f.world_size) + " ranks fits --memory-limit " + limit +
                         "; the smallest predicted peak is " + libpipe::byte_size_str(result.smallest_peak) +
                         " (more ranks, a smaller global batch or bf16 off would lower it)");
  // Tokens per sample: the input's length when it is token ids.
  const double tokens = d.input.dtype == libpipe::DType::int32 ? static_cast<double>(libpipe::numel(d.input.shape)) : 0;
  const std::size_t shown = std::min(result.plans.size(), static_cast<std::size_t>(std::max(1, f.top)));
  auto command = [&](const libpipe::AutoPlan& p) {
    return "mpirun -np " + std::to_string(f.world_size) + " pipe-train --model " + f.model + " " +
           libpipe::plan_flags(p, r);
  };
  if (f.json) {
    json plans = json::array();
    for (std::size_t i = 0; i < shown; ++i) {
      const auto& p = result.plans[i];
      plans.push_back({{"stages", p.stages}, {"data_parallel", p.data_parallel}, {"schedule", p.schedule},
                       {"virtual_stages", p.virtual_stages}, {"micro_batches", p.micro_batches},
                       {"micro_batch_size", p.micro_batch_size}, {"activation_checkpoint_interval",
                       p.checkpoint_interval}, {"zero", p.zero}, {"memory_capped", p.memory_capped},
                       {"parts", p.parts}, {"step_seconds", p.step_seconds}, {"samples_per_s", p.samples_per_s},
                       {"tokens_per_s", p.samples_per_s * tokens}, {"bubble", p.bubble},
                       {"peak_bytes", p.peak_bytes}, {"peak_stage", p.peak_stage}, {"command", command(p)}});
    }
    std::cout << json({{"model", d.name}, {"world_size", f.world_size}, {"global_batch", f.global_batch},
                       {"memory_limit", f.memory_limit}, {"flops_per_s", r.flops_per_s},
                       {"considered", result.considered}, {"fitting", result.plans.size()},
                       {"search_seconds", search_s}, {"plans", plans}})
                     .dump()
              << "\n";
    return 0;
  }
  std::printf("pipe-plan --auto: %s on %d ranks, global batch %lld, memory limit %s\n", d.name.c_str(), f.world_size,
              static_cast<long long>(f.global_batch), limit.c_str());
  std::printf("device rate: %s\n", rate_source.c_str());
  std::printf("%d plans considered, %zu fit, in %.2f s; the best %zu:\n", result.considered, result.plans.size(),
              search_s, shown);
  std::printf("%-4s %-9s %-17s %-11s %-5s %-5s %10s %11s %12s %7s %11s\n", "#", "pipe x dp", "schedule", "M x B", "ckpt",
              "zero", "step", "samples/s", "tokens/s", "bubble", "peak/rank");
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& p = result.plans[i];
    const std::string split = std::to_string(p.stages) + " x " + std::to_string(p.data_parallel);
    const std::string schedule = p.schedule + (p.virtual_stages > 1 ? " V=" + std::to_string(p.virtual_stages) : "");
    const std::string mb = std::to_string(p.micro_batches) + " x " + std::to_string(p.micro_batch_size);
    std::printf("%-4zu %-9s %-17s %-11s %-5s %-5s %10s %11.1f %12.0f %6.1f%% %11s\n", i + 1, split.c_str(),
                schedule.c_str(), mb.c_str(), p.checkpoint_interval ? "yes" : "no", p.zero ? "yes" : "no",
                seconds_str(p.step_seconds).c_str(), p.samples_per_s, p.samples_per_s * tokens, 100 * p.bubble,
                libpipe::byte_size_str(p.peak_bytes).c_str());
    std::printf("     %s\n", command(p).c_str());
  }
  std::printf("(step: simulated from FLOPs at the device rate, transfers and the data-parallel reduction left out; "
              "peak/rank: pipe/memory_model.hpp's prediction, the CPU libraries' own memory in it under --device cpu, the "
              "process before the model is built not counted)\n");
  return 0;
}

}  // namespace pipe_plan
