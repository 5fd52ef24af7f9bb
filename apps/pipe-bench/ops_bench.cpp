// pipe-bench ops: the op layer at a GPT's shapes. Every GEMM of a transformer
// block and the LM head (forward, input gradient, weight gradient) through
// libpipe::ops, against raw dnnl_sgemm (oneDNN, the CPU backend's GEMM library)
// and raw cblas_sgemm (OpenBLAS as it configures itself on this CPU) on the
// same shape; then the other ops
// of a training step with their time and memory rate. Each timed result is
// checked in the same loop (sampled GEMM entries against a double-precision
// dot product; probabilities summing to one; finite outputs), as nccl-tests
// count #wrong in the loop they time.
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench.hpp"
#include "pipe/backend.hpp"
#include "pipe/cpu_info.hpp"
#include "pipe/error.hpp"
#include "pipe/ops.hpp"

namespace pipe_bench {
namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;
using libpipe::DType;
using libpipe::Tensor;

struct Shapes {
  std::int64_t batch, seq, dim, heads, vocab;
};

// The two models of FACTS.md's targets: gpt-tiny (the PyTorch baseline) and gpt-small (GEMM-bound).
Shapes preset(const std::string& model) {
  if (model == "gpt-tiny") return {16, 64, 128, 4, 256};
  if (model == "gpt-small") return {8, 256, 512, 8, 256};
  throw libpipe::Error("unknown --model '" + model + "' (gpt-tiny or gpt-small)");
}

Tensor random(const libpipe::Shape& shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape, DType::float32);
  std::uniform_real_distribution<float> dist(-scale, scale);
  float* p = t.f32();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

// Best time of repeated calls over at least `min_seconds` (after one warm-up call), in microseconds.
double best_us(const std::function<void()>& f, double min_seconds) {
  f();
  double best = 1e30;
  const auto start = Clock::now();
  do {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  } while (std::chrono::duration<double>(Clock::now() - start).count() < min_seconds);
  return best * 1e6;
}

// C = op(A) op(B) (+ bias row), checked at 64 sampled entries against a double dot product; returns #wrong.
int check_gemm(const float* a, bool ta, const float* b, bool tb, const float* bias, const float* c, std::int64_t m,
               std::int64_t n, std::int64_t k, std::int64_t lda, std::int64_t ldb, std::mt19937& rng) {
  int wrong = 0;
  std::uniform_int_distribution<std::int64_t> row(0, m - 1), col(0, n - 1);
  for (int s = 0; s < 64; ++s) {
    const std::int64_t i = row(rng), j = col(rng);
    double want = bias ? bias[j] : 0.0, mag = std::fabs(want);
    for (std::int64_t p = 0; p < k; ++p) {
      const double x = ta ? a[p * lda + i] : a[i * lda + p];
      const double y = tb ? b[j * ldb + p] : b[p * ldb + j];
      want += x * y;
      mag += std::fabs(x * y);
    }
    if (!(std::fabs(c[i * n + j] - want) <= 1e-5 * mag + 1e-6)) ++wrong;
  }
  return wrong;
}

struct GemmRow {
  std::string name, pass;
  std::int64_t m, n, k;
  double ops_us, raw_us, blas_us;  // libpipe::ops, raw dnnl_sgemm, raw cblas_sgemm
  int wrong;
};

struct OpRow {
  std::string name;
  double us, bytes;
  int wrong;
};

int count_nonfinite(const Tensor& t) {
  int bad = 0;
  const float* p = t.f32();
  for (std::int64_t i = 0; i < t.numel(); ++i) bad += std::isfinite(p[i]) ? 0 : 1;
  return bad;
}

}  // namespace

int run_ops(const std::vector<std::string>& args, const std::string& command_line) {
  std::string model = "gpt-tiny";
  double min_seconds = 0.2;
  bool json = false;
  std::int64_t batch = 0;
  int threads = 1;
  po::options_description d("pipe-bench ops options");
  // clang-format off
  d.add_options()
    ("model", po::value(&model)->default_value(model), "shapes of gpt-tiny (B=16 T=64 C=128 H=4) or gpt-small (B=8 T=256 C=512 H=8)")
    ("batch", po::value(&batch), "micro-batch size (default: the model's)")
    ("min-time", po::value(&min_seconds)->default_value(min_seconds, "0.2"), "seconds per measurement (best of the calls in it)")
    ("threads", po::value(&threads)->default_value(threads), "CPU backend threads (default 1: one core, as FACTS.md's targets)")
    ("json", po::bool_switch(&json), "print one JSON object")
    ("help,h", "show this help");
  // clang-format on
  po::variables_map vm;
  if (!parse_flags(args, d,
                   "usage: pipe-bench ops [--model gpt-tiny|gpt-small] [--batch B] [--min-time S] [--threads N] [--json]",
                   vm))
    return 0;
  Shapes s = preset(model);
  if (vm.count("batch")) s.batch = batch;
  if (s.batch < 1 || !(min_seconds > 0) || !std::isfinite(min_seconds) || threads < 1)
    throw libpipe::Error("--batch and --threads must be positive, --min-time a positive number of seconds");
  libpipe::set_cpu_threads(threads);
  std::mt19937 rng(7);
  const std::int64_t R = s.batch * s.seq, C = s.dim, T = s.seq, H = s.heads, V = s.vocab;

  // ---- GEMMs: each linear of a block, and the tied LM head (no bias).
  struct Linear {
    const char* name;
    std::int64_t in, out;
    bool bias;
  };
  const Linear linears[] = {{"attn.qkv", C, 3 * C, true},
                            {"attn.proj", C, C, true},
                            {"mlp.fc", C, 4 * C, true},
                            {"mlp.proj", 4 * C, C, true},
                            {"lm_head", C, V, false}};
  std::vector<GemmRow> gemms;
  for (const Linear& l : linears) {
    Tensor x = random({R, l.in}, rng), w = random({l.out, l.in}, rng, 0.1f), dy = random({R, l.out}, rng);
    Tensor b = l.bias ? random({l.out}, rng) : Tensor();
    Tensor dw = Tensor::zeros({l.out, l.in}, DType::float32),
           db = l.bias ? Tensor::zeros({l.out}, DType::float32) : Tensor();
    std::vector<float> raw(static_cast<std::size_t>(std::max(R * l.out, std::max(R * l.in, l.out * l.in))));
    const auto mi = [](std::int64_t v) { return static_cast<int>(v); };
    Tensor y, dx;
    GemmRow fwd{l.name, "forward", R, l.out, l.in, 0, 0, 0, 0};
    fwd.ops_us = best_us([&] { y = libpipe::ops::linear(x, w, b); }, min_seconds);
    fwd.raw_us = best_us(
        [&] {
          dnnl_sgemm('N', 'T', mi(R), mi(l.out), mi(l.in), 1.0f, x.f32(), mi(l.in), w.f32(), mi(l.in), 0.0f, raw.data(),
                     mi(l.out));
        },
        min_seconds);
    fwd.blas_us = best_us(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mi(R), mi(l.out), mi(l.in), 1.0f, x.f32(), mi(l.in),
                      w.f32(), mi(l.in), 0.0f, raw.data(), mi(l.out));
        },
        min_seconds);
    fwd.wrong =
        check_gemm(x.f32(), false, w.f32(), true, l.bias ? b.f32() : nullptr, y.f32(), R, l.out, l.in, l.in, l.in, rng);
    GemmRow bin{l.name, "input grad", R, l.in, l.out, 0, 0, 0, 0};
    bin.ops_us = best_us([&] { dx = libpipe::ops::linear_backward_input(dy, w); }, min_seconds);
    bin.raw_us = best_us(
        [&] {
          dnnl_sgemm('N', 'N', mi(R), mi(l.in), mi(l.out), 1.0f, dy.f32(), mi(l.out), w.f32(), mi(l.in), 0.0f,
                     raw.data(), mi(l.in));
        },
        min_seconds);
    bin.blas_us = best_us(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mi(R), mi(l.in), mi(l.out), 1.0f, dy.f32(), mi(l.out),
                      w.f32(), mi(l.in), 0.0f, raw.data(), mi(l.in));
        },
        min_seconds);
    bin.wrong = check_gemm(dy.f32(), false, w.f32(), false, nullptr, dx.f32(), R, l.in, l.out, l.out, l.in, rng);
    GemmRow bw{l.name, "weight grad", l.out, l.in, R, 0, 0, 0, 0};
    bw.ops_us = best_us([&] { libpipe::ops::linear_backward_weight(dy, x, dw, db); }, min_seconds);
    bw.raw_us = best_us(
        [&] {
          dnnl_sgemm('T', 'N', mi(l.out), mi(l.in), mi(R), 1.0f, dy.f32(), mi(l.out), x.f32(), mi(l.in), 1.0f,
                     raw.data(), mi(l.in));
        },
        min_seconds);
    bw.blas_us = best_us(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, mi(l.out), mi(l.in), mi(R), 1.0f, dy.f32(), mi(l.out),
                      x.f32(), mi(l.in), 1.0f, raw.data(), mi(l.in));
        },
        min_seconds);
    // The timed calls accumulated into dw; one more product into zeros is checked (accumulation: test_ops).
    Tensor single = Tensor::zeros({l.out, l.in}, DType::float32), no_bias;
    libpipe::ops::linear_backward_weight(dy, x, single, no_bias);
    bw.wrong = check_gemm(dy.f32(), true, x.f32(), false, nullptr, single.f32(), l.out, l.in, R, l.out, l.in, rng);
    gemms.push_back(fwd);
    gemms.push_back(bin);
    gemms.push_back(bw);
  }

  // ---- the rest of a block's step, and the loss and optimizer.
  std::vector<OpRow> others;
  const double f = sizeof(float);
  {
    Tensor x = random({s.batch, T, C}, rng), w = random({C}, rng), b = random({C}, rng),
           dy = random({s.batch, T, C}, rng);
    Tensor mean, rstd, y, dx, dw = Tensor::zeros({C}, DType::float32), dbias = Tensor::zeros({C}, DType::float32);
    OpRow ln{"layernorm", best_us([&] { y = libpipe::ops::layernorm(x, w, b, 1e-5f, mean, rstd); }, min_seconds),
             2.0 * R * C * f, count_nonfinite(y)};
    others.push_back(ln);
    others.push_back({"layernorm_backward_input",
                      best_us([&] { dx = libpipe::ops::layernorm_backward_input(dy, x, w, mean, rstd); }, min_seconds),
                      3.0 * R * C * f, count_nonfinite(dx)});
    others.push_back(
        {"layernorm_backward_weight",
         best_us([&] { libpipe::ops::layernorm_backward_weight(dy, x, mean, rstd, dw, dbias); }, min_seconds),
         2.0 * R * C * f, count_nonfinite(dw)});
  }
  {
    Tensor qkv = random({s.batch, T, 3 * C}, rng), dout = random({s.batch, T, C}, rng), probs, out, dqkv;
    const double us = best_us([&] { out = libpipe::ops::attention(qkv, H, probs); }, min_seconds);
    int wrong = count_nonfinite(out);
    for (std::int64_t r = 0; r < s.batch * H * T; ++r) {  // every probability row sums to one
      double sum = 0;
      for (std::int64_t j = 0; j < T; ++j) sum += probs.f32()[r * T + j];
      wrong += std::fabs(sum - 1.0) < 1e-4 ? 0 : 1;
    }
    others.push_back({"attention", us, (3.0 * R * C + R * C + s.batch * H * T * T) * f, wrong});
    others.push_back({"attention_backward",
                      best_us([&] { dqkv = libpipe::ops::attention_backward(dout, qkv, probs, H); }, min_seconds),
                      (3.0 * R * C + R * C + s.batch * H * T * T + 3.0 * R * C) * f, count_nonfinite(dqkv)});
  }
  {
    Tensor x = random({R, C}, rng), w = random({4 * C, C}, rng, 0.1f), b = random({4 * C}, rng), pre, y;
    Tensor dy = random({R, 4 * C}, rng), dx;
    const double fused = best_us([&] { y = libpipe::ops::linear_gelu(x, w, b, pre); }, min_seconds);
    const double plain = best_us([&] { libpipe::ops::linear(x, w, b); }, min_seconds);
    others.push_back(
        {"linear_gelu - linear (epilogue)", std::max(0.0, fused - plain), 3.0 * R * 4 * C * f, count_nonfinite(y)});
    others.push_back({"gelu_backward", best_us([&] { dx = libpipe::ops::gelu_backward(pre, dy); }, min_seconds),
                      3.0 * R * 4 * C * f, count_nonfinite(dx)});
  }
  {
    Tensor logits = random({s.batch, T, V}, rng, 4.0f), labels = Tensor::empty({s.batch, T}, DType::int32), loss, dl;
    for (std::int64_t i = 0; i < labels.numel(); ++i) labels.i32()[i] = static_cast<std::int32_t>(rng() % V);
    Tensor dloss = Tensor::empty({s.batch}, DType::float32);
    libpipe::ops::fill(dloss, 1.0f);
    others.push_back({"cross_entropy",
                      best_us([&] { loss = libpipe::ops::cross_entropy(logits, labels); }, min_seconds),
                      1.0 * R * V * f, count_nonfinite(loss)});
    const double us = best_us([&] { dl = libpipe::ops::cross_entropy_backward(logits, labels, dloss); }, min_seconds);
    int wrong = 0;
    for (std::int64_t r = 0; r < R; ++r) {  // softmax - onehot sums to zero in every row
      double sum = 0;
      for (std::int64_t j = 0; j < V; ++j) sum += dl.f32()[r * V + j];
      wrong += std::fabs(sum) < 1e-5 ? 0 : 1;
    }
    others.push_back({"cross_entropy_backward", us, 2.0 * R * V * f, wrong});
  }
  {
    const std::int64_t n = 12 * C * C + 13 * C;  // one block's parameters
    Tensor p = random({n}, rng), g = random({n}, rng), m = Tensor::zeros({n}, DType::float32);
    Tensor v = Tensor::zeros({n}, DType::float32);
    std::int64_t step = 0;
    others.push_back(
        {"adamw (one block's params)",
         best_us([&] { libpipe::ops::adamw(p, g, m, v, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, ++step); }, min_seconds),
         7.0 * n * f, count_nonfinite(p)});
    double ss = 0;
    others.push_back({"sum_squares (one block's grads)",
                      best_us([&] { ss = libpipe::ops::sum_squares(g); }, min_seconds), 1.0 * n * f,
                      std::isfinite(ss) ? 0 : 1});
  }

  int wrong = 0;
  for (const auto& r : gemms) wrong += r.wrong;
  for (const auto& r : others) wrong += r.wrong;
  const char* isa = std::getenv("PIPE_CPU_ISA");
  if (json) {
    nlohmann::json j = {{"benchmark", "ops"},
                        {"command", command_line},
                        {"model", model},
                        {"batch", s.batch},
                        {"threads", threads},
                        {"seq", T},
                        {"dim", C},
                        {"heads", H},
                        {"vocab", V},
                        {"gemm_library", libpipe::cpu_gemm_library()},
                        {"openblas_core", openblas_get_corename()},
                        {"wrong", wrong}};
    for (const auto& r : gemms)
      j["gemm"].push_back({{"layer", r.name},
                           {"pass", r.pass},
                           {"m", r.m},
                           {"n", r.n},
                           {"k", r.k},
                           {"ops_us", r.ops_us},
                           {"dnnl_sgemm_us", r.raw_us},
                           {"cblas_us", r.blas_us},
                           {"ops_gflops", 2e-3 * r.m * r.n * r.k / r.ops_us},
                           {"dnnl_sgemm_gflops", 2e-3 * r.m * r.n * r.k / r.raw_us},
                           {"cblas_gflops", 2e-3 * r.m * r.n * r.k / r.blas_us},
                           {"wrong", r.wrong}});
    for (const auto& r : others)
      j["ops"].push_back({{"op", r.name}, {"us", r.us}, {"gb_per_s", r.bytes / r.us / 1e3}, {"wrong", r.wrong}});
    std::cout << j.dump() << "\n";
    return wrong == 0 ? 0 : 1;
  }
  std::printf("# %s\n# %s: B=%ld T=%ld C=%ld H=%ld V=%ld, %d thread%s%s%s\n", command_line.c_str(), model.c_str(),
              static_cast<long>(s.batch), static_cast<long>(T), static_cast<long>(C), static_cast<long>(H),
              static_cast<long>(V), threads, threads == 1 ? "" : "s", isa ? ", PIPE_CPU_ISA=" : "", isa ? isa : "");
  std::printf("# CPU GEMMs: %s; the cblas column is %s (core %s)\n", libpipe::cpu_gemm_library().c_str(),
              openblas_get_config(), openblas_get_corename());
  std::printf(
      "# GEMMs through libpipe::ops (bias, checks, allocation included) against raw dnnl_sgemm and raw\n"
      "# cblas_sgemm (GFLOP/s); ratio = raw dnnl_sgemm time / ops time\n");
  std::printf("# %-10s %-12s %6s %6s %6s %10s %10s %10s %10s %7s %7s\n", "layer", "pass", "m", "n", "k", "time(us)",
              "GFLOP/s", "dnnl", "cblas", "ratio", "#wrong");
  double ops_total = 0, raw_total = 0, blas_total = 0, flop_total = 0;
  for (const auto& r : gemms) {
    const double flop = 2.0 * r.m * r.n * r.k;
    ops_total += r.ops_us, raw_total += r.raw_us, blas_total += r.blas_us, flop_total += flop;
    std::printf("  %-10s %-12s %6ld %6ld %6ld %10.1f %10.1f %10.1f %10.1f %6.1f%% %7d\n", r.name.c_str(),
                r.pass.c_str(), static_cast<long>(r.m), static_cast<long>(r.n), static_cast<long>(r.k), r.ops_us,
                flop / r.ops_us / 1e3, flop / r.raw_us / 1e3, flop / r.blas_us / 1e3, 100.0 * r.raw_us / r.ops_us,
                r.wrong);
  }
  std::printf("  %-10s %-12s %6s %6s %6s %10.1f %10.1f %10.1f %10.1f %6.1f%%\n", "all", "", "", "", "", ops_total,
              flop_total / ops_total / 1e3, flop_total / raw_total / 1e3, flop_total / blas_total / 1e3,
              100.0 * raw_total / ops_total);
  std::printf("# other ops (GB/s: bytes each must read or write, over its time)\n");
  std::printf("# %-34s %10s %10s %7s\n", "op", "time(us)", "GB/s", "#wrong");
  for (const auto& r : others)
    std::printf("  %-34s %10.1f %10.1f %7d\n", r.name.c_str(), r.us, r.bytes / r.us / 1e3, r.wrong);
  std::printf("# %s\n", wrong == 0 ? "all results checked: OK" : "WRONG RESULTS");
  return wrong == 0 ? 0 : 1;
}

}  // namespace pipe_bench
