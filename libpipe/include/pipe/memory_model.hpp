// The memory each rank of a pipeline needs, predicted from descriptions and
// the schedule alone (pure: no MPI, nothing allocated). pipe-plan prints it
// per rank; pipe-train's end-of-run report shows it beside the measured peak.
//
// What it counts, per stage (every data-parallel replica of a stage alike):
//  - parameters: float32 masters of the stage's layers, a weight tied between
//    layers of one stage once (they share storage), a weight tied across
//    stages on each of them; under bf16 also their bfloat16 copies (and --zero 1 splits the masters);
//  - gradients (float32) and the optimizer's state: AdamW's m and v, or SGD's
//    momentum buffer;
//  - activations: what forward keeps for backward (describe's activation
//    bytes x the micro-batch size), per chunk micro-batch from its F to its W,
//    and the gradient each layer's backward received (its output's size),
//    kept from the chunk's B to its W for the weights' gradients; at the most
//    the schedule holds at once (simulated, not a formula per schedule).
//    Under activation checkpointing every K layers keep only the group's
//    input (groups without parameters keep everything, as the engine does),
//    plus, once, the largest group recomputed in backward;
//  - workspace: the largest layer's saved activations, once: its backward
//    makes a gradient for each of them;
//  - buffers: the boundary tensors of each chunk (the activation in, the
//    gradient back, and the same at its far end), twice: one being received
//    while one is sent.
//  - runtime: what the compute libraries add once they run (MemoryModelOptions::runtime_bytes; on the CPU
//    kCpuRuntimeBytes, 0 on a GPU, whose allocator's peak counts tensors only).
// Not counted: the process before the model is built (the program, its libraries, MPI). Activations are counted in
// float32 under bf16 too (an over-estimate of up to 2x for that part).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/partition.hpp"
#include "pipe/schedule.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

// What the CPU backend's libraries add to a rank's resident memory once they compute, beyond its tensors: oneDNN's
// code and JIT kernels, the GEMMs' and attention's scratch memory, OpenBLAS's buffer, the small blocks of the heap.
// A measured constant (scripts/bench-planner: 9-12 MB on gpt-tiny's ranks, AMD EPYC, oneDNN 2.6, OpenBLAS 0.3.21;
// on gpt-small the scratch grows to about 20 MB), not derived from the model.
inline constexpr double kCpuRuntimeBytes = 10.0 * 1024 * 1024;

// MemoryModelOptions::runtime_bytes for a device: kCpuRuntimeBytes on the CPU, 0 on a GPU (its allocator's peak,
// which the prediction is for there, counts tensors only).
inline double runtime_bytes(Device device) { return device == Device::cpu ? kCpuRuntimeBytes : 0.0; }

struct MemoryModelOptions {
  std::int64_t micro_batch_size = 1;
  std::string optimizer = "adamw";  // "adamw" (m, v) or "sgd" (momentum)
  bool bf16 = false;                // --dtype bf16: bfloat16 copies of the parameters beside the float32 masters
  int checkpoint_interval = 0;      // --activation-checkpoint-interval K (0: off)
  int optimizer_shards = 1;         // --zero 1: the optimizer's state (and bf16's masters) split over this many ranks
  double runtime_bytes = 0;         // the compute libraries' own memory per rank (kCpuRuntimeBytes on the CPU)
};

struct RankMemory {
  int stage = 0;
  double parameters = 0, bf16_copies = 0, gradients = 0, optimizer = 0;
  double activations = 0;  // the peak over the schedule
  int peak_in_flight = 0;  // chunk micro-batches held at that peak
  double workspace = 0;
  double buffers = 0;
  double runtime = 0;
  double total() const {
    return parameters + bf16_copies + gradients + optimizer + activations + workspace + buffers + runtime;
  }
};

// One entry per stage. `parts` splits the model into S x V chunks (S+1 entries without virtual stages) and
// `schedules` holds every stage's schedule (make_schedule), which places the chunks.
PIPE_API std::vector<RankMemory> predict_memory(const ModelDescription& model, const Parts& parts,
                                                const std::vector<Schedule>& schedules,
                                                const MemoryModelOptions& options);

// The most activation bytes `schedule`'s stage holds at once, each chunk micro-batch from its Forward to its
// BackwardWeight, given each global chunk's bytes per micro-batch, and (if given) `backward_bytes` of it from its
// BackwardInput to its BackwardWeight; `count` (if given) receives how many chunk micro-batches are held at that
// peak.
PIPE_API double peak_activation_bytes(const Schedule& schedule, const std::vector<double>& chunk_bytes,
                                      int* count = nullptr, const std::vector<double>* backward_bytes = nullptr);

// An upper bound of predict_memory's total for a stage holding layers [begin, end) as its one chunk, that never
// decreases when the range grows (what partition_balanced_capped needs, so what --memory-limit constrains). It
// equals predict_memory's total except where predict_memory depends on the exact ends of the range:
//  - a weight tied between two layers of the stage counts twice (predict_memory: once);
//  - the boundary buffers are those of the largest activation coming into and leaving any layer of the range
//    (predict_memory: of its first and last layer);
//  - the workspace is the largest layer's in the range either way (exact);
//  - under activation checkpointing the groups keep at most the most that any group starting in the range keeps,
//    each, and at most what groups starting at every layer would keep, together; and recompute the most that any
//    group starting in the range recomputes.
// For a stack of identical blocks without checkpointing these differences vanish but for the ends of the model.
// Needs one chunk per stage (schedules without virtual stages). O(1) per call after O(n log n) set-up.
class PIPE_API StageMemoryBound {
 public:
  StageMemoryBound(const ModelDescription& model, const std::vector<Schedule>& schedules,
                   const MemoryModelOptions& options);
  double operator()(int stage, int begin, int end) const;
  // Chunk micro-batches the stage holds at its peak (from its schedule).
  int in_flight(int stage) const { return in_flight_.at(static_cast<std::size_t>(stage)); }
  // The points (micro-batches held from F to W, of them between B and W) where a stage's schedule may peak: its
  // activations peak at the largest of held x kept + between x gradients over them.
  struct Holding {
    int held, between;
  };

 private:
  // Largest value over a range in O(1): table[k][i] is the maximum of values[i, i + 2^k).
  struct RangeMax {
    std::vector<std::vector<double>> table;
    void build(const std::vector<double>& values);
    double operator()(int begin, int end) const;
  };
  std::vector<int> in_flight_;
  std::vector<std::vector<Holding>> holdings_;  // per stage
  // Running sums of parameters, activation bytes, and what a checkpoint group starting at each layer keeps.
  std::vector<double> param_prefix_, activation_prefix_, kept_prefix_, output_prefix_;
  double bytes_per_param_ = 0;
  double runtime_ = 0;
  int interval_ = 0;
  RangeMax in_, out_, group_kept_, group_recompute_, activation_;
};

}  // namespace libpipe
