// pipe-bench attention: the backend's two causal-attention paths side by side
// at each sequence length: materialised (the T x T probabilities kept for
// backward) and flash (64 x 64 blocks, an online softmax, each row's output and
// log-sum-exp kept; backward recomputes the probabilities). Forward and
// backward are timed apart; the table says which path the backend takes by
// default at each length (flash_attention_pays, which PIPE_ATTENTION overrides)
// and what each keeps for backward. This is where the CPU's crossover
// (ops/attention_choice.cpp) is measured.
//
// Each length is checked as timed: both paths' outputs at sampled rows against
// a double-precision softmax, and flash's input gradient against the
// materialised one (#wrong; exit 1 on a wrong one).
#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench.hpp"
#include "pipe/backend.hpp"
#include "pipe/cpu_info.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"
#include "pipe/memory_partition.hpp"
#include "pipe/tensor.hpp"

namespace pipe_bench {
namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;
using libpipe::Device;
using libpipe::DType;
using libpipe::Tensor;

struct Sizes {
  std::int64_t batch, seq, heads, head_dim;
  std::int64_t channels() const { return heads * head_dim; }
  // FLOPs as model descriptions count them (LayerDescription::gemms): whole T x T products, the mask not subtracted.
  double forward_flop() const { return 4.0 * batch * heads * seq * seq * head_dim; }
  double backward_flop() const { return 2 * forward_flop(); }
  double probs_bytes() const { return 4.0 * batch * heads * seq * seq; }
  double state_bytes() const { return 4.0 * batch * heads * seq * (head_dim + 1); }
  // What one length holds on the host at most (on a GPU, the host's copies alone): the inputs, both paths'
  // outputs and input gradients, their host copies for the checks, the probabilities and flash's state.
  double bytes_needed() const {
    const double rows = static_cast<double>(batch) * seq * heads * head_dim;  // B T C
    return 2 * 4.0 * rows * (3 + 1 + 2 + 6) + probs_bytes() + state_bytes();
  }
};


struct Row {
  Sizes s;
  bool flash_by_default;
  double mat_fwd_us, mat_bwd_us, flash_fwd_us, flash_bwd_us;
  double out_error, dqkv_error;  // largest differences found by the checks
  int wrong;
};

// A call's time in microseconds, the best of rounds (a busy host delays one round, not all) over at least
// min_seconds, after one untimed warm-up call. On the CPU a round is one call; on a GPU as many calls as fill a
// third of min_seconds (judged from the warm-up call), over which a synchronize costs little, and 3 rounds.
double time_us(libpipe::Backend& be, Device device, const std::function<void()>& call, double min_seconds) {
  auto t0 = Clock::now();
  call();
  be.synchronize();
  const double once = std::chrono::duration<double>(Clock::now() - t0).count();
  const int calls = device == Device::cpu ? 1 : std::max(1, static_cast<int>(min_seconds / 3 / std::max(once, 1e-9)));
  double best = 1e300;
  const auto start = Clock::now();
  for (int round = 0; round < 3 || std::chrono::duration<double>(Clock::now() - start).count() < min_seconds;
       ++round) {
    t0 = Clock::now();
    for (int i = 0; i < calls; ++i) call();
    be.synchronize();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / calls);
  }
  return best * 1e6;
}

// Row i of head h of sample b, computed in double from the host's qkv: the causal softmax-weighted sum of v.
std::vector<double> reference_row(const std::vector<float>& qkv, const Sizes& s, std::int64_t b, std::int64_t h,
                                  std::int64_t i) {
  const std::int64_t C = s.channels(), D = s.head_dim, row = 3 * C;
  const float* base = qkv.data() + b * s.seq * row;
  const float* q = base + i * row + h * D;
  std::vector<double> score(static_cast<std::size_t>(i + 1));
  double top = -1e300;
  for (std::int64_t j = 0; j <= i; ++j) {
    const float* k = base + j * row + C + h * D;
    double dot = 0;
    for (std::int64_t d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * k[d];
    score[j] = dot / std::sqrt(static_cast<double>(D));
    top = std::max(top, score[j]);
  }
  double sum = 0;
  for (double& x : score) sum += (x = std::exp(x - top));
  std::vector<double> out(static_cast<std::size_t>(D), 0.0);
  for (std::int64_t j = 0; j <= i; ++j) {
    const float* v = base + j * row + 2 * C + h * D;
    for (std::int64_t d = 0; d < D; ++d) out[d] += score[j] / sum * v[d];
  }
  return out;
}

std::vector<float> to_host(libpipe::Backend& be, const Tensor& t) {
  std::vector<float> host(static_cast<std::size_t>(t.numel()));
  be.copy_to_host(host.data(), t.f32(), host.size() * sizeof(float));
  return host;
}

Row run_one(libpipe::Backend& be, Device device, const Sizes& s, double min_seconds, std::mt19937& rng) {
  const std::int64_t B = s.batch, T = s.seq, H = s.heads, D = s.head_dim, C = s.channels();
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> qkv_host(static_cast<std::size_t>(B * T * 3 * C)), dout_host(static_cast<std::size_t>(B * T * C));
  for (float& x : qkv_host) x = dist(rng);
  for (float& x : dout_host) x = dist(rng);
  auto upload = [&](const std::vector<float>& host, libpipe::Shape shape) {
    Tensor t = Tensor::empty(std::move(shape), DType::float32, device);
    be.copy_from_host(t.data(), host.data(), host.size() * sizeof(float));
    return t;
  };
  const Tensor qkv = upload(qkv_host, {B, T, 3 * C}), dout = upload(dout_host, {B, T, C});
  Tensor out_mat = Tensor::empty({B, T, C}, DType::float32, device);
  Tensor out_flash = Tensor::empty({B, T, C}, DType::float32, device);
  Tensor dqkv_mat = Tensor::empty({B, T, 3 * C}, DType::float32, device);
  Tensor dqkv_flash = Tensor::empty({B, T, 3 * C}, DType::float32, device);
  Tensor state = Tensor::empty({B * H, T, D + 1}, DType::float32, device);

  Row r{s, be.flash_attention_pays(T, D), 0, 0, 0, 0, 0, 0, 0};
  {  // the materialised path; its probabilities freed before flash runs, as a step would hold one or the other
    Tensor probs = Tensor::empty({B, H, T, T}, DType::float32, device);
    r.mat_fwd_us = time_us(
        be, device, [&] { be.attention_forward(qkv.f32(), out_mat.f32(), probs.f32(), B, T, H, D); }, min_seconds);
    r.mat_bwd_us = time_us(
        be, device, [&] { be.attention_backward(dout.f32(), qkv.f32(), probs.f32(), dqkv_mat.f32(), B, T, H, D); },
        min_seconds);
  }
  r.flash_fwd_us = time_us(
      be, device, [&] { be.flash_attention_forward(qkv.f32(), out_flash.f32(), state.f32(), B, T, H, D); }, min_seconds);
  r.flash_bwd_us = time_us(
      be, device, [&] { be.flash_attention_backward(dout.f32(), qkv.f32(), state.f32(), dqkv_flash.f32(), B, T, H, D); },
      min_seconds);
  be.synchronize();

  // Outputs are convex combinations of values in [-1, 1]: an absolute bound fits every length.
  constexpr double kOutTolerance = 1e-4;
  const std::vector<float> got_mat = to_host(be, out_mat), got_flash = to_host(be, out_flash);
  std::uniform_int_distribution<std::int64_t> pb(0, B - 1), ph(0, H - 1), pi(0, T - 1);
  for (int sample = 0; sample < 16; ++sample) {
    const std::int64_t b = pb(rng), h = ph(rng), i = sample == 0 ? T - 1 : pi(rng);  // the longest row always
    const std::vector<double> want = reference_row(qkv_host, s, b, h, i);
    bool bad = false;
    for (std::int64_t d = 0; d < D; ++d) {
      const std::size_t at = static_cast<std::size_t>((b * T + i) * C + h * D + d);
      const double e = std::max(std::fabs(got_mat[at] - want[d]), std::fabs(got_flash[at] - want[d]));
      r.out_error = std::max(r.out_error, e);
      bad = bad || !(e <= kOutTolerance);
    }
    r.wrong += bad ? 1 : 0;
  }
  // The input gradients: flash against the materialised path, relative to the largest entry (both sum up to T
  // products per entry, in different orders).
  const std::vector<float> g_mat = to_host(be, dqkv_mat), g_flash = to_host(be, dqkv_flash);
  double scale = 0;
  for (float x : g_mat) scale = std::max(scale, static_cast<double>(std::fabs(x)));
  int bad_entries = 0;
  for (std::size_t i = 0; i < g_mat.size(); ++i) {
    const double e = std::fabs(static_cast<double>(g_flash[i]) - g_mat[i]) / std::max(scale, 1e-30);
    r.dqkv_error = std::max(r.dqkv_error, std::isfinite(e) ? e : 1e300);
    bad_entries += e <= 1e-4 ? 0 : 1;
  }
  r.wrong += bad_entries;
  return r;
}

std::string megabytes(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, bytes >= 1e7 ? "%.0f" : "%.2f", bytes / 1e6);
  return text;
}

}  // namespace

int run_attention(const std::vector<std::string>& args, const std::string& command_line) {
  std::string device_name;
  std::vector<std::int64_t> seqs;
  std::int64_t batch = 1, heads = 12, head_dim = 64;
  double min_seconds = 0.3;
  int threads = 1;
  bool json = false;
  po::options_description d("pipe-bench attention options");
  // clang-format off
  d.add_options()
    ("seq", po::value(&seqs)->multitoken(), "sequence lengths to time, e.g. --seq 256 1024 (default: 256 512 768 1024 1536 2048 on the CPU, 512..8192 on a GPU); each must fit in memory with both paths' tensors")
    ("batch", po::value(&batch)->default_value(batch), "samples (B)")
    ("heads", po::value(&heads)->default_value(heads), "attention heads (H; default: GPT-2 124M's)")
    ("head-dim", po::value(&head_dim)->default_value(head_dim), "channels per head (D)")
    ("device", po::value(&device_name), "cpu or cuda (default: cuda when a GPU is usable, else cpu)")
    ("min-time", po::value(&min_seconds)->default_value(min_seconds, "0.3"), "seconds per measurement (its best call; on a GPU the best of 3 rounds, each a mean over its calls)")
    ("threads", po::value(&threads)->default_value(threads), "CPU backend threads (--device cpu)")
    ("json", po::bool_switch(&json), "print one JSON object")
    ("help,h", "show this help");
  // clang-format on
  po::variables_map vm;
  if (!parse_flags(args, d,
                   "usage: pipe-bench attention [--seq T...] [--batch B] [--heads H] [--head-dim D] "
                   "[--device cpu|cuda] [--min-time S] [--threads N] [--json]\n\n"
                   "Causal attention's forward and backward, materialised against flash, at each length: time,\n"
                   "GFLOP/s, what each keeps for backward, and the path the backend takes by default there.",
                   vm))
    return 0;
  if (batch < 1 || heads < 1 || head_dim < 1 || threads < 1)
    throw libpipe::Error("--batch, --heads, --head-dim and --threads must be positive");
  if (!(min_seconds > 0) || !std::isfinite(min_seconds))
    throw libpipe::Error("--min-time must be a positive number of seconds, not " + std::to_string(min_seconds));
  std::string description;
  const Device device = bench_device(device_name, threads, description);
  if (seqs.empty())
    seqs = device == Device::cuda ? std::vector<std::int64_t>{512, 1024, 2048, 4096, 8192}
                                  : std::vector<std::int64_t>{256, 512, 768, 1024, 1536, 2048};
  for (std::int64_t t : seqs) {
    if (t < 1) throw libpipe::Error("--seq " + std::to_string(t) + ": lengths must be positive");
    // Refused before anything is allocated: the sizes in double precision, which cannot overflow.
    const double needed = Sizes{batch, t, heads, head_dim}.bytes_needed(), have = libpipe::machine_memory_bytes();
    if (needed > 0.8 * have)
      throw libpipe::Error("--seq " + std::to_string(t) + " with B=" + std::to_string(batch) + " H=" +
                           std::to_string(heads) + " D=" + std::to_string(head_dim) + " needs " +
                           libpipe::byte_size_str(needed) + " of host memory; this machine has " +
                           libpipe::byte_size_str(have));
  }

  libpipe::Backend& be = libpipe::backend_for(device);
  std::mt19937 rng(5);
  std::vector<Row> rows;
  for (std::int64_t t : seqs) rows.push_back(run_one(be, device, Sizes{batch, t, heads, head_dim}, min_seconds, rng));
  int wrong = 0;
  for (const Row& r : rows) wrong += r.wrong;

  if (json) {
    nlohmann::json j = {{"benchmark", "attention"}, {"command", command_line}, {"device", libpipe::device_name(device)},
                        {"device_description", description}, {"batch", batch}, {"heads", heads},
                        {"head_dim", head_dim}, {"wrong", wrong}};
    for (const Row& r : rows)
      j["rows"].push_back({{"seq", r.s.seq},
                           {"default", r.flash_by_default ? "flash" : "materialized"},
                           {"materialized_forward_us", r.mat_fwd_us},
                           {"materialized_backward_us", r.mat_bwd_us},
                           {"flash_forward_us", r.flash_fwd_us},
                           {"flash_backward_us", r.flash_bwd_us},
                           {"materialized_saved_bytes", r.s.probs_bytes()},
                           {"flash_saved_bytes", r.s.state_bytes()},
                           {"output_error", r.out_error},
                           {"input_grad_error", r.dqkv_error},
                           {"wrong", r.wrong}});
    std::cout << j.dump() << "\n";
    return wrong == 0 ? 0 : 1;
  }
  std::printf("# %s\n", command_line.c_str());
  std::printf("# causal attention, B=%ld H=%ld D=%ld; device %s (%s); per call, the best over %.2f s%s\n",
              static_cast<long>(batch), static_cast<long>(heads), static_cast<long>(head_dim),
              libpipe::device_name(device), description.c_str(), min_seconds,
              device == Device::cpu ? "" : " (3 rounds, each a mean over its calls)");
  std::printf("# GFLOP/s count whole T x T products (4 B H T^2 D forward, twice that backward), as model descriptions"
              " do;\n# kept(MB): what each path keeps for backward (probabilities / output and log-sum-exp per row);"
              " default:\n# the path the backend takes at that length (PIPE_ATTENTION forces one)\n");
  std::printf("# %6s %12s %12s %12s %12s %10s %8s %10s %10s %10s %10s %10s %6s\n", "T", "mat.fwd(ms)",
              "mat.bwd(ms)", "flash.fwd", "flash.bwd", "mat/flash", "default", "GFLOP/s", "GFLOP/s", "kept(MB)",
              "kept(MB)", "max error", "#wrong");
  std::printf("# %6s %12s %12s %12s %12s %10s %8s %10s %10s %10s %10s %10s %6s\n", "", "", "", "(ms)", "(ms)",
              "fwd+bwd", "", "mat", "flash", "mat", "flash", "", "");
  for (const Row& r : rows) {
    const double mat = r.mat_fwd_us + r.mat_bwd_us, flash = r.flash_fwd_us + r.flash_bwd_us;
    const double flop = r.s.forward_flop() + r.s.backward_flop();
    std::printf("  %6ld %12.3f %12.3f %12.3f %12.3f %9.2fx %8s %10.1f %10.1f %10s %10s %10.1e %6d\n",
                static_cast<long>(r.s.seq), r.mat_fwd_us / 1e3, r.mat_bwd_us / 1e3, r.flash_fwd_us / 1e3,
                r.flash_bwd_us / 1e3, mat / flash, r.flash_by_default ? "flash" : "mat", flop / mat / 1e3,
                flop / flash / 1e3, megabytes(r.s.probs_bytes()).c_str(), megabytes(r.s.state_bytes()).c_str(),
                std::max(r.out_error, r.dqkv_error), r.wrong);
  }
  std::printf("# %s\n", wrong == 0 ? "all results checked: OK (outputs against double precision at sampled rows, "
                                     "flash's input gradient against the materialised one)"
                                   : "WRONG RESULTS");
  return wrong == 0 ? 0 : 1;
}

}  // namespace pipe_bench
