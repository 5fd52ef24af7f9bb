// Simulating a pipeline schedule in time: every stage runs its schedule
// (make_schedule) with per-stage compute costs, receives wait for the matching
// send, and the result is the makespan, each stage's busy time, the bubble and
// a timeline to draw. This is how pipe-sim predicts a step before any cluster
// runs it, and how the bubble formulas of FACTS.md are checked.
#pragma once

#include <string>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/schedule.hpp"
#include "pipe/timeline.hpp"

namespace libpipe {

// Time one stage spends on one micro-batch, in any unit (seconds, or
// abstract units): F, B (gradient of the input) and W (gradient of the
// weights; 0 when B includes it).
struct StageCosts {
  double forward = 1;
  double backward_input = 2;
  double backward_weight = 0;
};

struct SimResult {
  std::string kind;
  int stages = 0;
  int micro_batches = 0;
  int virtual_stages = 1;         // V: chunks per stage
  double makespan = 0;            // when the last stage finishes its last instruction
  std::vector<double> busy;       // per stage: time spent computing (F, B, W)
  double bubble = 0;              // 1 - sum(busy) / (stages x makespan): the idle share
  double theoretical_bubble = 0;  // the schedule's closed form (theoretical_bubble in schedule.hpp), for comparison
  // Per stage: the most micro-batches whose activations are held at once (peak_in_flight, schedule.hpp).
  // Multiply by a stage's activation bytes per micro-batch for memory.
  std::vector<int> peak_activations;
  Timeline timeline;              // rows "stage 0".."stage S-1": F, B, W blocks and waits (RA, RG)
};

// Runs `kind`'s schedule for all stages. costs holds one entry per stage (per
// chunk with virtual stages), or one entry used for every stage. Semantics (those of check_schedules):
// each stage runs its instructions in schedule order, one at a time; a
// compute instruction takes its cost; a send takes no time and never blocks;
// a receive completes at max(now, time the matching send was issued +
// p2p_latency), the wait becoming a block of the receive's kind
// (RecvActivation or RecvGrad); loads and the step-wide reductions and
// optimizer step take no time. Messages on one link are matched in order, as
// MPI does. Blocks of zero length are left out.
//
// For equal costs on every stage the bubble is the closed form
// (S-1)/(M+S-1) for gpipe, 1f1b and inference, whatever F, B and W are, and
// (S-1)/(3M+S-1) for zb-h1 when F = B = W.
// Time and memory are linear in the number of instructions: 1,024 stages x
// 4,096 micro-batches take a few seconds.
// Without `with_timeline` the timeline's rows stay empty (only numbers are
// wanted): a third of the time and most of the memory at that size.
// Errors: those of make_schedule; costs neither 1 nor `stages` long;
// a negative or non-finite cost or latency.
// virtual_stages: V chunks per stage (0: the kind's default); costs are then
// one entry per chunk (or one for all).
PIPE_API SimResult simulate(const std::string& kind, int stages, int micro_batches,
                            const std::vector<StageCosts>& costs, double p2p_latency = 0, bool with_timeline = true,
                            int virtual_stages = 0);

// Per-chunk costs for simulate() from per-stage ones (one entry for every stage, or one per stage): each of a
// stage's chunks, placed as `placement`, takes 1/V of its stage's F, B and W. With V = 1, the costs as given.
PIPE_API std::vector<StageCosts> chunk_costs_from_stages(const std::vector<StageCosts>& per_stage, int stages,
                                                         int virtual_stages, ChunkPlacement placement);

// The same for given schedules (one per stage, in stage order; a custom schedule read by parse_schedules),
// proven by check_schedules first.
PIPE_API SimResult simulate(const std::vector<Schedule>& per_stage, const std::vector<StageCosts>& costs,
                            double p2p_latency = 0, bool with_timeline = true);

}  // namespace libpipe
