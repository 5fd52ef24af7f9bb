// The per-rank memory model (see memory_model.hpp).
#include "pipe/memory_model.hpp"

#include <algorithm>
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
};
ChunkActivations chunk_activations(const ModelDescription& d, int begin, int end, int interval, double batch) {
  ChunkActivations a;
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

}  // namespace

double peak_activation_bytes(const Schedule& schedule, const std::vector<double>& chunk_bytes, int* count) {
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
      if (in.kind == WorkKind::BackwardWeight) {
        live -= chunk_bytes.at(static_cast<std::size_t>(chunks.at(static_cast<std::size_t>(in.chunk))));
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
  std::vector<double> chunk_bytes;
  std::vector<ChunkActivations> chunk_acts;
  for (int c = 0; c < S * V; ++c) {
    chunk_acts.push_back(chunk_activations(d, parts[c], parts[c + 1], o.checkpoint_interval, batch));
    chunk_bytes.push_back(chunk_acts.back().kept);
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
      // The activation that comes in and the gradient that goes back, and the same at the chunk's far end.
      boundaries += type_bytes(d.layers[static_cast<std::size_t>(parts[c])].input) * batch +
                    type_bytes(d.layers[static_cast<std::size_t>(parts[c + 1] - 1)].description.output) * batch;
    }
    m.parameters = 4 * params;
    m.bf16_copies = o.bf16 ? 2 * params : 0;
    m.gradients = 4 * params;
    m.optimizer = (o.optimizer == "adamw" ? 8 : 4) * params;
    m.activations = peak_activation_bytes(sch, chunk_bytes, &m.peak_in_flight) + recompute;
    m.buffers = 2 * boundaries;  // one being received and one being sent, each way
    out.push_back(m);
  }
  return out;
}

}  // namespace libpipe
