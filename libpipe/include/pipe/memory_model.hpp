// The memory each rank of a pipeline needs, predicted from descriptions and
// the schedule alone (pure: no MPI, nothing allocated). pipe-plan prints it
// per rank; pipe-train's end-of-run report shows it beside the measured peak.
//
// What it counts, per stage (every data-parallel replica of a stage alike):
//  - parameters: float32 masters of the stage's layers, a weight tied between
//    layers of one stage once (they share storage), a weight tied across
//    stages on each of them; under bf16 also their bfloat16 copies;
//  - gradients (float32) and the optimizer's state: AdamW's m and v, or SGD's
//    momentum buffer;
//  - activations: what forward keeps for backward (describe's activation
//    bytes x the micro-batch size), per chunk micro-batch from its F to its W,
//    at the most the schedule holds at once (simulated, not a formula per
//    schedule). Under activation checkpointing every K layers keep only the
//    group's input (groups without parameters keep everything, as the engine
//    does), plus, once, the largest group recomputed in backward;
//  - buffers: the boundary tensors of each chunk (the activation in, the
//    gradient back, and the same at its far end), twice: one being received
//    while one is sent.
// Not counted: the process itself (libraries, MPI, the allocator's slack) and
// workspace inside ops. Activations are counted in float32 under bf16 too (an
// over-estimate of up to 2x for that part).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/partition.hpp"
#include "pipe/schedule.hpp"

namespace libpipe {

struct MemoryModelOptions {
  std::int64_t micro_batch_size = 1;
  std::string optimizer = "adamw";  // "adamw" (m, v) or "sgd" (momentum)
  bool bf16 = false;                // --dtype bf16: bfloat16 copies of the parameters beside the float32 masters
  int checkpoint_interval = 0;      // --activation-checkpoint-interval K (0: off)
};

struct RankMemory {
  int stage = 0;
  double parameters = 0, bf16_copies = 0, gradients = 0, optimizer = 0;
  double activations = 0;  // the peak over the schedule
  int peak_in_flight = 0;  // chunk micro-batches held at that peak
  double buffers = 0;
  double total() const { return parameters + bf16_copies + gradients + optimizer + activations + buffers; }
};

// One entry per stage. `parts` splits the model into S x V chunks (S+1 entries without virtual stages) and
// `schedules` holds every stage's schedule (make_schedule), which places the chunks.
PIPE_API std::vector<RankMemory> predict_memory(const ModelDescription& model, const Parts& parts,
                                                const std::vector<Schedule>& schedules,
                                                const MemoryModelOptions& options);

// The most activation bytes `schedule`'s stage holds at once, each chunk micro-batch from its Forward to its
// BackwardWeight, given each global chunk's bytes per micro-batch; `count` (if given) receives how many chunk
// micro-batches are held at that peak.
PIPE_API double peak_activation_bytes(const Schedule& schedule, const std::vector<double>& chunk_bytes,
                                      int* count = nullptr);

}  // namespace libpipe
