// Per-layer timing for profile partitioning (see profile.hpp).
#include "pipe/profile.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "run/mpi_check.hpp"
#include "pipe/backend.hpp"
#include "pipe/collective.hpp"
#include "pipe/error.hpp"
#include "pipe/init.hpp"
#include "pipe/ops.hpp"

namespace libpipe {
namespace {

Shape batched(std::int64_t b, const Shape& s) {
  Shape out{b};
  out.insert(out.end(), s.begin(), s.end());
  return out;
}

// An input of the layer's type on `device`: small random floats, or
// token/class id 0 (always valid), so that timing never depends on data.
Tensor sample_input(const TensorType& type, std::int64_t batch, Rng& rng, Device device) {
  Tensor t = Tensor::zeros(batched(batch, type.shape), type.dtype);
  if (type.dtype == DType::float32)
    for (std::int64_t i = 0; i < t.numel(); ++i) t.host_data<float>()[i] = static_cast<float>(0.1 * rng.normal());
  return ops::to_device(t, device);
}

double time_layer(const ModelSpec& model, const ModelDescription& description, const LayerRegistry& registry,
                  int index, std::int64_t batch, Device device, int repeats) {
  const LayerSpec& spec = model.layers[index];
  const LayerInfo& info = description.layers[index];
  auto layer = registry.get(spec.type).create(spec.args, info.input, CreateContext{index, 1, device});
  allocate_grads(*layer);
  Rng rng(static_cast<std::uint64_t>(index) + 1);
  Tensor x = sample_input(info.input, batch, rng, device);
  Tensor dy = Tensor::zeros(batched(batch, info.description.output.shape), DType::float32, device);
  ops::fill(dy, 1e-3f);
  // A loss gets zero labels of the type it declares (class 0, or zero targets).
  Tensor labels;
  if (info.description.loss)
    labels = Tensor::zeros(batched(batch, info.description.loss->type.shape), info.description.loss->type.dtype, device);
  // A device runs ops asynchronously: the clock is read with nothing in flight.
  Backend& backend = backend_for(device);
  double best = 1e300;
  for (int r = 0; r <= repeats; ++r) {
    LayerContext ctx;
    ctx.labels = labels;
    backend.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    layer->forward(ctx, x);
    layer->backward_input(ctx, dy);
    layer->backward_weight(ctx, dy);
    backend.synchronize();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::min(best, seconds);  // run 0 warms caches and the allocator
  }
  return best;
}

}  // namespace

std::vector<int> same_cost_layers(const ModelSpec& model, const ModelDescription& description) {
  if (model.layers.size() != description.layers.size())
    throw Error("same_cost_layers: the model has " + std::to_string(model.layers.size()) +
                " layers but its description " + std::to_string(description.layers.size()));
  const int n = static_cast<int>(model.layers.size());
  std::vector<int> first(n);
  for (int i = 0; i < n; ++i) {
    const LayerSpec& layer = model.layers[i];
    first[i] = i;
    for (int j = 0; j < i; ++j) {
      const LayerSpec& other = model.layers[j];
      if (first[j] == j && layer.type == other.type && layer.tie == other.tie &&
          layer.args.values() == other.args.values() && description.layers[i].input == description.layers[j].input) {
        first[i] = j;
        break;
      }
    }
  }
  return first;
}

std::vector<double> profile_layer_times(const ModelSpec& model, const ModelDescription& description,
                                        const LayerRegistry& registry, MPI_Comm comm, std::int64_t micro_batch_size,
                                        Device device, int repeats) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const int n = static_cast<int>(description.layers.size());
  std::vector<double> times(n, 0.0);
  // A failure on one rank must not leave the others in the all-reduce: carry
  // it through as a flag and throw on every rank.
  double failed = 0;
  std::string why;
  std::vector<int> same;
  std::vector<int> timed;  // one layer of each group, spread over the ranks
  try {
    same = same_cost_layers(model, description);
    for (int i = 0; i < n; ++i)
      if (same[i] == i) timed.push_back(i);
    for (std::size_t k = static_cast<std::size_t>(rank); k < timed.size(); k += static_cast<std::size_t>(size))
      times[timed[k]] = time_layer(model, description, registry, timed[k], micro_batch_size, device, repeats);
  } catch (const std::exception& e) {
    failed = 1;
    why = e.what();
  }
  times.push_back(failed);
  allreduce(comm, times.data(), n + 1, MPI_DOUBLE, MPI_SUM, "its layer timings");
  if (times.back() > 0)
    throw Error("profiling the layers failed" + (why.empty() ? std::string(" on another rank") : ": " + why));
  times.pop_back();
  for (int i = 0; i < n; ++i) times[i] = times[same[i]];
  return times;
}

}  // namespace libpipe
