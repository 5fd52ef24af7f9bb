// Reading a profile written by pipe-train --profile-out (pipe-sim --profile, pipe-plan --auto --profile): the
// measured seconds of F, B and W per micro-batch on each stage of one run, and that run's settings.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/simulate.hpp"
#include "text_file.hpp"

namespace pipe_apps {

struct ProfileFile {
  std::string model, schedule;
  std::int64_t micro_batch_size = 0;
  std::vector<libpipe::StageCosts> costs;  // per stage, seconds per micro-batch
};

// Throws libpipe::Error "FLAG PATH: ..." for a file that is not such a profile (FLAG: the flag that named it).
inline ProfileFile read_profile_file(const std::string& path, const std::string& flag = "--profile") {
  using json = nlohmann::json;
  const std::string what = flag + " " + path;
  const std::string text = read_text_file(path, what);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw libpipe::Error(what + ": not JSON (" + e.what() + ")");
  }
  if (!j.is_object() || j.value("pipe_profile", 0) != 1 || !j.contains("costs") || !j["costs"].is_array() ||
      j["costs"].empty())
    throw libpipe::Error(what + ": not a profile written by pipe-train --profile-out");
  ProfileFile p;
  try {
    p.model = j.value("model", std::string("?"));
    p.schedule = j.value("schedule", std::string("?"));
    p.micro_batch_size = j.value("micro_batch_size", std::int64_t{0});
    for (const auto& e : j["costs"]) {
      libpipe::StageCosts x;
      x.forward = e.at("forward").get<double>();
      x.backward_input = e.at("backward_input").get<double>();
      x.backward_weight = e.at("backward_weight").get<double>();
      p.costs.push_back(x);
    }
  } catch (const json::exception& e) {
    throw libpipe::Error(what + ": a cost entry is malformed (" + e.what() + ")");
  }
  return p;
}

}  // namespace pipe_apps
