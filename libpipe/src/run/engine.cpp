// PipelineEngine (see engine.hpp): executes a stage's schedule.
//
// Everything runs on the module's device: batches (host tensors from the
// DataSource) are copied there, and the host reads device results only
// through copies (the per-sample losses, once per step).
#include "pipe/engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include "run/mpi_check.hpp"
#include "pipe/collective.hpp"
#include "pipe/error.hpp"
#include "pipe/ops.hpp"

namespace libpipe {
namespace {

constexpr double kPi = 3.14159265358979323846;

// A run of consecutive local layers of one chunk that is either checkpointed
// (only its input is kept; it is recomputed in backward) or not.
struct Group {
  int first = 0;  // local layer indices [first, last)
  int last = 0;
  bool checkpointed = false;
};

// Everything one in-flight micro-batch holds on one chunk of this stage.
struct MicroBatch {
  Tensor input;     // the chunk's input (loaded, received, or handed over by the chunk before on this stage)
  Tensor labels;    // last chunk
  Tensor output;    // the chunk's output (sent on, or the per-sample loss)
  Tensor grad_in;   // gradient received from the next chunk
  Tensor grad_out;  // gradient of the chunk's input, sent back
  std::vector<LayerContext> contexts;  // per local layer
  std::vector<Tensor> group_inputs;    // per group, for recomputation
  std::vector<Tensor> dys;             // per local layer: the gradient its backward got
  CommRequest recv_activation;
  CommRequest recv_grad;
  bool weights_done = false;  // backward_weight ran
  bool grad_sent = false;     // the input gradient went to the previous chunk
};

// One chunk this stage runs: its layers, its checkpoint groups and its tensor types.
struct ChunkPlan {
  LocalChunk where;
  std::vector<Group> groups;
  TensorType input;   // per sample
  TensorType output;  // per sample
};

Shape batched(std::int64_t b, const Shape& s) {
  Shape out{b};
  out.insert(out.end(), s.begin(), s.end());
  return out;
}

}  // namespace

struct PipelineEngine::Impl {
  PipelineModule& module;
  const PipelineParallelGrid& grid;
  const ModelDescription& description;
  TrainOptions options;
  Device device;
  Backend& backend;  // of `device`
  Schedule train;
  Schedule inference;
  int num_chunks = 1;               // C = S x V, over the whole pipeline
  std::map<int, ChunkPlan> chunks;  // this stage's, by global chunk
  std::unique_ptr<Optimizer> optimizer;
  std::map<std::pair<int, int>, MicroBatch> in_flight;  // by (chunk, micro-batch)
  std::vector<std::pair<CommRequest, Tensor>> pending_sends;
  std::unique_ptr<Comm> pipe_comm;  // point-to-point between stages (ranks = stage ids)
  std::unique_ptr<Comm> data_comm;  // data-parallel replicas of this stage
  std::unique_ptr<Comm> world_comm;  // every rank (the step's loss)
  std::vector<std::unique_ptr<Comm>> tie_comms;  // per local tie group
  // Timing: every piece of work is measured; events are kept only when tracing.
  using Clock = std::chrono::steady_clock;
  Clock::time_point clock_start = Clock::now();
  bool tracing = false;
  std::vector<TraceEvent> events;
  EngineTotals totals;
  const DataSource* data = nullptr;
  Split split = Split::train;
  std::int64_t first_sample = 0;  // of this replica's share of the global batch
  int micro_batches = 0;
  bool training = true;
  bool weights_with_input = false;  // checkpointing: weight gradients taken group by group in backward_input
  // The training step under way: what RT, RD and OPT compute (train_step reads it after the schedule).
  StepStats stats;
  int nonfinite_layer = -1;  // the first global layer whose gradient is not finite, or -1
  bool update_done = false;  // OPT ran
  // Last stage: the per-sample losses [B] of the micro-batches run, in the
  // order they ran; read (one copy each) and summed after the schedule, so a
  // device never stalls the host in the middle of a step.
  std::vector<Tensor> losses;

  Impl(PipelineModule& m, const PipelineParallelGrid& g, const ModelDescription& d, const TrainOptions& o)
      : module(m), grid(g), description(d), options(o), device(m.device()), backend(backend_for(m.device())) {}

  int rank() const { return grid.global_rank(); }

  double now() const { return std::chrono::duration<double>(Clock::now() - clock_start).count(); }

  // Runs `work`, adds its duration to `bucket`, and records it when tracing.
  // The CPU backend's ops are synchronous: host clocks time them. A device
  // runs ops asynchronously, so the work is timed by marks in the device's own
  // stream (Backend::mark), which the host never waits for here: it runs
  // ahead, queueing work, and transfers on the comm stream overlap compute.
  // settle_device_timing turns the marks into times once per step.
  template <typename F>
  void timed(WorkKind kind, int chunk, int mb, double& bucket, F&& work) {
    if (device != Device::cpu) {
      if (!device_origin) {  // the step's first mark, taken with the device idle: its host time is known
        backend.synchronize();
        device_origin = backend.mark();
        device_origin_time = now();
      }
      std::shared_ptr<void> start = backend.mark();
      work();
      device_spans.push_back(DeviceSpan{kind, chunk, mb, &bucket, std::move(start), backend.mark()});
      return;
    }
    const double start = now();
    work();
    const double end = now();
    bucket += end - start;
    totals.work_s[static_cast<int>(kind)] += end - start;
    if (tracing) events.push_back(TraceEvent{kind, mb, start, end, local_chunk(chunk)});
  }

  // Work timed on the device, waiting to be read (see timed).
  struct DeviceSpan {
    WorkKind kind;
    int chunk;
    int mb;
    double* bucket;
    std::shared_ptr<void> start, end;
  };
  std::vector<DeviceSpan> device_spans;
  std::shared_ptr<void> device_origin;
  double device_origin_time = 0;

  // Adds the device-timed work to its buckets and the trace, on the host clock; waits for the device. Called at
  // the end of a step, where the host waits for the device anyway (the loss).
  void settle_device_timing() {
    for (DeviceSpan& span : device_spans) {
      const double start = device_origin_time + backend.seconds_between(device_origin.get(), span.start.get());
      const double end = device_origin_time + backend.seconds_between(device_origin.get(), span.end.get());
      *span.bucket += end - start;
      totals.work_s[static_cast<int>(span.kind)] += end - start;
      if (tracing) events.push_back(TraceEvent{span.kind, span.mb, start, end, local_chunk(span.chunk)});
    }
    device_spans.clear();
    device_origin.reset();
  }
  // A global chunk's index among this stage's chunks (what schedules and traces name).
  int local_chunk(int chunk) const { return chunk_index_on_stage(chunk, grid.num_stages()); }
  bool first_chunk(int chunk) const { return chunk == 0; }
  bool last_chunk(int chunk) const { return chunk == num_chunks - 1; }
  // Whether this stage holds the pipeline's last chunk (and so the loss).
  bool holds_loss() const { return chunks.count(num_chunks - 1) > 0; }
  int stage_of(int chunk) const { return chunk_stage(module.placement(), chunk, grid.num_stages()); }
  std::int64_t batch() const { return options.micro_batch_size; }

  ChunkPlan& plan(int chunk) {
    auto it = chunks.find(chunk);
    if (it == chunks.end())
      throw Error("stage " + std::to_string(grid.stage_id()) + ": the schedule names chunk " + std::to_string(chunk) +
                  ", which this stage does not hold");
    return it->second;
  }

  MicroBatch& state(int chunk, int mb) {
    MicroBatch& s = in_flight[{chunk, mb}];
    if (s.contexts.empty()) {
      s.contexts.resize(module.layers().size());
      s.dys.resize(module.layers().size());
      s.group_inputs.resize(plan(chunk).groups.size());
    }
    return s;
  }

  // Tags are 2 per (chunk, micro-batch); MPI guarantees at least 32767 of them.
  void check_tags(int run_micro_batches) const {
    int* tag_ub = nullptr;
    int has_tag_ub = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &has_tag_ub);
    const long long max_tag = has_tag_ub && tag_ub ? *tag_ub : 32767;
    const long long needed = 2LL * num_chunks * run_micro_batches + 1;
    if (needed > max_tag)
      throw Error(std::to_string(run_micro_batches) + " micro-batches" +
                  (num_chunks > grid.num_stages() ? " on " + std::to_string(num_chunks) + " chunks" : "") +
                  " need message tags up to " + std::to_string(needed) + " but this MPI allows " +
                  std::to_string(max_tag));
  }

  // Message tags: two per (chunk, micro-batch) of the run, named by the chunk that receives (activations) or
  // sends (gradients) across the link (c-1, c).
  int activation_tag(int receiving_chunk, int mb) const { return 2 * (receiving_chunk * micro_batches + mb); }
  int gradient_tag(int sending_chunk, int mb) const { return 2 * (sending_chunk * micro_batches + mb) + 1; }

  // A host tensor on the module's device.
  Tensor to_device(const Tensor& host) const { return ops::to_device(host, device); }
  // Under mixed precision float32 activations and gradients travel and are kept in bfloat16; token ids stay int32.
  DType activation_dtype(DType described) const {
    return described == DType::float32 ? options.dtype : described;
  }
  Tensor activation(const Tensor& t) const { return ops::to_dtype(t, activation_dtype(t.dtype())); }

  void load(int chunk, int mb) {
    if (!first_chunk(chunk) && !last_chunk(chunk)) return;
    Batch b = data->samples(split, first_sample + static_cast<std::int64_t>(mb) * batch(), batch());
    MicroBatch& s = state(chunk, mb);
    if (first_chunk(chunk)) s.input = activation(to_device(b.input));
    if (last_chunk(chunk)) s.labels = to_device(b.labels);
  }

  // " of chunk 3" where there are chunks.
  std::string chunk_text(int chunk) const {
    return module.virtual_stages() > 1 ? " of chunk " + std::to_string(chunk) : "";
  }

  // A receive from another stage is posted; from this stage's own chunk (V-shaped placements) the sender hands
  // the tensor over in memory instead (send), before the compute that needs it runs.
  void post_recv(Tensor& into, const TensorType& type, int chunk, int source, int tag, int mb, CommRequest& request) {
    if (source == grid.stage_id()) return;
    into = Tensor::empty(batched(batch(), type.shape), activation_dtype(type.dtype), device);
    request = pipe_comm->irecv(into, source, tag);
    request.what = std::string(tag % 2 ? "the gradient" : "the activation") + " of micro-batch " + std::to_string(mb) +
                   chunk_text(chunk) + " from stage " + std::to_string(source) + " (rank " +
                   std::to_string(grid.stage_to_global(source)) + ")";
    request.names_peer = true;
  }

  // Sends `t`, the result of (chunk, mb), to `to_chunk`: over the pipe comm, or into its state on this stage.
  void send(const Tensor& t, int chunk, int to_chunk, int tag, int mb) {
    const bool gradient = tag % 2;
    const int dest = stage_of(to_chunk);
    if (dest == grid.stage_id()) {
      MicroBatch& next = state(to_chunk, mb);
      (gradient ? next.grad_in : next.input) = t;
      return;
    }
    // Posting is all a send costs here; it is released once complete (release_completed_sends).
    timed(gradient ? WorkKind::SendGrad : WorkKind::SendActivation, chunk, mb, totals.wait_s, [&] {
      CommRequest request = pipe_comm->isend(t, dest, tag);
      request.what = std::string("the delivery of ") + (gradient ? "the gradient" : "the activation") +
                     " of micro-batch " + std::to_string(mb) + chunk_text(chunk) + " to stage " +
                     std::to_string(dest) + " (rank " + std::to_string(grid.stage_to_global(dest)) + ")";
      request.names_peer = true;
      pending_sends.emplace_back(std::move(request), t);  // keeps the tensor alive until completion
    });
  }

  // `kind` is the receive waited for: RecvActivation or RecvGrad.
  void wait_recv(CommRequest& request, WorkKind kind, int chunk, int mb) {
    if (request.active()) timed(kind, chunk, mb, totals.wait_s, [&] { pipe_comm->wait(request); });
  }

  // Drops the sends that have completed, so that a long run does not keep
  // every activation it ever sent (1F1B's memory bound must hold).
  void release_completed_sends() {
    pending_sends.erase(std::remove_if(pending_sends.begin(), pending_sends.end(),
                                       [&](auto& entry) { return pipe_comm->test(entry.first); }),
                        pending_sends.end());
  }

  void wait_sends() {
    timed(WorkKind::WaitSends, 0, -1, totals.wait_s, [&] {
      for (auto& [request, tensor] : pending_sends) pipe_comm->wait(request);
    });
    pending_sends.clear();
  }

  Layer& layer(int local) { return *module.layers()[local].layer; }
  bool is_loss_layer(int local) const {
    return module.layers()[local].index == static_cast<int>(description.layers.size()) - 1;
  }

  // Forward through local layers [first, last) with the given contexts.
  Tensor run_forward(MicroBatch& s, int first, int last, Tensor x, bool keep) {
    for (int i = first; i < last; ++i) {
      LayerContext scratch;
      LayerContext& ctx = keep ? s.contexts[i] : scratch;
      if (is_loss_layer(i)) ctx.labels = s.labels;
      x = layer(i).forward(ctx, x);
    }
    return x;
  }

  void forward(int chunk, int mb) {
    MicroBatch& s = state(chunk, mb);
    if (!s.input.defined())
      throw Error("stage " + std::to_string(grid.stage_id()) + ": micro-batch " + std::to_string(mb) +
                  chunk_text(chunk) + " has no input (a schedule without a load/receive)");
    const ChunkPlan& p = plan(chunk);
    Tensor x = s.input;
    for (std::size_t g = 0; g < p.groups.size(); ++g) {
      const Group& group = p.groups[g];
      // Checkpointed groups keep only their input when training; inference keeps nothing.
      const bool keep = training && !group.checkpointed;
      if (training && group.checkpointed) s.group_inputs[g] = x;
      x = run_forward(s, group.first, group.last, x, keep);
    }
    s.output = x;
    if (last_chunk(chunk)) {
      losses.push_back(s.output);
      if (!training) in_flight.erase({chunk, mb});
    }
  }

  // The sum over the micro-batches run of their mean loss (last stage; 0 elsewhere).
  double loss_sum() {
    double total = 0;
    std::vector<float> loss;
    for (const Tensor& t : losses) {
      loss.resize(static_cast<std::size_t>(t.numel()));  // [B]
      backend.copy_to_host(loss.data(), t.data(), t.bytes());
      double sum = 0;
      for (float l : loss) sum += l;
      total += sum / static_cast<double>(batch());
    }
    losses.clear();
    return total;
  }

  void backward_input(int chunk, int mb) {
    MicroBatch& s = state(chunk, mb);
    const ChunkPlan& p = plan(chunk);
    Tensor dy;
    if (last_chunk(chunk)) {
      // d(mean loss over the global batch) / d(one sample's loss).
      dy = Tensor::empty({batch()}, DType::float32, device);
      ops::fill(dy, 1.0f / static_cast<float>(batch() * micro_batches * grid.data_parallel_size()));
    } else {
      dy = s.grad_in;
    }
    for (std::size_t g = p.groups.size(); g-- > 0;) {
      const Group& group = p.groups[g];
      if (group.checkpointed) run_forward(s, group.first, group.last, s.group_inputs[g], true);
      for (int i = group.last; i-- > group.first;) {
        s.dys[i] = dy;
        dy = layer(i).backward_input(s.contexts[i], dy);
      }
      s.group_inputs[g] = Tensor();
      // With checkpointing, a recomputed group's weight gradients are taken
      // at once and its contexts freed, so that the peak holds one group's
      // activations, not the whole chunk's (the per-parameter accumulation
      // order is unchanged: results are bit-identical).
      if (weights_with_input) {
        for (int i = group.last; i-- > group.first;) {
          layer(i).backward_weight(s.contexts[i], s.dys[i]);
          s.contexts[i] = LayerContext{};
          s.dys[i] = Tensor();
        }
      }
    }
    s.grad_out = dy;
    s.output = Tensor();
  }

  void backward_weight(int chunk, int mb) {
    MicroBatch& s = state(chunk, mb);
    const ChunkPlan& p = plan(chunk);
    if (!weights_with_input) {
      const int first = p.where.first_local, last = first + p.where.end - p.where.begin;
      for (int i = last; i-- > first;) layer(i).backward_weight(s.contexts[i], s.dys[i]);
    }
    s.weights_done = true;
    release_if_done(chunk, mb);
  }

  // A micro-batch's state goes once its weights are done and its input
  // gradient is on its way (the send keeps that tensor alive).
  void release_if_done(int chunk, int mb) {
    MicroBatch& s = in_flight.at({chunk, mb});
    if (s.weights_done && (s.grad_sent || first_chunk(chunk))) in_flight.erase({chunk, mb});
  }

  void execute(const Instruction& in) {
    const int mb = in.micro_batch;
    // Instructions name the stage's own chunk (0..V-1); the engine works on global chunks.
    const int c = in.chunk >= 0 && in.chunk < static_cast<int>(module.chunks().size())
                      ? module.chunks()[in.chunk].chunk
                      : -1;
    switch (in.kind) {
      case WorkKind::LoadMicroBatch: load(c, mb); break;
      case WorkKind::RecvActivation: {
        MicroBatch& s = state(c, mb);
        post_recv(s.input, plan(c).input, c, stage_of(c - 1), activation_tag(c, mb), mb, s.recv_activation);
        break;
      }
      case WorkKind::Forward:
        wait_recv(state(c, mb).recv_activation, WorkKind::RecvActivation, c, mb);
        timed(WorkKind::Forward, c, mb, totals.compute_s, [&] { forward(c, mb); });
        break;
      case WorkKind::SendActivation:
        send(state(c, mb).output, c, c + 1, activation_tag(c + 1, mb), mb);
        if (!training) in_flight.erase({c, mb});  // inference keeps nothing once it is sent on
        break;
      case WorkKind::RecvGrad: {
        MicroBatch& s = state(c, mb);
        post_recv(s.grad_in, TensorType{plan(c).output.shape, DType::float32}, c, stage_of(c + 1),
                  gradient_tag(c + 1, mb), mb, s.recv_grad);
        break;
      }
      case WorkKind::BackwardInput:
        wait_recv(state(c, mb).recv_grad, WorkKind::RecvGrad, c, mb);
        timed(WorkKind::BackwardInput, c, mb, totals.compute_s, [&] { backward_input(c, mb); });
        break;
      case WorkKind::BackwardWeight:
        timed(WorkKind::BackwardWeight, c, mb, totals.compute_s, [&] { backward_weight(c, mb); });
        break;
      case WorkKind::SendGrad: {
        MicroBatch& s = state(c, mb);
        send(s.grad_out, c, c - 1, gradient_tag(c, mb), mb);
        s.grad_sent = true;
        release_if_done(c, mb);
        break;
      }
      // The step-wide reductions and the update: where the schedule puts them (after every W; OPT last).
      case WorkKind::ReduceTiedGrads:
        timed(WorkKind::ReduceTiedGrads, 0, -1, totals.reduce_s, [&] { reduce_tied_grads(); });
        break;
      case WorkKind::ReduceGrads:
        timed(WorkKind::ReduceGrads, 0, -1, totals.reduce_s, [&] {
          reduce_data_parallel_grads();
          stats.grad_norm = grad_norm(nonfinite_layer);
        });
        break;
      case WorkKind::OptimizerStep: optimizer_step(); break;
      // Traced work, never an instruction (check_schedules refuses it).
      case WorkKind::WaitSends:
      case WorkKind::Checkpoint:
      case WorkKind::Other:
        throw Error("stage " + std::to_string(grid.stage_id()) + ": " + std::string(work_kind_name(in.kind)) +
                    " is not a schedule instruction");
    }
  }

  static bool is_recv(const Instruction& in) {
    return in.kind == WorkKind::RecvActivation || in.kind == WorkKind::RecvGrad;
  }

  static bool is_send(const Instruction& in) {
    return in.kind == WorkKind::SendActivation || in.kind == WorkKind::SendGrad;
  }

  // Receives are posted one step ahead, so that a message arriving while this
  // stage computes lands straight in its buffer; the wait is at the compute
  // that needs it. Sends are non-blocking and completed at the end of the run.
  // A Comm that matches messages by order (NCCL) gets each step's sends and
  // receives instead, together in one batch (see Comm::begin_batch).
  void run(const Schedule& schedule) {
    if (!pipe_comm->receives_ahead()) return run_in_step_batches(schedule);
    const auto& steps = schedule.steps;
    std::vector<std::vector<bool>> posted(steps.size());
    for (std::size_t t = 0; t < steps.size(); ++t) posted[t].assign(steps[t].size(), false);
    auto post_receives = [&](std::size_t t) {
      if (t >= steps.size()) return;
      for (std::size_t i = 0; i < steps[t].size(); ++i)
        if (is_recv(steps[t][i]) && !posted[t][i]) {
          execute(steps[t][i]);
          posted[t][i] = true;
        }
    };
    for (std::size_t t = 0; t < steps.size(); ++t) {
      post_receives(t);
      post_receives(t + 1);
      for (std::size_t i = 0; i < steps[t].size(); ++i)
        if (!is_recv(steps[t][i])) execute(steps[t][i]);
      release_completed_sends();
    }
    wait_sends();
    in_flight.clear();
  }

  // The schedules were checked (check_messages_within_steps) when the engine was made.
  void run_in_step_batches(const Schedule& schedule) {
    for (const Step& step : schedule.steps) {
      pipe_comm->begin_batch();
      for (const Instruction& in : step)
        if (is_send(in) || is_recv(in)) execute(in);
      pipe_comm->end_batch();
      for (const Instruction& in : step)
        if (!is_send(in) && !is_recv(in)) execute(in);
      release_completed_sends();
    }
    wait_sends();
    in_flight.clear();
  }

  // Tied parameters: the gradient of a tied weight is the sum of its uses,
  // summed local copies first (in layer order), then across the stages of the
  // tie group; every copy gets the sum.
  std::vector<std::vector<Parameter*>> tied_copies() {
    std::vector<std::vector<Parameter*>> out;
    for (const auto& tie : module.tie_groups()) {
      std::vector<Parameter*> copies;
      for (auto& l : module.layers())
        for (int index : tie.local_layers)
          if (l.index == index)
            for (auto& p : l.layer->parameters())
              if (p.spec.tieable) copies.push_back(&p);
      out.push_back(copies);
    }
    return out;
  }

  void reduce_tied_grads() {
    auto copies = tied_copies();
    for (std::size_t t = 0; t < copies.size(); ++t) {
      auto& c = copies[t];
      for (std::size_t i = 1; i < c.size(); ++i) ops::accumulate(c[0]->grad, c[i]->grad);
      tie_comms[t]->allreduce_sum(c[0]->grad);
      for (std::size_t i = 1; i < c.size(); ++i)
        backend_for(c[i]->grad.device()).copy(c[i]->grad.f32(), c[0]->grad.f32(), c[0]->grad.numel());
    }
  }

  // Start-up: every copy of a tied weight takes the value of the group's first
  // layer (its owner, on the lowest stage).
  void broadcast_tied_weights() {
    auto copies = tied_copies();
    for (std::size_t t = 0; t < copies.size(); ++t) {
      auto& c = copies[t];
      tie_comms[t]->broadcast(c[0]->value, 0);
      for (std::size_t i = 1; i < c.size(); ++i)
        backend_for(c[i]->value.device()).copy(c[i]->value.f32(), c[0]->value.f32(), c[0]->value.numel());
    }
  }

  // Every parameter tensor of the stage once (tied layers on one stage share theirs).
  std::vector<Parameter*> distinct_params() {
    std::vector<Parameter*> out;
    std::set<const void*> seen;
    for (auto& l : module.layers())
      for (auto& p : l.layer->parameters())
        if (seen.insert(p.value.data()).second) out.push_back(&p);
    return out;
  }

  // Sharded (ZeRO-1), each rank needs the sum of only its slice of every gradient.
  void reduce_data_parallel_grads() {
    if (grid.data_parallel_size() == 1) return;
    for (Parameter* p : distinct_params())
      optimizer->sharded() ? data_comm->reduce_scatter_sum(p->grad) : data_comm->allreduce_sum(p->grad);
  }

  // The global gradient norm, summed per global layer and then in layer order,
  // so that it does not depend on how the layers are split. A tied weight
  // counts once, on the tie group's first layer.
  // Also names the first global layer whose gradient is not finite (-1 if none).
  double grad_norm(int& nonfinite_layer) {
    std::vector<double> per_layer(description.layers.size(), 0.0);
    std::vector<bool> tie_owner(description.layers.size(), true);
    for (const auto& t : description.ties)
      for (std::size_t i = 1; i < t.layers.size(); ++i) tie_owner[t.layers[i]] = false;
    // Summed in one call, so that a GPU is waited for once per step, not once per parameter.
    // Sharded, a rank holds the sum of its slice of each gradient only: the slices' squares add up over the group.
    std::vector<Tensor> slices;
    std::vector<int> layer_of;
    for (auto& l : module.layers())
      for (auto& p : l.layer->parameters())
        if (!p.spec.tieable || tie_owner[l.index]) {
          slices.push_back(optimizer->sharded() ? shard_view(p.grad, optimizer->shard_of(p)) : p.grad);
          layer_of.push_back(l.index);
        }
    std::vector<const Tensor*> grads;
    for (const Tensor& t : slices) grads.push_back(&t);
    const std::vector<double> squares = ops::sum_squares_each(grads);
    for (std::size_t i = 0; i < squares.size(); ++i) per_layer[layer_of[i]] += squares[i];
    if (optimizer->sharded()) data_comm->allreduce_sum(per_layer.data(), static_cast<int>(per_layer.size()));
    pipe_comm->allreduce_sum(per_layer.data(), static_cast<int>(per_layer.size()));
    double total = 0;
    nonfinite_layer = -1;
    for (std::size_t i = 0; i < per_layer.size(); ++i) {
      total += per_layer[i];
      if (nonfinite_layer < 0 && !std::isfinite(per_layer[i])) nonfinite_layer = static_cast<int>(i);
    }
    return std::sqrt(total);
  }

  // OPT: the step's loss; then the update, unless the loss or a gradient is not finite: then the gradients are
  // dropped and the step is marked skipped (train_step stops the run unless --skip-nonfinite).
  void optimizer_step() {
    stats.loss = global_loss(micro_batches);
    update_done = true;
    if (!std::isfinite(stats.loss) || nonfinite_layer >= 0) {
      for (auto& l : module.layers()) zero_grads(*l.layer);
      stats.skipped = true;
      return;
    }
    timed(WorkKind::OptimizerStep, 0, -1, totals.optimizer_s, [&] {
      if (options.clip_grad_norm > 0 && stats.grad_norm > options.clip_grad_norm) {
        const float factor = static_cast<float>(options.clip_grad_norm / (stats.grad_norm + 1e-6));
        for (Parameter* p : distinct_params()) ops::scale(p->grad, factor);  // a shared gradient once
      }
      optimizer->step(stats.lr);
      // Every rank updated its slice: gather the whole of every parameter; under mixed precision its bfloat16
      // values (the float32 masters stay split), else the float32 values themselves.
      if (optimizer->sharded())
        for (Parameter* p : distinct_params()) {
          data_comm->all_gather(optimizer->master_slice(*p) ? p->value : master_of(*p));
          refresh_from_master(*p);
        }
      for (auto& l : module.layers()) zero_grads(*l.layer);
    });
  }

  // The step's mean loss, the same on every rank: the last stage of each
  // replica holds its part; other ranks add exact zeros.
  double global_loss(int micro_batches_per_replica) {
    const double sum = loss_sum();
    double total = (holds_loss() && grid.model_parallel_id() == 0) ? sum : 0.0;
    world_comm->allreduce_sum(&total, 1);
    return total / (static_cast<double>(micro_batches_per_replica) * grid.data_parallel_size());
  }
};

PipelineEngine::PipelineEngine(PipelineModule& module, const PipelineParallelGrid& grid,
                               const ModelDescription& description, const TrainOptions& options)
    : impl_(std::make_unique<Impl>(module, grid, description, options)) {
  Impl& e = *impl_;
  if (options.micro_batches < 1 || options.micro_batch_size < 1)
    throw Error("micro-batches and micro-batch size must be at least 1");
  if (!is_training_schedule(options.schedule))
    throw Error("schedule '" + options.schedule + "' cannot train (it has no backward); use 1f1b, gpipe or zb-h1");
  const int V = module.virtual_stages();
  e.num_chunks = grid.num_stages() * V;
  e.micro_batches = options.micro_batches;
  e.check_tags(options.micro_batches);
  // Every rank proves the whole set of schedules (all stages together: every
  // send meets its receive, nothing deadlocks) before it runs its own.
  std::vector<Schedule> all;
  if (options.schedule == "custom") {
    all = options.custom_schedules;
    if (static_cast<int>(all.size()) != grid.num_stages())
      throw Error("the schedule file has " + std::to_string(all.size()) + " stage line(s) for a pipeline of " +
                  std::to_string(grid.num_stages()) + " stages");
    if (all[0].micro_batches != options.micro_batches)
      throw Error("the schedule file runs " + std::to_string(all[0].micro_batches) +
                  " micro-batches (its largest micro-batch + 1), but --micro-batches is " +
                  std::to_string(options.micro_batches));
    if (all[0].virtual_stages != V || all[0].placement != module.placement())
      throw Error("the schedule file runs " + std::to_string(all[0].virtual_stages) + " chunk(s) per stage, " +
                  placement_name(all[0].placement) + ", but the model was split into " + std::to_string(V) +
                  " per stage, " + placement_name(module.placement()));
    check_schedules(all);
  } else {
    if (schedule_virtual_stages(options.schedule, V) != V || (V > 1 && schedule_placement(options.schedule) != module.placement()))
      throw Error("the " + options.schedule + " schedule cannot run a model split into " + std::to_string(V) +
                  " chunks per stage, " + placement_name(module.placement()));
    all = make_checked_schedules(options.schedule, grid.num_stages(), options.micro_batches, V);
  }
  e.train = all[grid.stage_id()];
  (void)model_loss(description);  // the model ends in a loss

  // Per chunk: its tensor types, and its checkpoint groups, every `interval`
  // layers from the chunk's first (a group never spans two chunks).
  for (const LocalChunk& where : module.chunks()) {
    ChunkPlan& plan = e.chunks[where.chunk];
    plan.where = where;
    plan.input = description.layers[where.begin].input;
    plan.output = description.layers[where.end - 1].description.output;
    const int first_local = where.first_local, n = where.end - where.begin;
    const int interval = options.checkpoint_interval > 0 ? options.checkpoint_interval : n;
    for (int first = first_local; first < first_local + n; first += interval) {
      Group g{first, std::min(first_local + n, first + interval), false};
      if (options.checkpoint_interval > 0) {
        bool has_params = false, all_listed = true;
        for (int i = g.first; i < g.last; ++i) {
          has_params = has_params || !module.layers()[i].layer->parameters().empty();
          bool listed = false;
          for (const auto& t : options.checkpointable_types) listed = listed || t == module.layers()[i].type;
          all_listed = all_listed && listed;
        }
        g.checkpointed = options.checkpointable_types.empty() ? has_params : all_listed;
        // What the group's contexts would have held, less the input it keeps.
        if (g.checkpointed) {
          const LayerInfo& first_layer = description.layers[module.layers()[g.first].index];
          checkpoint_saved_bytes_ -=
              numel(first_layer.input.shape) * static_cast<std::int64_t>(dtype_size(first_layer.input.dtype));
          for (int i = g.first; i < g.last; ++i)
            checkpoint_saved_bytes_ += description.layers[module.layers()[i].index].description.activation_bytes;
        }
      }
      e.weights_with_input = e.weights_with_input || g.checkpointed;
      plan.groups.push_back(g);
    }
  }
  // Saved bytes are per sample in describe; per micro-batch here.
  checkpoint_saved_bytes_ *= options.micro_batch_size;

  const std::string stage = std::to_string(grid.stage_id());
  // In the same order on every rank: making an NCCL comm is collective.
  const CommKind kind = options.comm;
  e.pipe_comm = make_comm(kind, grid.pipe_comm(), "the pipeline of replica " + std::to_string(grid.data_parallel_id()));
  // A comm that runs each step's transfers as one batch (NCCL) needs every message sent and received in one step.
  if (!e.pipe_comm->receives_ahead()) {
    try {
      check_messages_within_steps(all);
    } catch (const Error& error) {
      throw Error(std::string(error.what()) + "; the " + options.schedule + " schedule needs --comm mpi");
    }
  }
  e.data_comm = make_comm(kind, grid.data_parallel_comm(), "the data-parallel group of stage " + stage);
  e.world_comm = make_mpi_comm(grid.world(), "the whole job");  // host values only
  for (const auto& tie : module.tie_groups())
    e.tie_comms.push_back(make_comm(kind, tie.comm, "the tie group '" + tie.key + "'"));
  for (Comm* c : {e.pipe_comm.get(), e.data_comm.get(), e.world_comm.get()}) c->set_timeout(options.comm_timeout);
  for (auto& c : e.tie_comms) c->set_timeout(options.comm_timeout);

  // Collective first: a rank that fails a local allocation below must not
  // leave its peers inside this broadcast.
  e.broadcast_tied_weights();
  if (options.dtype != DType::float32 && options.dtype != DType::bfloat16)
    throw Error(std::string("training stores parameters and activations in float32 or bfloat16, not ") +
                dtype_name(options.dtype));
  std::vector<Layer*> layers;
  for (auto& l : module.layers()) {
    if (options.dtype == DType::bfloat16) store_parameters_in_bf16(*l.layer);
    allocate_grads(*l.layer);
    layers.push_back(l.layer.get());
  }
  if (options.zero != 0 && options.zero != 1) throw Error("--zero " + std::to_string(options.zero) + ": expected 0 or 1");
  const bool shard = options.zero == 1;
  e.optimizer = std::make_unique<Optimizer>(options.optimizer, parameters_of(layers), shard ? e.data_comm->rank() : 0,
                                            shard ? e.data_comm->size() : 1);
}

PipelineEngine::~PipelineEngine() = default;

std::int64_t PipelineEngine::global_batch() const {
  const Impl& e = *impl_;
  return static_cast<std::int64_t>(e.options.micro_batches) * e.options.micro_batch_size * e.grid.data_parallel_size();
}

float PipelineEngine::learning_rate(std::int64_t step) const {
  const TrainOptions& o = impl_->options;
  if (step < o.warmup_steps) return o.lr * static_cast<float>(step + 1) / static_cast<float>(o.warmup_steps);
  if (o.decay_steps <= 0) return o.lr;
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / o.decay_steps);
  return static_cast<float>(o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + std::cos(kPi * progress)));
}

StepStats PipelineEngine::train_step(const DataSource& data, std::int64_t step) {
  Impl& e = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  e.data = &data;
  e.split = Split::train;
  e.training = true;
  e.micro_batches = e.options.micro_batches;
  e.first_sample = step * global_batch() +
                   static_cast<std::int64_t>(e.grid.data_parallel_id()) * e.micro_batches * e.batch();
  e.losses.clear();
  e.device_spans.clear();  // left by a step that threw
  e.device_origin.reset();
  // The schedule ends with its reductions and the update (RT, RD, OPT), which fill in the step's stats.
  e.stats = StepStats{};
  e.stats.step = step;
  e.stats.lr = learning_rate(step);
  e.nonfinite_layer = -1;
  e.update_done = false;
  e.run(e.train);
  if (!e.update_done)
    throw Error("stage " + std::to_string(e.grid.stage_id()) + ": the schedule ran no optimizer step (OPT)");
  StepStats stats = e.stats;
  // Every rank holds the same loss and per-layer norms, so every rank takes the same decision here.
  if (stats.skipped && !e.options.skip_nonfinite) {
    std::string where = "a non-finite loss";
    if (e.nonfinite_layer >= 0) {
      const auto& parts = e.module.parts();
      const int chunk = static_cast<int>(std::upper_bound(parts.begin(), parts.end(), e.nonfinite_layer) -
                                         parts.begin()) - 1;
      where = "a non-finite gradient in layer " + std::to_string(e.nonfinite_layer) + " (" +
              e.description.layers[e.nonfinite_layer].type + ") on stage " + std::to_string(e.stage_of(chunk));
    }
    throw NonFiniteError("step " + std::to_string(step + 1) + " produced " + where + " (loss " +
                         std::to_string(stats.loss) + "); lower --lr, keep --clip-grad-norm, or pass "
                         "--skip-nonfinite to skip such steps");
  }
  if (stats.skipped) ++e.totals.skipped_steps;
  e.settle_device_timing();
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  e.totals.step_s += stats.seconds;
  ++e.totals.steps;
  return stats;
}

void PipelineEngine::start_trace() {
  Impl& e = *impl_;
  barrier(e.grid.world(), "the clock alignment");
  e.clock_start = Impl::Clock::now();
  e.tracing = true;
  e.events.clear();
}

const std::vector<TraceEvent>& PipelineEngine::trace() const { return impl_->events; }

double PipelineEngine::clock() const { return impl_->now(); }

void PipelineEngine::record(WorkKind kind, double start, double end) {
  if (impl_->tracing) impl_->events.push_back(TraceEvent{kind, -1, start, end, 0});
}

Optimizer& PipelineEngine::optimizer() { return *impl_->optimizer; }

bool PipelineEngine::any_rank(bool flag) {
  double count = flag ? 1.0 : 0.0;  // a sum of 0/1 in double is exact
  impl_->world_comm->allreduce_sum(&count, 1);
  return count > 0;
}

const EngineTotals& PipelineEngine::totals() const {
  Impl& e = *impl_;
  e.totals.bytes_sent = e.pipe_comm->stats().bytes_sent + e.data_comm->stats().bytes_sent;
  e.totals.bytes_received = e.pipe_comm->stats().bytes_received + e.data_comm->stats().bytes_received;
  for (const auto& c : e.tie_comms) {
    e.totals.bytes_sent += c->stats().bytes_sent;
    e.totals.bytes_received += c->stats().bytes_received;
  }
  return e.totals;
}

double PipelineEngine::evaluate(const DataSource& data, Split split, std::int64_t first_sample, int micro_batches) {
  Impl& e = *impl_;
  e.data = &data;
  e.split = split;
  e.training = false;
  e.micro_batches = micro_batches;
  e.first_sample = first_sample + static_cast<std::int64_t>(e.grid.data_parallel_id()) * micro_batches * e.batch();
  e.losses.clear();
  e.check_tags(micro_batches);
  const std::vector<Schedule> all = make_checked_inference_schedules(e.grid.num_stages(), micro_batches,
                                                                     e.module.virtual_stages(), e.module.placement());
  if (e.options.comm == CommKind::nccl) check_messages_within_steps(all);
  e.inference = all[e.grid.stage_id()];
  // Evaluation is not part of the training steps' time accounting.
  const EngineTotals before = e.totals;
  e.device_spans.clear();
  e.device_origin.reset();
  e.run(e.inference);
  e.settle_device_timing();
  e.totals.compute_s = before.compute_s;
  e.totals.wait_s = before.wait_s;
  e.training = true;
  return e.global_loss(micro_batches);
}

}  // namespace libpipe
