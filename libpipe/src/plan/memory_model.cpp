// The per-rank memory model (see memory_model.hpp).
#include "pipe/memory_model.hpp"

#include <algorithm>
#include <functional>
#include <set>
#include <string>

#include "pipe/error.hpp"
#include "pipe/work_kind.hpp"

namespace libpipe {
namespace {

double type_bytes(const TensorType& t) {
  return static_cast<double>(numel(t.shape)) * static_cast<double>(dtype_size(t.dtype));
}

// What one micro-batch of chunk [begin, end) keeps from F to W, and the most a checkpointed group holds while it
// is recomputed in backward (0 without checkpointing). Groups of `interval` layers from the chunk's first, as the
// engine makes them: a group with parameters keeps only its input.
struct ChunkActivations {
  double kept = 0, recompute = 0;
  double gradients = 0;  // the gradients its layers' backward received, kept from B to W
  double workspace = 0;  // the largest layer's saved activations (its backward's gradients of them)
};
ChunkActivations chunk_activations(const ModelDescription& d, int begin, int end, int interval, double batch) {
  ChunkActivations a;
  for (int i = begin; i < end; ++i) {
    const LayerInfo& layer = d.layers[static_cast<std::size_t>(i)];
    a.gradients += type_bytes(layer.description.output) * batch;
    a.workspace = std::max(a.workspace, static_cast<double>(layer.description.activation_bytes) * batch);
  }
  const int step = interval > 0 ? interval : end - begin;
  for (int first = begin; first < end; first += step) {
    const int last = std::min(end, first + step);
    double all = 0;
    bool has_params = false;
    for (int i = first; i < last; ++i) {
      all += static_cast<double>(d.layers[static_cast<std::size_t>(i)].description.activation_bytes) * batch;
      has_params = has_params || !d.layers[static_cast<std::size_t>(i)].description.params.empty();
    }
    if (interval > 0 && has_params) {
      a.kept += type_bytes(d.layers[static_cast<std::size_t>(first)].input) * batch;
      a.recompute = std::max(a.recompute, all);
    } else {
      a.kept += all;
    }
  }
  return a;
}

// Bytes each parameter of a stage costs, apart from activations: its float32 master (split over the replicas
// under bf16 with --zero 1; in float32 the master is the value the layers compute with), its bfloat16 copy, its
// gradient and the optimizer's state (split under --zero 1).
struct PerParameter {
  double master, bf16_copy, gradient, optimizer;
  double total() const { return master + bf16_copy + gradient + optimizer; }
};
PerParameter per_parameter_bytes(const MemoryModelOptions& o) {
  const double shards = std::max(1, o.optimizer_shards);
  return {o.bf16 ? 4 / shards : 4.0, o.bf16 ? 2.0 : 0.0, 4.0, (o.optimizer == "adamw" ? 8.0 : 4.0) / shards};
}

}  // namespace

double peak_activation_bytes(const Schedule& schedule, const std::vector<double>& chunk_bytes, int* count,
                             const std::vector<double>* backward_bytes) {
  const std::vector<int> chunks =
      stage_chunks(schedule.placement, schedule.stage, schedule.stages, schedule.virtual_stages);
  double live = 0, peak = 0;
  int held = 0, peak_held = 0;
  for (const auto& step : schedule.steps)
    for (const auto& in : step) {
      if (in.kind == WorkKind::Forward) {
        live += chunk_bytes.at(static_cast<std::size_t>(chunks.at(static_cast<std::size_t>(in.chunk))));
        ++held;
        if (live > peak || (live == peak && held > peak_held)) peak = live, peak_held = held;
      }
      const auto global = static_cast<std::size_t>(chunks.at(static_cast<std::size_t>(in.chunk)));
      if (in.kind == WorkKind::BackwardInput && backward_bytes) {
        live += backward_bytes->at(global);
        if (live > peak) peak = live, peak_held = held;
      }
      if (in.kind == WorkKind::BackwardWeight) {
        live -= chunk_bytes.at(global) + (backward_bytes ? backward_bytes->at(global) : 0.0);
        --held;
      }
    }
  if (count) *count = peak_held;
  return peak;
}

std::vector<RankMemory> predict_memory(const ModelDescription& d, const Parts& parts,
                                       const std::vector<Schedule>& schedules, const MemoryModelOptions& o) {
  if (schedules.empty()) throw Error("the memory model needs every stage's schedule");
  const int S = schedules.front().stages, V = schedules.front().virtual_stages;
  if (static_cast<int>(parts.size()) != S * V + 1)
    throw Error("the memory model needs " + std::to_string(S * V) + " chunks (" + std::to_string(S) + " stages x " +
                std::to_string(V) + "), the partition has " + std::to_string(parts.size() - 1));
  validate_parts(parts, static_cast<std::int64_t>(d.layers.size()));
  if (o.optimizer != "adamw" && o.optimizer != "sgd")
    throw Error("the memory model knows optimizers adamw and sgd, not '" + o.optimizer + "'");
  const double batch = static_cast<double>(o.micro_batch_size);
  std::vector<double> chunk_bytes, chunk_gradients;
  std::vector<ChunkActivations> chunk_acts;
  for (int c = 0; c < S * V; ++c) {
    chunk_acts.push_back(chunk_activations(d, parts[c], parts[c + 1], o.checkpoint_interval, batch));
    chunk_bytes.push_back(chunk_acts.back().kept);
    chunk_gradients.push_back(chunk_acts.back().gradients);
  }
  std::vector<RankMemory> out;
  for (const Schedule& sch : schedules) {
    RankMemory m;
    m.stage = sch.stage;
    double params = 0, recompute = 0, boundaries = 0;
    std::set<std::string> ties_here;  // one storage per tie group on a stage
    for (int c : stage_chunks(sch.placement, sch.stage, S, V)) {
      for (int i = parts[c]; i < parts[c + 1]; ++i) {
        const LayerInfo& layer = d.layers[static_cast<std::size_t>(i)];
        for (const auto& p : layer.description.params) {
          if (p.tieable && !layer.tie.empty() && !ties_here.insert(layer.tie).second) continue;
          params += static_cast<double>(numel(p.shape));
        }
      }
      recompute = std::max(recompute, chunk_acts[static_cast<std::size_t>(c)].recompute);
      m.workspace = std::max(m.workspace, chunk_acts[static_cast<std::size_t>(c)].workspace);
      // The activation that comes in and the gradient that goes back, and the same at the chunk's far end.
      boundaries += type_bytes(d.layers[static_cast<std::size_t>(parts[c])].input) * batch +
                    type_bytes(d.layers[static_cast<std::size_t>(parts[c + 1] - 1)].description.output) * batch;
    }
    const PerParameter bytes = per_parameter_bytes(o);
    m.parameters = bytes.master * params;
    m.bf16_copies = bytes.bf16_copy * params;
    m.gradients = bytes.gradient * params;
    m.optimizer = bytes.optimizer * params;
    m.activations = peak_activation_bytes(sch, chunk_bytes, &m.peak_in_flight, &chunk_gradients) + recompute;
    m.buffers = 2 * boundaries;  // one being received and one being sent, each way
    m.runtime = o.runtime_bytes;
    out.push_back(m);
  }
  return out;
}

void StageMemoryBound::RangeMax::build(const std::vector<double>& values) {
  table.assign(1, values);
  for (std::size_t k = 1; (std::size_t{1} << k) <= values.size(); ++k) {
    const std::vector<double>& prev = table.back();
    const std::size_t half = std::size_t{1} << (k - 1);
    std::vector<double> next(values.size() - (std::size_t{1} << k) + 1);
    for (std::size_t i = 0; i < next.size(); ++i) next[i] = std::max(prev[i], prev[i + half]);
    table.push_back(std::move(next));
  }
}

double StageMemoryBound::RangeMax::operator()(int begin, int end) const {
  const auto length = static_cast<unsigned>(end - begin);
  const int k = 31 - __builtin_clz(length);
  return std::max(table[static_cast<std::size_t>(k)][static_cast<std::size_t>(begin)],
                  table[static_cast<std::size_t>(k)][static_cast<std::size_t>(end - (1 << k))]);
}

StageMemoryBound::StageMemoryBound(const ModelDescription& d, const std::vector<Schedule>& schedules,
                                   const MemoryModelOptions& o)
    : interval_(o.checkpoint_interval) {
  if (schedules.empty()) throw Error("the memory model needs every stage's schedule");
  if (schedules.front().virtual_stages != 1)
    throw Error("a memory limit needs one chunk per stage; the schedule has " +
                std::to_string(schedules.front().virtual_stages) + " (virtual stages)");
  if (o.optimizer != "adamw" && o.optimizer != "sgd")
    throw Error("the memory model knows optimizers adamw and sgd, not '" + o.optimizer + "'");
  const std::vector<double> unit(schedules.size(), 1.0);
  for (const Schedule& sch : schedules) {
    int held = 0;
    peak_activation_bytes(sch, unit, &held);
    in_flight_.push_back(held);
    // Every (held, between) the schedule passes through, then only those no other one dominates: by held
    // descending, a point stays when its between exceeds every between seen so far.
    std::set<std::pair<int, int>, std::greater<>> seen;
    int h = 0, b = 0;
    for (const auto& step : sch.steps)
      for (const auto& in : step) {
        if (in.kind == WorkKind::Forward) ++h;
        if (in.kind == WorkKind::BackwardInput) ++b;
        if (in.kind == WorkKind::BackwardWeight) --h, --b;
        seen.insert({h, b});
      }
    std::vector<Holding> frontier;
    int most_between = -1;
    for (const auto& [held, between] : seen)
      if (between > most_between) {
        frontier.push_back({held, between});
        most_between = between;
      }
    holdings_.push_back(frontier);
  }
  bytes_per_param_ = per_parameter_bytes(o).total();
  runtime_ = o.runtime_bytes;
  const double batch = static_cast<double>(o.micro_batch_size);
  const std::size_t n = d.layers.size();
  std::vector<double> in(n), out(n), activation(n), kept(n, 0.0), recompute(n, 0.0);
  param_prefix_.assign(n + 1, 0.0);
  activation_prefix_.assign(n + 1, 0.0);
  output_prefix_.assign(n + 1, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    const LayerInfo& layer = d.layers[i];
    double params = 0;
    for (const auto& p : layer.description.params) params += static_cast<double>(numel(p.shape));
    activation[i] = static_cast<double>(layer.description.activation_bytes) * batch;
    in[i] = type_bytes(layer.input) * batch;
    out[i] = type_bytes(layer.description.output) * batch;
    param_prefix_[i + 1] = param_prefix_[i] + params;
    activation_prefix_[i + 1] = activation_prefix_[i] + activation[i];
    output_prefix_[i + 1] = output_prefix_[i] + out[i];
  }
  if (interval_ > 0) {
    // A group starting at i keeps its input if it holds parameters, else everything; cut short by the stage's
    // end it may lose its parameters, and then keeps what it holds before its first layer with parameters.
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t full = std::min(n, i + static_cast<std::size_t>(interval_));
      double before_params = 0;
      std::size_t j = i;
      for (; j < full && d.layers[j].description.params.empty(); ++j) before_params += activation[j];
      kept[i] = j < full ? std::max(in[i], before_params) : before_params;
      recompute[i] = activation_prefix_[full] - activation_prefix_[i];
    }
  }
  kept_prefix_.assign(n + 1, 0.0);
  for (std::size_t i = 0; i < n; ++i) kept_prefix_[i + 1] = kept_prefix_[i] + kept[i];
  in_.build(in);
  out_.build(out);
  activation_.build(activation);
  group_kept_.build(kept);
  group_recompute_.build(recompute);
}

double StageMemoryBound::operator()(int stage, int begin, int end) const {
  const auto b = static_cast<std::size_t>(begin), e = static_cast<std::size_t>(end);
  double kept_bytes;
  double recompute = 0;
  if (interval_ > 0) {
    const int groups = (end - begin + interval_ - 1) / interval_;
    // Each group keeps at most the most any keeps; and all of them together at most what every layer would keep
    // if a group started there (exact when every layer is a group). The smaller of the two bounds holds.
    kept_bytes = std::min(groups * group_kept_(begin, end), kept_prefix_[e] - kept_prefix_[b]);
    recompute = group_recompute_(begin, end);
  } else {
    kept_bytes = activation_prefix_[e] - activation_prefix_[b];
  }
  const double gradients = output_prefix_[e] - output_prefix_[b];
  double activations = 0;
  for (const Holding& h : holdings_.at(static_cast<std::size_t>(stage)))
    activations = std::max(activations, h.held * kept_bytes + h.between * gradients);
  return bytes_per_param_ * (param_prefix_[e] - param_prefix_[b]) + activations + recompute +
         activation_(begin, end) + 2 * (in_(begin, end) + out_(begin, end)) + runtime_;
}

}  // namespace libpipe
