// The device rate the planner (pipe/auto_plan.hpp) predicts step times with, for pipe-plan --auto and pipe-train
// --plan auto: calibrated from pipe-train --profile-out files, given as GFLOP/s, or measured here with a GEMM.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "pipe/auto_plan.hpp"
#include "pipe/error.hpp"
#include "pipe/ops.hpp"
#include "profile_file.hpp"

namespace pipe_apps {

// Seconds of one linear layer's GEMM on this machine's CPU backend (768 x 768 weights, `rows` rows), the best of
// about a sixth of a second of calls.
inline double linear_seconds(std::int64_t rows) {
  using clock = std::chrono::steady_clock;
  const std::int64_t width = 768;
  libpipe::Tensor x = libpipe::Tensor::zeros({rows, width}, libpipe::DType::float32);
  libpipe::Tensor w = libpipe::Tensor::zeros({width, width}, libpipe::DType::float32);
  libpipe::Tensor b = libpipe::Tensor::zeros({width}, libpipe::DType::float32);
  libpipe::ops::fill(x, 0.5f);
  libpipe::ops::fill(w, 0.01f);
  libpipe::ops::linear(x, w, b);  // warm-up
  double best = 1e300;
  const auto start = clock::now();
  while (std::chrono::duration<double>(clock::now() - start).count() < 0.15) {
    const auto t0 = clock::now();
    libpipe::ops::linear(x, w, b);
    best = std::min(best, std::chrono::duration<double>(clock::now() - t0).count());
  }
  return best;
}

// Least squares of time = fixed + per_unit x units over the points; the fixed part no less than 0.
inline void fit_line(const std::vector<double>& units, const std::vector<double>& times, double& fixed, double& per_unit) {
  const double n = static_cast<double>(units.size());
  double su = 0, st = 0, suu = 0, sut = 0;
  for (std::size_t i = 0; i < units.size(); ++i)
    su += units[i], st += times[i], suu += units[i] * units[i], sut += units[i] * times[i];
  const double denominator = n * suu - su * su;
  fixed = 0;
  per_unit = st / su;
  if (denominator > 0) {
    per_unit = (n * sut - su * st) / denominator;
    fixed = (st - per_unit * su) / n;
  }
  if (fixed < 0 || per_unit <= 0) fixed = 0, per_unit = st / su;
}

// Sets r's flops_per_s, overhead_per_layer_s and F:B:W shares from `profiles` (if any), else `gflops` (if > 0),
// else a GEMM measured here; returns one line saying which. `flag` names the profiles' flag in errors.
inline std::string calibrate_rate(const libpipe::ModelDescription& d, const std::vector<std::string>& profiles,
                                  double gflops, libpipe::AutoPlanRequest& r, const std::string& flag = "--profile") {
  double total_flops = 0;
  for (const auto& layer : d.layers) total_flops += static_cast<double>(layer.description.flops);
  const double layers = static_cast<double>(d.layers.size());
  char text[320];
  if (!profiles.empty()) {
    // Measured runs calibrate the rate: each gives the model's seconds per micro-batch (its stages' F + B + W
    // summed) at its micro-batch size; a line through them gives the seconds per sample (the FLOPs' rate) and,
    // with two sizes or more, a fixed cost per micro-batch.
    std::vector<double> sizes, times;
    double fwd = 0, bwd = 0, wgt = 0;
    for (const std::string& path : profiles) {
      const pipe_apps::ProfileFile p = pipe_apps::read_profile_file(path, flag);
      if (p.model != d.name)
        throw libpipe::Error(flag + " " + path + " measured model '" + p.model + "', not '" + d.name + "'");
      double total = 0, w = 0;
      for (const auto& c : p.costs) fwd += c.forward, bwd += c.backward_input, w += c.backward_weight;
      for (const auto& c : p.costs) total += c.forward + c.backward_input + c.backward_weight;
      if (!(total > 0) || p.micro_batch_size < 1)
        throw libpipe::Error(flag + " " + path + ": no time or micro-batch size measured");
      // A schedule without split backward measures B and W together: split them evenly, as describe counts them.
      if (w == 0) {
        double b = 0;
        for (const auto& c : p.costs) b += c.backward_input;
        bwd -= b / 2, w = b / 2;
      }
      wgt += w;
      sizes.push_back(static_cast<double>(p.micro_batch_size));
      times.push_back(total);
    }
    double fixed = 0, per_sample = 0;
    fit_line(sizes, times, fixed, per_sample);
    r.flops_per_s = total_flops / per_sample;
    r.overhead_per_layer_s = fixed / layers;
    const double all = fwd + bwd + wgt;
    r.forward_share = fwd / all, r.backward_input_share = bwd / all, r.backward_weight_share = wgt / all;
    std::snprintf(text, sizeof text,
                  "%.1f GFLOP/s per rank + %.1f us per layer and micro-batch, F:B:W %.2f:%.2f:%.2f, calibrated by "
                  "%zu profile%s", r.flops_per_s / 1e9, r.overhead_per_layer_s * 1e6, r.forward_share,
                  r.backward_input_share, r.backward_weight_share, profiles.size(), profiles.size() == 1 ? "" : "s");
  } else if (gflops > 0) {
    r.flops_per_s = gflops * 1e9;
    std::snprintf(text, sizeof text, "%.1f GFLOP/s per rank (--gflops)", gflops);
  } else {
    // A GEMM at two sizes: the rate from the large one, and the small one's excess over it as a fixed cost,
    // counted three times per layer (its F, B and W each run one at least).
    const double big = linear_seconds(256), small = linear_seconds(16);
    r.flops_per_s = 2.0 * 256 * 768 * 768 / big;
    r.overhead_per_layer_s = 3 * std::max(0.0, small - big * 16 / 256);
    std::snprintf(text, sizeof text,
                  "%.1f GFLOP/s per rank + %.1f us per layer and micro-batch (GEMMs measured here: plans compare "
                  "fairly, absolute times are optimistic; profiles from pipe-train --profile-out calibrate them)",
                  r.flops_per_s / 1e9, r.overhead_per_layer_s * 1e6);
  }
  return text;
}

}  // namespace pipe_apps
