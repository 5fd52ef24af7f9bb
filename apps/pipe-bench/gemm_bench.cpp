// pipe-bench gemm: the backend's GEMMs at the shapes a model's training step
// runs, on one device (--device cpu|cuda) and GEMM math (--dtype fp32|tf32|
// bf16). The shapes are those the model's layers list in their descriptions
// (LayerDescription::gemms): for a linear map its forward product and both
// backward products (input gradient, weight gradient), for an attention the
// batched products over B*H heads (scores Q K^T and P V forward; dP, dV, dQ,
// dK backward), at rows = micro-batch x sequence. Each shape is timed over --repeat calls after
// --warmup calls, between Backend::synchronize() calls (the best of 3 such
// rounds, as the mean of its calls), and reported in
// TFLOP/s beside the device's dense peak for that math when the device is in
// the table below ("unknown peak" otherwise). The overall figure weights each
// shape by how often a training step runs it. Each product is checked once
// after timing at sampled entries against a double-precision dot product, as
// the other benchmarks check what they time (#wrong; exit 1 on a wrong one).
// With --dtype bf16 the linear layers' GEMMs run as training runs them under
// mixed precision: bfloat16 operands, a float32 C for the forward (its bias and
// activation epilogue) and the weight gradient, a bfloat16 C for the input
// gradient; attention's batched products keep float32 operands on bf16 math.
#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench.hpp"
#include "pipe/backend.hpp"
#include "pipe/cuda.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/model.hpp"
#include "pipe/ops.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/tensor.hpp"

namespace pipe_bench {
namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;
using libpipe::Device;
using libpipe::DType;
using libpipe::GemmMath;
using libpipe::Tensor;

// Dense (no sparsity) tensor-core / FP32 peaks from NVIDIA's data sheets, TFLOP/s: bf16, tf32, fp32.
// Variants with other clocks and power (H100/H200 NVL, ...) are not in the table: "unknown peak".
struct Peak {
  const char* match;       // substring of cuda_device_description()
  const char* exclude[2];  // ... unless it also contains one of these
  const char* name;
  double bf16, tf32, fp32;
};
const Peak kPeaks[] = {
    {"H200", {"NVL", "PCIe"}, "H200 SXM", 989, 494, 67},
    {"H100", {"NVL", "PCIe"}, "H100 SXM", 989, 494, 67},
    {"H100 PCIe", {nullptr, nullptr}, "H100 PCIe", 756, 378, 51},
    {"A100", {nullptr, nullptr}, "A100", 312, 156, 19.5},
};

// The dense peak in TFLOP/s, 0 when the device is not in the table.
double peak_tflops(const std::string& description, GemmMath math, std::string& which) {
  for (const Peak& p : kPeaks) {
    if (description.find(p.match) == std::string::npos) continue;
    const bool excluded = std::any_of(std::begin(p.exclude), std::end(p.exclude), [&](const char* e) {
      return e && description.find(e) != std::string::npos;
    });
    if (excluded) continue;
    which = p.name;
    return math == GemmMath::bf16 ? p.bf16 : math == GemmMath::tf32 ? p.tf32 : p.fp32;
  }
  return 0;
}

// One GEMM shape of a training step: C = op(A) op(B) (+ beta C), `batch` times at fixed strides.
struct Gemm {
  std::string layer, pass;
  bool ta = false, tb = false;
  std::int64_t m = 0, n = 0, k = 0, batch = 1;
  float beta = 0.0f;
  std::int64_t count = 0;  // how often one training step (one micro-batch) runs it
  double us = 0;
  int wrong = 0;
  double flop() const { return 2.0 * static_cast<double>(m) * n * k * batch; }
};

std::string key(const Gemm& g) { return g.layer + "|" + g.pass; }

struct ModelShapes {
  std::string name;
  std::int64_t seq = 0;  // tokens per sample (0: not a token model)
  std::int64_t rows = 0;
  std::vector<Gemm> gemms;
};

// The GEMMs of one micro-batch's training step: what each layer's description lists per sample
// (LayerDescription::gemms), scaled by the micro-batch along the dimension each names, and counted once per
// distinct product. --seq sets the model's token count before it is described.
ModelShapes model_gemms(const std::string& model, std::int64_t micro_batch, std::int64_t seq_flag) {
  libpipe::ModelSpec spec = libpipe::load_model_file(libpipe::resolve_model_path(model));
  ModelShapes s;
  s.name = spec.name;
  libpipe::Shape& in = spec.input.shape;
  if (spec.input.dtype == libpipe::DType::int32) {  // token ids [T]
    if (seq_flag > 0 && !in.empty()) in.back() = seq_flag;
    s.seq = in.empty() ? 1 : in.back();
    s.rows = micro_batch * s.seq;
  } else {  // features [..., F]: every leading dimension is a row
    if (seq_flag > 0) throw libpipe::Error("--seq applies to token models only ('" + spec.name + "' takes floats)");
    s.rows = micro_batch;
    for (std::size_t i = 0; i + 1 < in.size(); ++i) s.rows *= in[i];
  }
  libpipe::LayerRegistry registry;
  libpipe::load_plugins(registry, libpipe::PluginSearch{true, true, {}});
  const libpipe::ModelDescription description = libpipe::describe_model(spec, registry);
  for (const libpipe::LayerInfo& layer : description.layers) {
    for (const libpipe::GemmShape& shape : layer.description.gemms) {
      Gemm g{shape.layer, shape.pass, shape.trans_a, shape.trans_b, shape.m, shape.n, shape.k, shape.batch,
             shape.accumulate ? 1.0f : 0.0f};
      std::int64_t& scaled = shape.per_sample == 'n' ? g.n : shape.per_sample == 'k' ? g.k
                             : shape.per_sample == 'b' ? g.batch : g.m;
      scaled *= micro_batch;
      auto it = std::find_if(s.gemms.begin(), s.gemms.end(), [&](const Gemm& o) { return key(o) == key(g); });
      if (it == s.gemms.end()) {
        g.count = 1;
        s.gemms.push_back(g);
      } else {
        ++it->count;
      }
    }
  }
  if (s.gemms.empty()) throw libpipe::Error("model '" + spec.name + "' has no layer that lists its GEMMs");
  return s;
}

// Matrices are filled from one random tile of kTile floats (uploaded once, copied device to device), so that the
// host knows every element without reading the device's memory back: element i of a matrix filled at offset `off`
// is tile[(i + off) % kTile]. kTile is odd, so rows do not line up with it.
constexpr std::int64_t kTile = 1048573;

struct Tile {
  std::vector<float> host;
  Tensor device;
};

void fill_from_tile(libpipe::Backend& be, Tile& tile, float* dst, std::int64_t n, std::int64_t off) {
  for (std::int64_t s = 0; s < n;) {
    const std::int64_t at = (s + off) % kTile, len = std::min(n - s, kTile - at);
    be.copy(dst + s, tile.device.f32() + at, len);
    s += len;
  }
}

float tile_at(const Tile& tile, std::int64_t i, std::int64_t off) {
  return tile.host[static_cast<std::size_t>((i + off) % kTile)];
}

// Time one shape; then one product with beta = 0, checked at 48 sampled entries. Returns the mean microseconds.
void run_one(libpipe::Backend& be, Device device, Tile& tile, Gemm& g, int warmup, int repeat, double tol,
             bool bf16_storage, std::mt19937& rng) {
  const std::int64_t rows_a = g.ta ? g.k : g.m, cols_a = g.ta ? g.m : g.k;
  const std::int64_t rows_b = g.tb ? g.n : g.k, cols_b = g.tb ? g.k : g.n;
  const std::int64_t lda = cols_a, ldb = cols_b, ldc = g.n;
  const std::int64_t sa = rows_a * lda, sb = rows_b * ldb, sc = g.m * ldc;
  const std::int64_t off_a = 0, off_b = 77777;
  Tensor a = Tensor::empty({sa * g.batch}, libpipe::DType::float32, device);
  Tensor b = Tensor::empty({sb * g.batch}, libpipe::DType::float32, device);
  Tensor c = Tensor::empty({sc * g.batch}, libpipe::DType::float32, device);
  fill_from_tile(be, tile, a.f32(), a.numel(), off_a);
  fill_from_tile(be, tile, b.f32(), b.numel(), off_b);
  fill_from_tile(be, tile, c.f32(), c.numel(), 333);
  // Mixed precision's linear GEMMs: bfloat16 copies of A and B (and of C for the input gradient).
  const bool typed = bf16_storage && g.batch == 1;
  const DType c_type = typed && g.pass == "input grad" ? DType::bfloat16 : DType::float32;
  Tensor a16, b16, c16;
  if (typed) {
    a16 = libpipe::ops::to_dtype(a, DType::bfloat16);
    b16 = libpipe::ops::to_dtype(b, DType::bfloat16);
    if (c_type == DType::bfloat16) c16 = libpipe::ops::to_dtype(c, DType::bfloat16);
  }
  void* c_typed = c_type == DType::bfloat16 ? c16.data() : c.data();
  auto call = [&](float beta) {
    if (typed)
      be.gemm(g.ta, g.tb, g.m, g.n, g.k, 1.0f, {a16.data(), DType::bfloat16}, lda, {b16.data(), DType::bfloat16}, ldb,
              beta, {c_typed, c_type}, ldc);
    else if (g.batch == 1)
      be.gemm(g.ta, g.tb, g.m, g.n, g.k, 1.0f, a.f32(), lda, b.f32(), ldb, beta, c.f32(), ldc);
    else
      be.gemm_strided_batched(g.ta, g.tb, g.m, g.n, g.k, 1.0f, a.f32(), lda, sa, b.f32(), ldb, sb, beta, c.f32(), ldc,
                              sc, g.batch);
  };
  for (int i = 0; i < warmup; ++i) call(g.beta);
  be.synchronize();
  g.us = 1e300;
  for (int round = 0; round < 3; ++round) {  // the best of 3 rounds: a busy host delays one round, not all
    const auto t0 = Clock::now();
    for (int i = 0; i < repeat; ++i) call(g.beta);
    be.synchronize();
    g.us = std::min(g.us, std::chrono::duration<double>(Clock::now() - t0).count() * 1e6 / repeat);
  }

  call(0.0f);
  if (c_type == DType::bfloat16) libpipe::ops::convert_into(c, c16);  // read back through the float32 C
  be.synchronize();
  std::uniform_int_distribution<std::int64_t> pb(0, g.batch - 1), pi(0, g.m - 1), pj(0, g.n - 1);
  g.wrong = 0;
  for (int s = 0; s < 48; ++s) {
    const std::int64_t bi = pb(rng), i = pi(rng), j = pj(rng);
    double want = 0, mag = 0;
    for (std::int64_t p = 0; p < g.k; ++p) {
      const double x = tile_at(tile, bi * sa + (g.ta ? p * lda + i : i * lda + p), off_a);
      const double y = tile_at(tile, bi * sb + (g.tb ? j * ldb + p : p * ldb + j), off_b);
      want += x * y;
      mag += std::fabs(x * y);
    }
    float got = 0;
    be.copy_to_host(&got, c.f32() + bi * sc + i * ldc + j, sizeof(float));
    if (!(std::fabs(got - want) <= tol * mag + 1e-6)) ++g.wrong;
  }
}

}  // namespace

int run_gemm(const std::vector<std::string>& args, const std::string& command_line) {
  std::string model = "gpt2-124m", device_name, dtype = "fp32", json_file;
  std::int64_t micro_batch = 8, seq = 0;
  int warmup = 3, repeat = 20, threads = 1;
  bool json = false;
  po::options_description d("pipe-bench gemm options");
  // clang-format off
  d.add_options()
    ("model", po::value(&model)->default_value(model), "model file or shipped model whose GEMM shapes are timed")
    ("micro-batch-size", po::value(&micro_batch)->default_value(micro_batch), "samples per micro-batch (B)")
    ("seq", po::value(&seq), "tokens per sample (default: the model's input length)")
    ("device", po::value(&device_name), "cpu or cuda (default: cuda when a GPU is usable, else cpu)")
    ("dtype", po::value(&dtype)->default_value(dtype),
     "GEMM math: fp32, tf32 or bf16 (tensors stay fp32; tf32/bf16 round GEMM inputs on the tensor cores; cuda only)")
    ("warmup", po::value(&warmup)->default_value(warmup), "untimed calls per shape")
    ("repeat", po::value(&repeat)->default_value(repeat), "timed calls per round (3 rounds per shape; the best round's mean is reported)")
    ("threads", po::value(&threads)->default_value(threads), "CPU backend threads (--device cpu)")
    ("json", po::bool_switch(&json), "print one JSON object instead of the table")
    ("json-file", po::value(&json_file), "also write that JSON object to FILE")
    ("help,h", "show this help");
  // clang-format on
  po::variables_map vm;
  if (!parse_flags(args, d,
                   "usage: pipe-bench gemm [--model M] [--micro-batch-size B] [--seq T] [--device cpu|cuda] "
                   "[--dtype fp32|tf32|bf16] [--warmup N] [--repeat N] [--json] [--json-file FILE]\n\n"
                   "TFLOP/s of the backend's GEMMs at the shapes of one micro-batch's training step of the model\n"
                   "(forward and both backward products of every linear layer and the LM head, and attention's\n"
                   "batched products), against the device's dense peak for the math when it is known.\n"
                   "On the CPU use small shapes, e.g. --model gpt-tiny --micro-batch-size 1.",
                   vm))
    return 0;
  if (micro_batch < 1 || warmup < 0 || repeat < 1 || threads < 1)
    throw libpipe::Error("--micro-batch-size, --repeat and --threads must be positive, --warmup not negative");
  const GemmMath math = libpipe::parse_gemm_math(dtype);
  std::string description;
  const Device device = bench_device(device_name, threads, description);
  if (device == Device::cuda)
    libpipe::set_cuda_gemm_math(math);
  else if (math == GemmMath::tf32)  // --dtype bf16 runs on the CPU too: its GEMMs widen bfloat16 operands
    throw libpipe::Error("--dtype tf32 needs --device cuda (TF32 is the tensor cores' format)");
  if (vm.count("seq") && seq < 1) throw libpipe::Error("--seq must be at least 1, not " + std::to_string(seq));
  ModelShapes shapes = model_gemms(model, micro_batch, vm.count("seq") ? seq : 0);
  std::string peak_name;
  const double peak = device == Device::cuda ? peak_tflops(description, math, peak_name) : 0.0;
  // The check's bound, relative to sum |a_i b_i|: a rounding of each input (2^-11 tf32, with truncation 2^-10;
  // 2^-8 bf16) per factor, and fp32 accumulation over up to 50257 terms.
  const double tol = math == GemmMath::bf16 ? 1e-2 : math == GemmMath::tf32 ? 3e-3 : 1e-4;

  libpipe::Backend& be = libpipe::backend_for(device);
  std::mt19937 rng(11);
  Tile tile;
  tile.host.resize(kTile);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& x : tile.host) x = dist(rng);
  tile.device = Tensor::empty({kTile}, libpipe::DType::float32, device);
  be.copy_from_host(tile.device.data(), tile.host.data(), tile.host.size() * sizeof(float));
  for (Gemm& g : shapes.gemms) run_one(be, device, tile, g, warmup, repeat, tol, math == GemmMath::bf16, rng);

  double flop = 0, us = 0;
  int wrong = 0;
  for (const Gemm& g : shapes.gemms) flop += g.count * g.flop(), us += g.count * g.us, wrong += g.wrong;
  const double overall = flop / us / 1e6;  // TFLOP/s
  {
    nlohmann::json j = {{"benchmark", "gemm"},
                        {"command", command_line},
                        {"device", libpipe::device_name(device)},
                        {"device_description", description},
                        {"dtype", libpipe::gemm_math_name(math)},
                        {"model", shapes.name},
                        {"micro_batch", micro_batch},
                        {"seq", shapes.seq},
                        {"rows", shapes.rows},
                        {"warmup", warmup},
                        {"repeat", repeat},
                        {"peak_tflops", peak > 0 ? nlohmann::json(peak) : nlohmann::json(nullptr)},
                        {"peak_of", peak_name},
                        {"overall_tflops", overall},
                        {"overall_pct_of_peak", peak > 0 ? nlohmann::json(100 * overall / peak) : nlohmann::json(nullptr)},
                        {"gemm_ms_per_micro_batch", us / 1e3},
                        {"wrong", wrong}};
    for (const Gemm& g : shapes.gemms)
      j["gemms"].push_back({{"layer", g.layer},
                            {"pass", g.pass},
                            {"trans_a", g.ta},
                            {"trans_b", g.tb},
                            {"m", g.m},
                            {"n", g.n},
                            {"k", g.k},
                            {"batch", g.batch},
                            {"per_step", g.count},
                            {"us", g.us},
                            {"tflops", g.flop() / g.us / 1e6},
                            {"pct_of_peak", peak > 0 ? nlohmann::json(100 * g.flop() / g.us / 1e6 / peak)
                                                 : nlohmann::json(nullptr)},
                            {"wrong", g.wrong}});
    if (!json_file.empty()) {
      std::ofstream f(json_file);
      f << j.dump() << "\n";
      if (!f) throw libpipe::Error("--json-file " + json_file + ": cannot write the file");
    }
    if (json) {
      std::cout << j.dump() << "\n";
      return wrong == 0 ? 0 : 1;
    }
  }
  std::printf("# %s\n", command_line.c_str());
  std::printf("# %s: micro-batch %ld x seq %ld = %ld rows; device %s (%s); GEMM math %s; %d warm-up calls, best of 3 x %d timed\n",
              shapes.name.c_str(), static_cast<long>(micro_batch), static_cast<long>(shapes.seq),
              static_cast<long>(shapes.rows), libpipe::device_name(device), description.c_str(),
              libpipe::gemm_math_name(math), warmup, repeat);
  if (peak > 0)
    std::printf("# peak: %.1f TFLOP/s dense %s (%s data sheet)\n", peak, libpipe::gemm_math_name(math),
                peak_name.c_str());
  else
    std::printf("# peak: unknown peak (device not in the table: H200, H100 SXM/PCIe, A100)\n");
  std::printf("# %-14s %-20s %2s %6s %6s %6s %5s %5s %10s %9s %7s %6s\n", "layer", "pass", "op", "m", "n", "k",
              "batch", "/step", "time(us)", "TFLOP/s", "%peak", "#wrong");
  for (const Gemm& g : shapes.gemms) {
    const double tf = g.flop() / g.us / 1e6;
    char pct[16] = "-";
    if (peak > 0) std::snprintf(pct, sizeof pct, "%.1f%%", 100 * tf / peak);
    std::printf("  %-14s %-20s %c%c %6ld %6ld %6ld %5ld %5ld %10.1f %9.3f %7s %6d\n", g.layer.c_str(),
                g.pass.c_str(), g.ta ? 'T' : 'N', g.tb ? 'T' : 'N', static_cast<long>(g.m), static_cast<long>(g.n),
                static_cast<long>(g.k), static_cast<long>(g.batch), static_cast<long>(g.count), g.us, tf, pct,
                g.wrong);
  }
  std::printf("# overall (weighted by calls per step): %.3f TFLOP/s", overall);
  if (peak > 0) std::printf(" = %.1f%% of %.1f", 100 * overall / peak, peak);
  std::printf("; %.2f ms of GEMMs per micro-batch (forward + backward)\n", us / 1e3);
  std::printf("# %s\n", wrong == 0 ? "all products checked: OK" : "WRONG RESULTS");
  return wrong == 0 ? 0 : 1;
}

}  // namespace pipe_bench
