// pipe-bench train: one rank's training step (forward, backward, AdamW) over a
// whole shipped model on synthetic data, with tokens/s, model GFLOP/s and the
// share of the backend's own sgemm rate measured in the same run, and the
// GEMMs' own rate and share of the step time inside the steps. The loss is
// checked in the same loop (finite, and falling over the timed steps since the
// batch repeats), as nccl-tests check their buffers.
#include <boost/program_options.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench.hpp"
#include "pipe/backend.hpp"
#include "pipe/cpu_info.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/init.hpp"
#include "pipe/model.hpp"
#include "pipe/ops.hpp"
#include "pipe/optimizer.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

namespace pipe_bench {
namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The backend's sgemm rate on a square 1024 problem: the ceiling the model's
// GEMMs are measured against (FACTS.md: ~115-130 GFLOP/s per core here). The
// best call of those in one second, not their mean: a ceiling must not sink
// when another process takes the core for a moment (the mean read 135-147
// GFLOP/s where single calls ran at 150-153, and gpt-small's share came out
// above 100% once).
double sgemm_gflops() {
  const std::int64_t n = 1024;
  auto a = libpipe::Tensor::zeros({n, n}, libpipe::DType::float32);
  auto b = libpipe::Tensor::zeros({n, n}, libpipe::DType::float32);
  auto c = libpipe::Tensor::zeros({n, n}, libpipe::DType::float32);
  libpipe::ops::fill(a, 0.5f);
  libpipe::ops::fill(b, 0.25f);
  auto& backend = libpipe::backend_for(libpipe::Device::cpu);
  backend.gemm(false, true, n, n, n, 1.0f, a.f32(), n, b.f32(), n, 0.0f, c.f32(), n);  // warm-up
  double best = 1e300;
  const auto t0 = Clock::now();
  do {
    const auto call = Clock::now();
    backend.gemm(false, true, n, n, n, 1.0f, a.f32(), n, b.f32(), n, 0.0f, c.f32(), n);
    best = std::min(best, seconds_since(call));
  } while (seconds_since(t0) < 1.0);
  if (std::fabs(c.f32()[0] - 0.125f * n) > 1e-3f * n) throw libpipe::Error("sgemm reference computed a wrong value");
  return 2.0 * n * n * n / best / 1e9;
}

struct Model {
  libpipe::ModelSpec spec;
  libpipe::ModelDescription description;
  std::vector<std::unique_ptr<libpipe::Layer>> layers;
};

// Random inputs and labels matching the model's input and its loss layer.
void make_batch(const Model& m, std::int64_t batch, libpipe::Rng& rng, libpipe::Tensor& input,
                libpipe::Tensor& labels) {
  libpipe::Shape in_shape{batch};
  for (auto d : m.description.input.shape) in_shape.push_back(d);
  const libpipe::LossLabels& loss = libpipe::model_loss(m.description);
  libpipe::Shape label_shape{batch};
  for (auto d : loss.type.shape) label_shape.push_back(d);
  if (m.description.input.dtype == libpipe::DType::int32) {
    // Token ids: the embedding's vocabulary is the first parameter's rows.
    const std::int64_t vocab = m.description.layers.front().description.params.front().shape.front();
    input = libpipe::Tensor::zeros(in_shape, libpipe::DType::int32);
    for (std::int64_t i = 0; i < input.numel(); ++i) input.i32()[i] = static_cast<std::int32_t>(rng.next_u64() % vocab);
  } else {
    input = libpipe::Tensor::zeros(in_shape, libpipe::DType::float32);
    for (std::int64_t i = 0; i < input.numel(); ++i) input.f32()[i] = static_cast<float>(rng.normal());
  }
  // Labels of the type the loss declares: random class ids or normal targets.
  labels = libpipe::Tensor::zeros(label_shape, loss.type.dtype);
  if (loss.type.dtype == libpipe::DType::int32) {
    for (std::int64_t i = 0; i < labels.numel(); ++i)
      labels.i32()[i] = static_cast<std::int32_t>(rng.next_u64() % static_cast<std::uint64_t>(loss.classes));
  } else {
    for (std::int64_t i = 0; i < labels.numel(); ++i) labels.f32()[i] = static_cast<float>(rng.normal());
  }
}

struct StepTimes {
  double forward = 0, backward = 0, optimizer = 0;
  double loss = 0;
};

StepTimes train_step(Model& m, libpipe::Optimizer& optimizer, const libpipe::Tensor& input,
                     const libpipe::Tensor& labels, float lr) {
  StepTimes t;
  const std::int64_t batch = input.shape().front();
  std::vector<libpipe::LayerContext> contexts(m.layers.size());
  contexts.back().labels = labels;
  auto t0 = Clock::now();
  libpipe::Tensor x = input;
  for (std::size_t i = 0; i < m.layers.size(); ++i) x = m.layers[i]->forward(contexts[i], x);
  t.forward = seconds_since(t0);
  libpipe::Tensor loss_host = x;  // [B] per-sample losses on the CPU backend
  for (std::int64_t b = 0; b < batch; ++b) t.loss += loss_host.f32()[b] / static_cast<double>(batch);

  t0 = Clock::now();
  libpipe::Tensor dy = libpipe::Tensor::empty({batch}, libpipe::DType::float32);
  libpipe::ops::fill(dy, 1.0f / static_cast<float>(batch));  // d(mean loss) / d(sample loss)
  for (std::size_t i = m.layers.size(); i-- > 0;) {
    libpipe::Tensor dx = m.layers[i]->backward_input(contexts[i], dy);
    m.layers[i]->backward_weight(contexts[i], dy);
    contexts[i] = libpipe::LayerContext{};  // free the saved activations as soon as possible
    dy = dx;
  }
  t.backward = seconds_since(t0);

  t0 = Clock::now();
  optimizer.step(lr);
  for (auto& layer : m.layers) libpipe::zero_grads(*layer);
  t.optimizer = seconds_since(t0);
  return t;
}

}  // namespace

int run_train(const std::vector<std::string>& args, const std::string& command_line) {
  std::string model_name = "gpt-tiny";
  std::int64_t batch = 16;
  int steps = 10, warmup = 2, threads = 1;
  float lr = 1e-4f;  // small: the same batch repeats and its loss must fall at every model size
  bool json = false;
  po::options_description d("pipe-bench train options");
  // clang-format off
  d.add_options()
    ("model", po::value(&model_name)->default_value(model_name), "model file or shipped model name")
    ("batch", po::value(&batch)->default_value(batch), "samples per step (one micro-batch)")
    ("steps", po::value(&steps)->default_value(steps), "timed steps")
    ("warmup", po::value(&warmup)->default_value(warmup), "untimed steps first")
    ("threads", po::value(&threads)->default_value(threads), "CPU backend threads (default 1, as one rank of many)")
    ("lr", po::value(&lr)->default_value(lr, "1e-4"), "AdamW learning rate")
    ("json", po::bool_switch(&json), "print one JSON object")
    ("help,h", "show this help");
  // clang-format on
  po::variables_map vm;
  if (!parse_flags(args, d, "usage: pipe-bench train [--model M] [--batch B] [--steps N] [--json]", vm)) return 0;
  if (batch < 1 || steps < 1 || warmup < 0 || threads < 1)
    throw libpipe::Error("--batch, --steps and --threads must be at least 1 and --warmup at least 0");
  if (!(lr > 0) || !std::isfinite(lr)) throw libpipe::Error("--lr must be a positive number, not " + std::to_string(lr));
  libpipe::set_cpu_threads(threads);

  Model m;
  libpipe::LayerRegistry registry;
  libpipe::load_plugins(registry, libpipe::PluginSearch{true, true, {}});
  m.spec = libpipe::load_model_file(libpipe::resolve_model_path(model_name));
  m.description = libpipe::describe_model(m.spec, registry);
  (void)libpipe::model_loss(m.description);  // the model ends in a loss
  std::vector<libpipe::Layer*> raw;
  for (std::size_t i = 0; i < m.spec.layers.size(); ++i) {
    const auto& spec = m.spec.layers[i];
    m.layers.push_back(registry.get(spec.type).create(spec.args, m.description.layers[i].input,
                                                      libpipe::CreateContext{static_cast<int>(i), 1234}));
    libpipe::allocate_grads(*m.layers.back());
    raw.push_back(m.layers.back().get());
  }
  // One rank holds the whole model: a tied weight is one tensor here.
  for (const auto& tie : m.description.ties) {
    std::vector<libpipe::Layer*> members;
    for (int i : tie.layers) members.push_back(raw[i]);
    libpipe::share_tied_parameter(members);
  }
  libpipe::Optimizer optimizer(libpipe::OptimizerConfig{}, libpipe::parameters_of(raw));

  libpipe::Rng rng(42);
  libpipe::Tensor input, labels;
  make_batch(m, batch, rng, input, labels);
  for (int s = 0; s < warmup; ++s) train_step(m, optimizer, input, labels, lr);

  StepTimes total;
  double first_loss = 0, last_loss = 0;
  bool finite = true;
  const libpipe::GemmTotals gemms_before = libpipe::cpu_gemm_totals();
  auto t0 = Clock::now();
  for (int s = 0; s < steps; ++s) {
    StepTimes t = train_step(m, optimizer, input, labels, lr);
    total.forward += t.forward;
    total.backward += t.backward;
    total.optimizer += t.optimizer;
    finite = finite && std::isfinite(t.loss);
    if (s == 0) first_loss = t.loss;
    last_loss = t.loss;
  }
  const double elapsed = seconds_since(t0);
  const libpipe::GemmTotals gemms_after = libpipe::cpu_gemm_totals();
  const double peak = sgemm_gflops();
  // The GEMMs inside the timed steps: their own rate, and the part of the step they take (the rest is the other
  // ops: attention, norms, activations, the optimizer).
  const double gemm_seconds = gemms_after.seconds - gemms_before.seconds;
  const double gemm_gflops = gemm_seconds > 0 ? (gemms_after.flops - gemms_before.flops) / gemm_seconds / 1e9 : 0.0;
  const double gemm_time_share = gemm_seconds / elapsed;

  const std::int64_t tokens_per_sample =
      m.description.input.dtype == libpipe::DType::int32 ? libpipe::numel(m.description.input.shape) : 1;
  const double tokens_per_s = static_cast<double>(batch * tokens_per_sample) * steps / elapsed;
  const double gflops = static_cast<double>(m.description.flops) * batch * steps / elapsed / 1e9;
  const bool ok = finite && (steps < 3 || last_loss < first_loss);

  if (json) {
    nlohmann::json j = {{"benchmark", "train"},
                        {"model", m.description.name},
                        {"params", m.description.params},
                        {"batch", batch},
                        {"steps", steps},
                        {"threads", threads},
                        {"step_ms", 1e3 * elapsed / steps},
                        {"forward_ms", 1e3 * total.forward / steps},
                        {"backward_ms", 1e3 * total.backward / steps},
                        {"optimizer_ms", 1e3 * total.optimizer / steps},
                        {"tokens_per_s", tokens_per_s},
                        {"gflops", gflops},
                        {"sgemm_gflops", peak},
                        {"sgemm_share", gflops / peak},
                        {"gemm_gflops", gemm_gflops},
                        {"gemm_share", gemm_gflops / peak},
                        {"gemm_time_share", gemm_time_share},
                        {"gemm_library", libpipe::cpu_gemm_library()},
                        {"first_loss", first_loss},
                        {"last_loss", last_loss},
                        {"ok", ok},
                        {"command", command_line}};
    std::cout << j.dump() << "\n";
  } else {
    std::printf("# %s\n", command_line.c_str());
    std::printf("# one rank, %d thread(s); model FLOPs from describe (forward + backward), AdamW step included\n",
                threads);
    std::printf("# CPU GEMMs: %s; sgemm: its best call on a square 1024 product (the share's ceiling)\n",
                libpipe::cpu_gemm_library().c_str());
    std::printf("# %10s %11s %6s %9s %9s %9s %9s %11s %9s %9s %7s %6s\n", "model", "params", "batch", "step(ms)",
                "fwd(ms)", "bwd(ms)", "opt(ms)", "tokens/s", "GFLOP/s", "sgemm", "share", "check");
    std::printf("  %10s %11s %6lld %9.2f %9.2f %9.2f %9.2f %11.0f %9.1f %9.1f %6.1f%% %6s\n",
                m.description.name.c_str(), libpipe::with_commas(m.description.params).c_str(),
                static_cast<long long>(batch), 1e3 * elapsed / steps, 1e3 * total.forward / steps,
                1e3 * total.backward / steps, 1e3 * total.optimizer / steps, tokens_per_s, gflops, peak,
                100 * gflops / peak, ok ? "OK" : "WRONG");
    std::printf("# GEMMs inside the steps: %.1f GFLOP/s, %.1f%% of the sgemm ceiling; %.1f%% of the step time "
                "(the rest: the other ops)\n",
                gemm_gflops, 100 * gemm_gflops / peak, 100 * gemm_time_share);
    std::printf("# loss %.4f -> %.4f over the timed steps (same batch: it must fall)\n", first_loss, last_loss);
  }
  return ok ? 0 : 1;
}

}  // namespace pipe_bench
