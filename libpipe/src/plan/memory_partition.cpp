// Memory-aware partitioning (see memory_partition.hpp).
#include "pipe/memory_partition.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "pipe/error.hpp"
#include "pipe/partition_capped.hpp"
#include "pipe/schedule.hpp"

namespace libpipe {
namespace {

std::vector<Schedule> schedules_for(const std::string& kind, int stages, int micro_batches) {
  std::vector<Schedule> out;
  for (int s = 0; s < stages; ++s) out.push_back(make_schedule(kind, stages, micro_batches, s, 1));
  return out;
}

StageCost cost_of(const StageMemoryBound& bound) {
  return [&bound](int stage, int begin, int end) { return bound(stage, begin, end); };
}

double smallest_peak(const ModelDescription& model, int stages, const std::string& schedule, int micro_batches,
                     const MemoryModelOptions& memory) {
  const StageMemoryBound bound(model, schedules_for(schedule, stages, micro_batches), memory);
  return smallest_peak_cost(static_cast<int>(model.layers.size()), stages, cost_of(bound));
}

// The flags that would lower the peak, each with the peak `peak_with` gives under it: "--zero 1 (1.20 GiB), ...".
std::string remedies(const ModelDescription& model, int stages, const MemoryLimitRequest& r, double peak,
                     const std::function<double(const MemoryModelOptions&)>& peak_with) {
  std::vector<std::pair<std::string, MemoryModelOptions>> tries;
  if (r.memory.checkpoint_interval != 1) {
    MemoryModelOptions o = r.memory;
    o.checkpoint_interval = 1;
    tries.emplace_back("--activation-checkpoint-interval 1", o);
  }
  if (r.memory.micro_batch_size > 1) {
    MemoryModelOptions o = r.memory;
    o.micro_batch_size = r.memory.micro_batch_size / 2;
    tries.emplace_back("--micro-batch-size " + std::to_string(o.micro_batch_size), o);
  }
  if (r.data_parallel > 1 && r.memory.optimizer_shards == 1) {
    MemoryModelOptions o = r.memory;
    o.optimizer_shards = r.data_parallel;
    tries.emplace_back("--zero 1", o);
  }
  if (r.memory.bf16) {
    MemoryModelOptions o = r.memory;
    o.bf16 = false;
    tries.emplace_back("--dtype float32", o);
  }
  std::string out;
  for (const auto& [flag, options] : tries) {
    const double p = peak_with(options);
    if (p < peak) out += (out.empty() ? "" : ", ") + flag + " (" + byte_size_str(p) + ")";
  }
  if (static_cast<int>(model.layers.size()) > stages) out += std::string(out.empty() ? "" : ", ") + "more stages";
  return out.empty() ? "" : "; would lower it: " + out;
}

// With virtual stages: the method's chunk cut, kept when every rank's predicted peak fits (predict_memory, exact
// for that cut), else an error naming the stage over the limit and what would lower its peak.
PartitionPlan checked_chunk_plan(const ModelDescription& model, const PartitionMethod& method, int stages,
                                 const MemoryLimitRequest& r, const std::vector<double>* measured_times) {
  const int V = r.virtual_stages;
  PartitionPlan plan = plan_chunk_partition(model, method, stages, V, schedule_placement(r.schedule), measured_times);
  std::vector<Schedule> schedules;
  for (int s = 0; s < stages; ++s) schedules.push_back(make_schedule(r.schedule, stages, r.micro_batches, s, V));
  int worst = 0;
  auto peak_with = [&](const MemoryModelOptions& options) {
    const std::vector<RankMemory> ranks = predict_memory(model, plan.parts, schedules, options);
    double peak = 0;
    for (const RankMemory& m : ranks)
      if (m.total() > peak) peak = m.total(), worst = m.stage;
    return peak;
  };
  const double peak = peak_with(r.memory);
  if (peak <= r.limit) return plan;
  const int over = worst;
  // One chunk per stage lets the cut move: say what 1F1B's best cut reaches where that is lower.
  const double one_chunk = smallest_peak(model, stages, "1f1b", r.micro_batches, r.memory);
  const std::string moved = one_chunk < peak ? " (--schedule 1f1b moves it and reaches " + byte_size_str(one_chunk) +
                                                   ")"
                                             : "";
  throw Error("--memory-limit " + byte_size_str(r.limit) + ": the " + method.text() + " cut of " + model.name +
              " into " + std::to_string(stages) + " x " + std::to_string(V) + " chunks (" + r.schedule + ", " +
              std::to_string(r.micro_batches) + " micro-batches of " + std::to_string(r.memory.micro_batch_size) +
              ") puts " + byte_size_str(peak) + " on stage " + std::to_string(over) +
              ": with virtual stages the cut is checked, not moved" + moved +
              remedies(model, stages, r, peak, peak_with));
}

}  // namespace

double parse_byte_size(const std::string& text, const std::string& flag) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  std::string suffix(end);
  for (char& c : suffix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!suffix.empty() && suffix.back() == 'b') suffix.pop_back();
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1},           {"k", 1e3},          {"m", 1e6},          {"g", 1e9},          {"t", 1e12},
      {"ki", 1024.0},    {"mi", 1048576.0},   {"gi", 1073741824.0}, {"ti", 1099511627776.0}};
  for (const auto& [name, scale] : kUnits)
    if (suffix == name && end != begin && std::isfinite(value) && value > 0) return value * scale;
  throw Error(flag + " " + text + ": expected a positive size in bytes, such as 8GiB, 512MiB, 1.5GB or 4096");
}

std::string byte_size_str(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (unit < 4 && std::fabs(bytes) >= 1024) bytes /= 1024, ++unit;
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, unit == 0 ? "%.0f %s" : bytes < 10 ? "%.2f %s" : bytes < 100 ? "%.1f %s"
                                                                                             : "%.0f %s",
                bytes, kUnits[unit]);
  return buffer;
}

std::optional<Parts> cut_within_memory_limit(const PartitionPlan& own, const PartitionMethod& method,
                                             const StageMemoryBound& bound, double limit, bool* recut) {
  if (recut) *recut = false;
  bool fits = true;
  for (std::size_t s = 0; s + 1 < own.parts.size() && fits; ++s)
    fits = bound(static_cast<int>(s), own.parts[s], own.parts[s + 1]) <= limit;
  if (fits) return own.parts;
  if (!method.balances() && method.name() != "uniform") return std::nullopt;  // a manual cut is never moved
  try {
    Parts parts = partition_balanced_capped(own.weights, static_cast<int>(own.parts.size()) - 1, cost_of(bound),
                                            limit);
    if (recut) *recut = true;
    return parts;
  } catch (const Error&) {
    return std::nullopt;  // no cut fits
  }
}

PartitionPlan plan_partition_memory(const ModelDescription& model, const PartitionMethod& method, int num_stages,
                                    const MemoryLimitRequest& r, const std::vector<double>* measured_times) {
  if (r.virtual_stages > 1) return checked_chunk_plan(model, method, num_stages, r, measured_times);
  PartitionPlan plan = plan_partition(model, method, num_stages, measured_times);
  const StageMemoryBound bound(model, schedules_for(r.schedule, num_stages, r.micro_batches), r.memory);
  if (const std::optional<Parts> cut = cut_within_memory_limit(plan, method, bound, r.limit)) {
    plan.parts = *cut;
    return plan;
  }
  const std::string limit = "--memory-limit " + byte_size_str(r.limit);
  const std::string setting = " (" + r.schedule + ", " + std::to_string(r.micro_batches) + " micro-batches of " +
                              std::to_string(r.memory.micro_batch_size) + ")";
  if (!method.balances() && method.name() != "uniform") {
    int s = 0;  // the first stage over the limit
    while (bound(s, plan.parts[static_cast<std::size_t>(s)], plan.parts[static_cast<std::size_t>(s) + 1]) <= r.limit)
      ++s;
    throw Error(limit + ": the " + method.text() + " cut puts " +
                byte_size_str(bound(s, plan.parts[static_cast<std::size_t>(s)],
                                    plan.parts[static_cast<std::size_t>(s) + 1])) +
                " on stage " + std::to_string(s) + setting + "; move its boundaries or drop the limit");
  }
  const double peak = smallest_peak_cost(static_cast<int>(model.layers.size()), num_stages, cost_of(bound));
  throw Error(limit + ": no cut of " + model.name + " into " + std::to_string(num_stages) +
              (num_stages == 1 ? " stage fits" : " stages fits") + setting +
              "; the smallest peak any cut reaches is " + byte_size_str(peak) +
              remedies(model, num_stages, r, peak, [&](const MemoryModelOptions& options) {
                return smallest_peak(model, num_stages, r.schedule, r.micro_batches, options);
              }));
}

}  // namespace libpipe
