// The planner (pipe-plan --auto, pipe-train --plan auto): given a model, a world size, a global batch and a memory
// limit per rank, it searches the pipe x data split, the schedule and its chunks per stage, the micro-batch size
// and count, activation checkpointing, ZeRO-1 and the partition, and ranks the plans that fit by predicted
// throughput. Pure: no MPI, nothing allocated.
//
// Predicted step time: each chunk's time per micro-batch is its FLOPs (describe's forward + backward per sample)
// x the micro-batch size / the device rate, plus a fixed overhead per layer and micro-batch (what small GEMMs and
// the layers' other work cost beyond their FLOPs), split into F, B and W by shares (a third each by default, as
// pipe-sim splits them); a checkpointed chunk's backward also recomputes its forward. The schedule's simulation
// (simulate.hpp) gives the step. Not modelled: transfers between
// stages, the data-parallel reduction and the optimizer step (measured small on one node: pipe-train's report).
// Peak memory: predict_memory per rank (memory_model.hpp); under a limit, one-chunk schedules are cut by
// plan_partition_memory (the most balanced cut that fits), others kept only when their cut fits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/partition.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/simulate.hpp"

namespace libpipe {

struct AutoPlanRequest {
  int world_size = 1;
  std::int64_t global_batch = 0;  // samples per optimizer step, over all replicas
  double memory_limit = 0;        // bytes per rank; 0: no limit
  // Seconds = FLOPs / flops_per_s; and the shares of a micro-batch's time that F, B and W take (they sum to 1).
  double flops_per_s = 1e11;
  double overhead_per_layer_s = 0;  // seconds per layer per micro-batch (F + B + W together)
  double forward_share = 1.0 / 3, backward_input_share = 1.0 / 3, backward_weight_share = 1.0 / 3;
  std::string optimizer = "adamw";
  bool bf16 = false;
  double runtime_bytes = 0;  // per rank, MemoryModelOptions::runtime_bytes
  PartitionMethod method = PartitionMethod::parse("flops");
  std::vector<std::string> schedules = {"1f1b", "gpipe", "zb-h1", "interleaved-1f1b", "zb-v"};
  std::int64_t max_micro_batch_size = 64;
  int max_micro_batches = 256;  // per replica and step (the simulation's cost grows with it)
};

struct AutoPlan {
  int stages = 1, data_parallel = 1;
  std::string schedule;
  int virtual_stages = 1;
  int micro_batches = 1;              // per replica and step
  std::int64_t micro_batch_size = 1;
  int checkpoint_interval = 0;        // 0 or 1
  int zero = 0;
  bool memory_capped = false;         // the cut is plan_partition_memory's (the method's own did not fit)
  Parts parts;                        // stages x virtual_stages chunks
  double step_seconds = 0, samples_per_s = 0, bubble = 0;
  double peak_bytes = 0;              // the largest predicted rank
  int peak_stage = 0;
};

struct AutoPlanResult {
  std::vector<AutoPlan> plans;  // the best first; every plan that fits
  int considered = 0;           // candidate plans looked at (fitting or not)
  double smallest_peak = 0;     // when none fits: the smallest peak any candidate reached
};

// Throws libpipe::Error for a request that cannot hold (world size or global batch below 1, a global batch that
// no data-parallel degree divides, ...).
PIPE_API AutoPlanResult search_plans(const ModelDescription& model, const AutoPlanRequest& request);

// The predicted step of one layout (what search_plans ranks by): `parts` cuts the model into stages x V chunks.
// Returns the simulation (makespan: the step's seconds; bubble); only the request's rate and shares are used.
PIPE_API SimResult predict_step(const ModelDescription& model, const Parts& parts, const std::string& schedule,
                                int stages, int virtual_stages, int micro_batches, std::int64_t micro_batch_size,
                                int checkpoint_interval, const AutoPlanRequest& rate);

// The pipe-train flags that run `plan` (after --model): "--stages 2 --data-parallel 2 --schedule zb-h1 ...".
PIPE_API std::string plan_flags(const AutoPlan& plan, const AutoPlanRequest& request);

}  // namespace libpipe
