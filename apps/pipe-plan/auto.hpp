// pipe-plan --auto: the planner's search (pipe/auto_plan.hpp) as a table of the best plans, each with the
// pipe-train command line that runs it.
#pragma once

#include <cstdint>
#include <string>

#include "pipe/describe.hpp"
#include "pipe/partition_method.hpp"

namespace pipe_plan {

struct AutoFlags {
  std::string model;  // as given to --model: it goes into the commands
  int world_size = 0;
  std::int64_t global_batch = 0;
  double memory_limit = 0;  // bytes, 0: none
  double gflops = 0;        // device rate per rank; 0: measured here (or from the profile)
  std::vector<std::string> profiles;  // --profile FILE (repeatable) from pipe-train --profile-out
  int top = 5;
  std::string optimizer = "adamw";
  bool bf16 = false;
  double runtime_bytes = 0;  // per rank: the CPU libraries' own memory (--device cpu)
  libpipe::PartitionMethod method;
  bool json = false;
};

int plan_auto(const libpipe::ModelDescription& model, const AutoFlags& flags);

}  // namespace pipe_plan
