// PipelineEngine: runs one rank's part of a training step by executing its
// schedule (schedule.hpp), instruction by instruction: loads, forward and the
// two halves of backward over the local layers, non-blocking point-to-point
// transfers of activations and gradients, tied and data-parallel gradient
// reductions, clipping and the optimizer step. With virtual stages a stage
// runs each of its chunks (PipelineModule::chunks()) as the schedule names
// them, handing tensors between two chunks of its own over in memory.
//
// It is the same computation as one process would do: initial weights are
// seeded per layer, gradients accumulate in micro-batch order, tied gradients
// are summed one stage's copy after another, and the gradient norm is summed in
// global layer order. On the CPU backend the losses of 1, 2, 3 or 4 stages are
// bit-identical.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pipe/comm.hpp"
#include "pipe/data.hpp"
#include "pipe/error.hpp"
#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/grid.hpp"
#include "pipe/optimizer.hpp"
#include "pipe/pipeline_module.hpp"
#include "pipe/schedule.hpp"
#include "pipe/work_kind.hpp"

namespace libpipe {

struct TrainOptions {
  std::string schedule = "1f1b";
  // With schedule "custom": one schedule per stage, read by parse_schedules (pipe-train --schedule-file); the
  // engine proves them (check_schedules) before it runs its own.
  std::vector<Schedule> custom_schedules;
  int micro_batches = 8;
  int micro_batch_size = 16;
  OptimizerConfig optimizer;
  float lr = 3e-3f;
  int warmup_steps = 10;     // linear warm-up: step k (from 0) at lr (k+1)/W, the first at lr/W
  int decay_steps = 0;       // cosine decay to min_lr over this many steps after warm-up (0: constant)
  float min_lr = 0.0f;
  float clip_grad_norm = 1.0f;  // 0 disables clipping
  // ZeRO stage 1 (1): the optimizer's state is split over the data-parallel group; gradients are reduce-scattered,
  // each rank updates its slice of every parameter, and the parameters are all-gathered. 0: every replica keeps
  // all of it (gradients all-reduced).
  int zero = 0;
  // Activation checkpointing: keep only the input of every group of this many
  // local layers and recompute the group in backward (0: off). A group is
  // checkpointed only when it has trainable parameters, unless its layers'
  // types are all in `checkpointable_types`.
  int checkpoint_interval = 0;
  std::vector<std::string> checkpointable_types;
  // A non-finite loss or gradient norm stops the run (NonFiniteError on every
  // rank) unless this is set: then the step's update is skipped and counted.
  bool skip_nonfinite = false;
  // A receive or collective waiting longer than this many seconds aborts with
  // a message naming the peer stage or group it waited on (0: wait forever).
  double comm_timeout = 0;
  // How activations, gradients and tied weights move between ranks: MPI
  // (host memory; device tensors staged through it) or NCCL (GPU memory, one
  // GPU per rank). Host values (losses, norms) always go through MPI.
  CommKind comm = CommKind::mpi;
  // Storage of parameters, activations and their gradients: float32, or
  // bfloat16 (mixed precision: float32 master weights, gradients, optimizer
  // state, losses and reductions; the math is float32 either way).
  DType dtype = DType::float32;
};

// A step produced a non-finite loss or gradient; thrown identically on every rank.
class PIPE_API NonFiniteError : public Error {
 public:
  using Error::Error;
};

// One timed piece of work on this rank, for traces (seconds since the
// engine's clock start, which all ranks take right after a barrier). The kind
// is the schedule instruction's (work_kind.hpp): forward, backward_input,
// backward_weight; send_activation and send_grad (posting the send);
// recv_activation and recv_grad (waiting for the message, at the compute that
// needs it); reduce_tied_grads, reduce_grads (with the gradient norm),
// optimizer_step; and, outside the schedule, wait_sends (completing the
// step's sends) and checkpoint (recorded by the caller).
struct TraceEvent {
  WorkKind kind;
  int micro_batch;  // -1 for step-wide work
  double start;
  double end;
  int chunk = 0;  // which of the stage's chunks (0..V-1) was worked on, as schedules name it; 0 for step-wide work
};

// Where this rank's time went, summed over the steps run so far.
struct EngineTotals {
  double compute_s = 0;  // forward + backward (incl. recomputation)
  double wait_s = 0;     // blocked on receives and sends
  double reduce_s = 0;   // tied and data-parallel reductions, gradient norm
  double optimizer_s = 0;
  double step_s = 0;     // wall time of the steps
  std::int64_t steps = 0;
  std::int64_t skipped_steps = 0;  // non-finite steps skipped
  std::int64_t bytes_sent = 0;
  std::int64_t bytes_received = 0;
  // Seconds per kind of timed work (indexed by WorkKind): F, B and W per micro-batch are what pipe-sim needs to
  // predict this run's bubble.
  std::array<double, kNumWorkKinds> work_s{};
};

struct StepStats {
  std::int64_t step = 0;
  double loss = 0;       // mean over the global batch, the same on every rank
  double grad_norm = 0;  // before clipping
  float lr = 0;
  double seconds = 0;
  bool skipped = false;  // non-finite: no update was applied (--skip-nonfinite)
};

class PIPE_API PipelineEngine {
 public:
  PipelineEngine(PipelineModule& module, const PipelineParallelGrid& grid, const ModelDescription& description,
                 const TrainOptions& options);
  ~PipelineEngine();
  PipelineEngine(const PipelineEngine&) = delete;
  PipelineEngine& operator=(const PipelineEngine&) = delete;

  // One optimizer step over the global batch of `step` (collective).
  StepStats train_step(const DataSource& data, std::int64_t step);
  // Mean loss over `micro_batches` micro-batches per replica of a split, forward only (collective).
  double evaluate(const DataSource& data, Split split, std::int64_t first_sample, int micro_batches);

  float learning_rate(std::int64_t step) const;
  // Records a TraceEvent for every piece of work from now on (collective:
  // a barrier aligns the ranks' clocks).
  void start_trace();
  const std::vector<TraceEvent>& trace() const;
  // Work done outside the engine (checkpoint I/O) on the same clock and trace.
  double clock() const;
  void record(WorkKind kind, double start, double end);
  const EngineTotals& totals() const;
  Optimizer& optimizer();
  // True when `flag` is set on any rank (collective, honours the comm
  // timeout): how the ranks agree on a stop request at a step boundary.
  bool any_rank(bool flag);
  std::int64_t global_batch() const;  // samples per step over all replicas
  // Bytes of activations checkpointing saves per micro-batch on this stage.
  std::int64_t checkpoint_saved_bytes() const { return checkpoint_saved_bytes_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::int64_t checkpoint_saved_bytes_ = 0;
};

}  // namespace libpipe
