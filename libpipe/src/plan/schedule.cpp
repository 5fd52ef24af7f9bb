// Pipeline schedules: the generators (which compute runs in which step, as
// DeepSpeed places it), the one rule that turns compute placement into steps
// of instructions, the text forms, and the checker that simulates all stages.
#include "pipe/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <limits>
#include <mutex>
#include <optional>
#include <queue>
#include <tuple>

#include "pipe/error.hpp"
#include "model/suggest.hpp"
#include "plan/schedule_program.hpp"

namespace libpipe {

namespace {

bool is_step_wide(WorkKind k) {
  return k == WorkKind::ReduceTiedGrads || k == WorkKind::ReduceGrads || k == WorkKind::OptimizerStep;
}

// Schedules read from text (parse_schedules) have this kind: training, with no generator.
const char* const kCustom = "custom";

std::string plural(int n, const std::string& word) {
  const bool es = !word.empty() && (word.back() == 'h' || word.back() == 's');  // "micro-batches"
  return std::to_string(n) + " " + word + (n == 1 ? "" : es ? "es" : "s");
}

// What a stage computes in one step: a forward, a whole backward (B then W), or
// one half of a split backward (zero-bubble schedules) of a micro-batch on a chunk.
enum class Work { forward, backward, backward_input, backward_weight };
struct Compute {
  Work work;
  int micro_batch;
  int chunk;
};
using Placement = std::vector<std::optional<Compute>>;  // one entry per step

// DeepSpeed's TrainSchedule._step_to_micro_batch: stages alternate by parity,
// a forward in the steps of their own parity and a backward in the others.
Placement place_1f1b(int S, int M, int, int s) {
  Placement p(2 * (M + S - 1));
  for (int t = 0; t < static_cast<int>(p.size()); ++t) {
    const bool forward = (t % 2) == (s % 2);
    int mb;
    if (forward)
      mb = t / 2 - s / 2;  // _even_step_forward_id and _odd_step_forward_id
    else if (t % 2 == 0)
      mb = t / 2 - S + (s + 1) / 2;  // _even_step_backward_id (odd stage)
    else
      mb = (t - 1) / 2 - S + 1 + s / 2;  // _odd_step_backward_id (even stage)
    if (mb >= 0 && mb < M) p[t] = Compute{forward ? Work::forward : Work::backward, mb, s};
  }
  return p;
}

// Fill-drain: micro-batch m's forward reaches stage s at step m + s; the last
// stage starts the backwards right after its last forward, and each backward
// reaches the stage before one step later.
Placement place_gpipe(int S, int M, int, int s) {
  Placement p(2 * (M + S - 1));
  for (int m = 0; m < M; ++m) {
    p[m + s] = Compute{Work::forward, m, s};
    p[(M + S - 1) + m + (S - 1 - s)] = Compute{Work::backward, m, s};
  }
  return p;
}

Placement place_inference(int S, int M, int, int s) {
  Placement p(M + S - 1);
  for (int m = 0; m < M; ++m) p[m + s] = Compute{Work::forward, m, s};
  return p;
}

// Zero-bubble ZB-H1 (Qi et al., ICLR 2024): backward split into B (input
// gradient, on the critical path) and W (weight gradient, deferrable). Stage s
// warms up with S-s forwards, then runs B_k, W_(k-s) (its W's lag its B's by s
// micro-batches) and the next forward in turn, and drains the deferred W's at
// the end, where 1F1B idles. With F = B = W = 1 every op after the warm-up
// runs back to back from slot 2S-1-s (checked against a dependency simulation
// for S <= 12, S <= M <= 3S+2 when this was written), so the makespan is
// 3M + S - 1 slots: the bubble is (S-1)(F+B-W), a third of 1F1B's, and every
// stage holds at most S micro-batches from F to W, 1F1B's peak (stage 0).
Placement place_zb_h1(int S, int M, int, int s) {
  Placement p(3 * M + S - 1);
  const int warm = S - s;
  for (int m = 0; m < warm; ++m) p[s + m] = Compute{Work::forward, m, s};
  int t = 2 * S - 1 - s, next_forward = warm, next_weight = 0;
  for (int k = 0; k < M; ++k) {
    p[t++] = Compute{Work::backward_input, k, s};
    if (k - next_weight >= s) p[t++] = Compute{Work::backward_weight, next_weight++, s};
    if (next_forward < M) p[t++] = Compute{Work::forward, next_forward++, s};
  }
  while (next_weight < M) p[t++] = Compute{Work::backward_weight, next_weight++, s};
  return p;
}

// Megatron-LM's interleaved 1F1B (its forward_backward_pipelining_with_
// interleaving) over V looped chunks: the k-th forward of stage s works on
// local chunk (k mod SV) / S and micro-batch (k / SV) S + k mod S, the k-th
// backward on the same micro-batch of local chunk V-1 minus that; 2(S-1-s) +
// (V-1)S warm-up forwards, then a forward and a backward in turn, then the
// remaining backwards. One compute per step, and a last step for the last send.
Placement place_interleaved(int S, int M, int V, int s) {
  const int total = M * V;
  auto chunk = [&](int k, bool forward) {
    const int local = (k % (S * V)) / S;
    return (forward ? local : V - 1 - local) * S + s;
  };
  auto micro_batch = [&](int k) { return (k / (S * V)) * S + k % S; };
  const int warm = std::min(2 * (S - 1 - s) + (V - 1) * S, total);
  Placement p;
  p.reserve(2 * static_cast<std::size_t>(total) + 1);
  for (int k = 0; k < warm; ++k) p.push_back(Compute{Work::forward, micro_batch(k), chunk(k, true)});
  for (int i = 0; i < total - warm; ++i) {
    p.push_back(Compute{Work::forward, micro_batch(warm + i), chunk(warm + i, true)});
    p.push_back(Compute{Work::backward, micro_batch(i), chunk(i, false)});
  }
  for (int i = std::max(0, total - warm); i < total; ++i)
    p.push_back(Compute{Work::backward, micro_batch(i), chunk(i, false)});
  p.emplace_back();
  return p;
}

// ZB-V's placements, every stage at once, by list scheduling in unit time
// slots (F = B = W = 1, messages free): in each slot every stage runs the
// first ready one of B (the critical path; the oldest micro-batch, then the
// later chunk), F (while the stage holds fewer than `cap` chunk activations;
// the later chunk first, which carries micro-batches to the loss and frees
// memory sooner) and W (the oldest first). Each chunk runs its F's, B's and
// W's in micro-batch order (so that messages on a link keep their order and
// weight gradients accumulate as in one process). Idle slots stay idle steps.
// What list scheduling made: per stage, its computes with their slots, packed in 64 bits (the slot in the top 32,
// the work in 2, the stage's chunk index in 2, the micro-batch in 28: make_schedule allows at most 2^28 chunk
// micro-batches), and the slots in all.
struct GreedyRuns {
  int slots = 0;
  std::vector<std::vector<std::uint64_t>> runs;
};

std::uint64_t pack_run(int slot, Work work, int local_chunk, int micro_batch) {
  return (static_cast<std::uint64_t>(slot) << 32) | (static_cast<std::uint64_t>(work) << 30) |
         (static_cast<std::uint64_t>(local_chunk) << 28) | static_cast<std::uint64_t>(micro_batch);
}

GreedyRuns place_greedy(int S, int M, int V, ChunkPlacement placement, int cap) {
  const int C = S * V;
  std::vector<int> chunks_of(static_cast<std::size_t>(S) * V);  // stage s's chunks at [s V, s V + V)
  for (int s = 0; s < S; ++s) {
    const std::vector<int> mine = stage_chunks(placement, s, S, V);
    std::copy(mine.begin(), mine.end(), chunks_of.begin() + static_cast<std::ptrdiff_t>(s) * V);
  }
  if (V > 4) throw Error("the greedy schedule takes at most 4 chunks per stage, got " + std::to_string(V));
  constexpr int kNever = std::numeric_limits<int>::max();
  // Slot after which F / B of (chunk, micro-batch) is done, micro-batch major: the stages look up neighbouring
  // chunks of nearby micro-batches, which then share cache lines.
  std::vector<int> f_done(static_cast<std::size_t>(C) * M, kNever), b_done(f_done);
  auto at = [&](int c, int m) { return static_cast<std::size_t>(m) * C + c; };
  std::vector<int> next_f(C, 0), next_b(C, 0), next_w(C, 0), live(S, 0);
  // What each stage runs, in slot order (made dense at the end).
  std::vector<std::vector<std::uint64_t>> runs(S);
  for (auto& r : runs) r.reserve(3 * static_cast<std::size_t>(V) * M);
  long long remaining = 3LL * C * M;
  int t = 0;
  for (; remaining > 0; ++t) {
    bool ran = false;
    for (int s = 0; s < S; ++s) {
      const int* mine = &chunks_of[static_cast<std::size_t>(s) * V];
      Compute pick{Work::forward, -1, -1};
      int best = kNever, local = 0;
      for (int v = 0; v < V; ++v) {  // B: oldest micro-batch, then the later chunk
        const int c = mine[v], m = next_b[c];
        if (m < M && m <= best && f_done[at(c, m)] <= t && (c == C - 1 || b_done[at(c + 1, m)] <= t)) {
          best = m;
          pick = Compute{Work::backward_input, m, c};
          local = v;
        }
      }
      if (pick.chunk < 0 && live[s] < cap)
        for (int v = 0; v < V; ++v) {  // F: the later chunk
          const int c = mine[v], m = next_f[c];
          if (m < M && (c == 0 || f_done[at(c - 1, m)] <= t)) {
            pick = Compute{Work::forward, m, c};
            local = v;
          }
        }
      if (pick.chunk < 0) {
        best = kNever;
        for (int v = 0; v < V; ++v) {  // W: the oldest
          const int c = mine[v], m = next_w[c];
          if (m < next_b[c] && m < best && b_done[at(c, m)] <= t) {
            best = m;
            pick = Compute{Work::backward_weight, m, c};
            local = v;
          }
        }
      }
      if (pick.chunk < 0) continue;
      runs[s].push_back(pack_run(t, pick.work, local, pick.micro_batch));
      ran = true;
      --remaining;
      const int c = pick.chunk, m = pick.micro_batch;
      switch (pick.work) {
        case Work::forward: f_done[at(c, m)] = t + 1; ++next_f[c]; ++live[s]; break;
        case Work::backward_input: b_done[at(c, m)] = t + 1; ++next_b[c]; break;
        default: ++next_w[c]; --live[s]; break;
      }
    }
    if (!ran)  // nothing ran and nothing is running: nothing ever will
      throw Error("the greedy schedule of " + plural(S, "stage") + " x " + plural(V, "chunk") + " and " +
                  plural(M, "micro-batch") + " stalls at slot " + std::to_string(t) + " with at most " +
                  std::to_string(cap) + " activations per stage");
  }
  return GreedyRuns{t, std::move(runs)};
}

Placement place_zb_v(int S, int M, int V, int s) {
  // Every stage's placement comes from one run for all stages: keep the last
  // run, so that making the S schedules one by one (pipe-sim at 1,024 stages)
  // runs it once.
  static std::mutex mutex;
  static std::tuple<int, int, int> key{0, 0, 0};
  static GreedyRuns cached;
  std::lock_guard<std::mutex> lock(mutex);
  if (key != std::make_tuple(S, M, V)) {
    cached = place_greedy(S, M, V, ChunkPlacement::v_shape, 2 * S);
    key = {S, M, V};
  }
  const std::vector<int> mine = stage_chunks(ChunkPlacement::v_shape, s, S, V);
  Placement p(static_cast<std::size_t>(cached.slots) + 1);  // and room for the last send
  for (const std::uint64_t run : cached.runs[s])
    p[run >> 32] = Compute{static_cast<Work>((run >> 30) & 3), static_cast<int>(run & ((1u << 28) - 1)),
                           mine[(run >> 28) & 3]};
  return p;
}

// The schedules this file generates: how to place their compute, their
// buffers, their chunks and their closed-form bubble. Adding a schedule is an
// entry here and its placement function.
struct KindInfo {
  const char* name;
  bool training;
  ChunkPlacement placement;
  int default_virtual_stages;
  bool any_virtual_stages;  // V may be chosen (else it is the default)
  const char* needs;        // for --help and errors; "" when anything goes
  Placement (*place)(int S, int M, int V, int s);
  // Buffers of stage s; 0: as many as the schedule keeps live at once (counted after placement).
  int (*buffers)(int S, int M, int s);
  double (*bubble)(int S, int M, int V);  // nullptr: no closed form
  const char* formula;
};

const KindInfo kKindTable[] = {
    {"inference", false, ChunkPlacement::looped, 1, false, "", place_inference,
     [](int, int, int) { return 2; },  // one receiving, one sending
     [](int S, int M, int) { return (S - 1.0) / (M + S - 1.0); }, "(S-1)/(M+S-1)"},
    {"gpipe", true, ChunkPlacement::looped, 1, false, "", place_gpipe, [](int, int M, int) { return M; },
     [](int S, int M, int) { return (S - 1.0) / (M + S - 1.0); }, "(S-1)/(M+S-1)"},
    {"1f1b", true, ChunkPlacement::looped, 1, false, "", place_1f1b,
     [](int S, int M, int s) { return std::max(2, std::min(S - s, M)); },  // DeepSpeed's num_pipe_buffers
     [](int S, int M, int) { return (S - 1.0) / (M + S - 1.0); }, "(S-1)/(M+S-1)"},
    {"zb-h1", true, ChunkPlacement::looped, 1, false, "M >= S", place_zb_h1,
     [](int S, int, int) { return std::max(2, S); },  // F to W of S micro-batches on every stage
     [](int S, int M, int) { return (S - 1.0) / (3.0 * M + S - 1.0); }, "(S-1)/(3M+S-1) with F = B = W"},
    {"interleaved-1f1b", true, ChunkPlacement::looped, 2, true, "M a multiple of S", place_interleaved,
     [](int, int, int) { return 0; }, [](int S, int M, int V) { return (S - 1.0) / (V * M + S - 1.0); },
     "(S-1)/(VM+S-1)"},
    {"zb-v", true, ChunkPlacement::v_shape, 2, false, "M >= S", place_zb_v, [](int, int, int) { return 0; },
     nullptr, ""},
};

const KindInfo* find_kind(const std::string& kind) {
  for (const KindInfo& k : kKindTable)
    if (kind == k.name) return &k;
  return nullptr;
}

std::vector<std::string> kind_names() {
  std::vector<std::string> names;
  for (const KindInfo& k : kKindTable) names.push_back(k.name);
  return names;
}

void require_kind(const std::string& kind) {
  if (kind == kCustom || find_kind(kind)) return;
  const std::vector<std::string> names = kind_names();
  std::string known;
  for (const auto& k : names) known += (known.empty() ? "" : ", ") + k;
  throw Error("unknown pipeline schedule '" + kind + "'" + did_you_mean(kind, names) + "; known schedules: " + known);
}

void require_shape(int stages, int micro_batches) {
  if (stages < 1) throw Error("a pipeline schedule needs at least 1 stage, got " + std::to_string(stages));
  if (micro_batches < 1)
    throw Error("a pipeline schedule needs at least 1 micro-batch, got " + std::to_string(micro_batches));
}

// "1f1b schedule (4 stages, 8 micro-batches)": the start of every checker message.
std::string describe(const Schedule& s) {
  return s.kind + " schedule (" + plural(s.stages, "stage") + ", " +
         (s.virtual_stages > 1 ? plural(s.virtual_stages, "chunk") + " per stage " + placement_name(s.placement) + ", "
                               : "") +
         plural(s.micro_batches, "micro-batch") + ")";
}

// The one layout rule of every step (see schedule.hpp): sends of the previous
// step's result, load, receives, compute, and the step-wide reductions last.
// Appends the instructions to `code` in order and, with `step_ends`, where
// each step ends. Buffers are mb mod num_buffers, or -1 (assign_buffers).
void lower(const Placement& p, const Schedule& sch, bool buffers_by_micro_batch, std::vector<Instruction>& code,
           std::vector<std::size_t>* step_ends) {
  const int C = sch.chunks();
  // Instructions name the stage's own chunk index (0..V-1), placements the global chunk.
  auto op = [&](WorkKind k, int mb, int chunk) {
    code.push_back(Instruction{k, mb, buffers_by_micro_batch ? mb % sch.num_buffers : -1,
                               chunk_index_on_stage(chunk, sch.stages)});
  };
  const int T = static_cast<int>(p.size());
  for (int t = 0; t < T; ++t) {
    if (t > 0 && p[t - 1]) {
      const Compute& prev = *p[t - 1];
      const bool backward = prev.work == Work::backward || prev.work == Work::backward_input;
      if (prev.work == Work::forward && prev.chunk != C - 1) op(WorkKind::SendActivation, prev.micro_batch, prev.chunk);
      if (backward && prev.chunk != 0) op(WorkKind::SendGrad, prev.micro_batch, prev.chunk);
    }
    if (p[t]) {
      const int mb = p[t]->micro_batch, c = p[t]->chunk;
      const Work work = p[t]->work;
      if (work == Work::forward) {
        if (c == 0 || c == C - 1) op(WorkKind::LoadMicroBatch, mb, c);
        if (c != 0) op(WorkKind::RecvActivation, mb, c);
        op(WorkKind::Forward, mb, c);
      }
      if (work == Work::backward || work == Work::backward_input) {
        if (c != C - 1) op(WorkKind::RecvGrad, mb, c);
        op(WorkKind::BackwardInput, mb, c);
      }
      if (work == Work::backward || work == Work::backward_weight) op(WorkKind::BackwardWeight, mb, c);
    }
    if (t + 1 == T && is_training_schedule(sch.kind))
      for (WorkKind k : {WorkKind::ReduceTiedGrads, WorkKind::ReduceGrads, WorkKind::OptimizerStep})
        code.push_back(Instruction{k});
    if (step_ends) step_ends->push_back(code.size());
  }
}

// The steps of a lowered placement.
std::vector<Step> assemble(const Placement& p, const Schedule& sch, bool buffers_by_micro_batch) {
  std::vector<Instruction> code;
  std::vector<std::size_t> ends;
  code.reserve(3 * p.size());
  ends.reserve(p.size());
  lower(p, sch, buffers_by_micro_batch, code, &ends);
  std::vector<Step> steps(ends.size());
  std::size_t begin = 0;
  for (std::size_t t = 0; t < ends.size(); ++t) {
    steps[t].assign(code.begin() + static_cast<std::ptrdiff_t>(begin), code.begin() + static_cast<std::ptrdiff_t>(ends[t]));
    begin = ends[t];
  }
  return steps;
}

// ---------------------------------------------------------------------------
// The checker.

// Where an instruction sits in a stage's program.
struct Pos {
  int step;
  int index;
};

// Every instruction of one stage, flattened, with its position.
struct Program {
  std::vector<Instruction> code;
  std::vector<Pos> pos;
};

Program flatten(const Schedule& s) {
  Program p;
  for (int t = 0; t < static_cast<int>(s.steps.size()); ++t)
    for (int i = 0; i < static_cast<int>(s.steps[t].size()); ++i) {
      p.code.push_back(s.steps[t][i]);
      p.pos.push_back({t, i});
    }
  return p;
}

constexpr int kNumKinds = kNumWorkKinds;

// The per-micro-batch instructions a chunk must run, in pipeline order: the
// micro-batch's buffer is live until all of them have run.
std::vector<WorkKind> required_ops(const Schedule& s, int chunk) {
  const bool first = chunk == 0, last = chunk == s.chunks() - 1;
  std::vector<WorkKind> r;
  if (first || last) r.push_back(WorkKind::LoadMicroBatch);
  if (!first) r.push_back(WorkKind::RecvActivation);
  r.push_back(WorkKind::Forward);
  if (!last) r.push_back(WorkKind::SendActivation);
  if (is_training_schedule(s.kind)) {
    if (!last) r.push_back(WorkKind::RecvGrad);
    r.push_back(WorkKind::BackwardInput);
    r.push_back(WorkKind::BackwardWeight);
    if (!first) r.push_back(WorkKind::SendGrad);
  }
  return r;
}

class Checker {
 public:
  explicit Checker(const std::vector<Schedule>& per_stage) : sch_(per_stage) {}

  void run() {
    check_headers();
    S_ = sch_[0].stages;
    M_ = sch_[0].micro_batches;
    V_ = sch_[0].virtual_stages;
    C_ = S_ * V_;
    training_ = is_training_schedule(sch_[0].kind);
    slot_of_chunk_.assign(C_, -1);
    for (int s = 0; s < S_; ++s) {
      const std::vector<int> chunks = stage_chunks(sch_[0].placement, s, S_, V_);
      for (int v = 0; v < V_; ++v) slot_of_chunk_[chunks[v]] = v;
    }
    for (const auto& s : sch_) prog_.push_back(flatten(s));
    for (int s = 0; s < S_; ++s) check_instructions(s);
    // From here on the programs name global chunks (messages print the stage's own index again).
    for (int s = 0; s < S_; ++s) {
      const std::vector<int> chunks = stage_chunks(sch_[0].placement, s, S_, V_);
      for (Instruction& in : prog_[s].code)
        if (!is_step_wide(in.kind)) in.chunk = chunks[in.chunk];
    }
    match_channels();
    simulate();
    check_complete();
  }

 private:
  // Channels: activations go chunk c -> c+1 (SA on c, RA on c+1), gradients
  // go c+1 -> c (SG on c+1, RG on c). Channel 2c is chunk c's activations to
  // c+1, channel 2c+1 the gradients from c+1 to c. `from` and `to` are stages.
  struct Channel {
    int from, to;
    WorkKind send, recv;
    int send_chunk, recv_chunk;
    std::vector<Pos> sends, recvs;  // in program order
    std::vector<int> send_mb, recv_mb;
    std::deque<int> in_flight;  // ordinals of sends issued but not yet received
    int received = 0;
  };

  int stage_of(int chunk) const { return chunk_stage(sch_[0].placement, chunk, S_); }
  // "stage 2" without chunks, "stage 2 (chunk 5)" with (the global chunk).
  std::string where(int chunk) const {
    return "stage " + std::to_string(stage_of(chunk)) + (V_ > 1 ? " (chunk " + std::to_string(chunk) + ")" : "");
  }
  // An instruction on a global chunk as its stage writes it ("F3c1": the stage's chunk 1).
  std::string text(WorkKind kind, int mb, int chunk) const {
    return to_text(Instruction{kind, mb, -1, slot_of_chunk_[chunk]});
  }
  // A (chunk, micro-batch) of stage s: its index in the stage's per-micro-batch state.
  int slot(int chunk, int mb) const { return slot_of_chunk_[chunk] * M_ + mb; }

  // The instruction as the stage's schedule writes it (its own chunk index).
  const Instruction& at_pos(int s, Pos p) const { return sch_[s].steps[p.step][p.index]; }

  [[noreturn]] void fail_at(int s, Pos p, const std::string& what) const {
    throw Error(describe(sch_[0]) + ": stage " + std::to_string(s) + ", step " + std::to_string(p.step) + ": " +
                to_text(sch_[s].steps[p.step][p.index]) + " " + what);
  }

  void check_headers() const {
    if (sch_.empty()) throw Error("check_schedules: no schedules given");
    const Schedule& s0 = sch_[0];
    require_kind(s0.kind);
    require_shape(s0.stages, s0.micro_batches);
    if (s0.virtual_stages < 1)
      throw Error(describe(s0) + ": needs at least 1 chunk per stage, got " + std::to_string(s0.virtual_stages));
    if (static_cast<int>(sch_.size()) != s0.stages)
      throw Error(describe(s0) + ": got schedules for " + plural(static_cast<int>(sch_.size()), "stage"));
    for (int i = 0; i < static_cast<int>(sch_.size()); ++i) {
      const Schedule& s = sch_[i];
      if (s.stage != i)
        throw Error(describe(s0) + ": the schedule at position " + std::to_string(i) + " is for stage " +
                    std::to_string(s.stage));
      if (s.kind != s0.kind || s.stages != s0.stages || s.micro_batches != s0.micro_batches ||
          s.virtual_stages != s0.virtual_stages || s.placement != s0.placement)
        throw Error(describe(s0) + ": stage " + std::to_string(i) + " has a " + describe(s) + " instead");
    }
  }

  void check_instructions(int s) const {
    const Schedule& sch = sch_[s];
    const Program& p = prog_[s];
    for (size_t k = 0; k < p.code.size(); ++k) {
      const Instruction& in = p.code[k];
      const int mb = in.micro_batch, b = in.buffer, c = in.chunk;
      if (!is_schedule_instruction(in.kind))
        fail_at(s, p.pos[k], "is not a schedule instruction (work the engine traces, no schedule runs it)");
      if (is_step_wide(in.kind)) {
        if (mb != -1 || b != -1 || c != 0)
          fail_at(s, p.pos[k],
                  "carries micro-batch " + std::to_string(mb) + " and buffer " + std::to_string(b) +
                      "; a step-wide instruction carries neither (-1)");
      } else {
        if (mb < 0 || mb >= M_)
          fail_at(s, p.pos[k], "names micro-batch " + std::to_string(mb) + ", outside 0.." + std::to_string(M_ - 1));
        if (c < 0 || c >= V_)
          fail_at(s, p.pos[k],
                  "names chunk " + std::to_string(c) + ", outside the stage's " + plural(V_, "chunk") + " (0.." +
                      std::to_string(V_ - 1) + ")");
        if (b < 0 || b >= sch.num_buffers)
          fail_at(s, p.pos[k],
                  "uses buffer " + std::to_string(b) + ", outside the stage's " + plural(sch.num_buffers, "buffer") +
                      (sch.num_buffers > 0 ? " (0.." + std::to_string(sch.num_buffers - 1) + ")" : ""));
      }
      const bool backward_kind = in.kind == WorkKind::BackwardInput || in.kind == WorkKind::BackwardWeight ||
                                 in.kind == WorkKind::SendGrad || in.kind == WorkKind::RecvGrad || is_step_wide(in.kind);
      if (!training_ && backward_kind) fail_at(s, p.pos[k], "has no place in a forward-only schedule");
      const int global = c >= 0 && c < V_ ? stage_chunks(sch_[0].placement, s, S_, V_)[c] : 0;
      const bool first = global == 0, last = global == C_ - 1;
      const std::string stage = V_ > 1 ? "chunk" : "stage";
      switch (in.kind) {
        case WorkKind::SendActivation:
          if (last) fail_at(s, p.pos[k], "sends to the next " + stage + ", but this is the last " + stage);
          break;
        case WorkKind::RecvGrad:
          if (last) fail_at(s, p.pos[k], "receives from the next " + stage + ", but this is the last " + stage);
          break;
        case WorkKind::RecvActivation:
          if (first) fail_at(s, p.pos[k], "receives from the previous " + stage + ", but this is the first " + stage);
          break;
        case WorkKind::SendGrad:
          if (first) fail_at(s, p.pos[k], "sends to the previous " + stage + ", but this is the first " + stage);
          break;
        case WorkKind::LoadMicroBatch:
          if (!first && !last)
            fail_at(s, p.pos[k],
                    "loads data on a middle " + stage + "; only the first and last " + stage + "s load");
          break;
        default:
          break;
      }
    }
  }

  // The channel an instruction sends on or receives from; -1 for the others.
  int channel_of(const Instruction& in) const {
    switch (in.kind) {
      case WorkKind::SendActivation:
        return 2 * in.chunk;
      case WorkKind::RecvActivation:
        return 2 * (in.chunk - 1);
      case WorkKind::SendGrad:
        return 2 * (in.chunk - 1) + 1;
      case WorkKind::RecvGrad:
        return 2 * in.chunk + 1;
      default:
        return -1;
    }
  }

  // Pairs the k-th send of each channel with its k-th receive, which is what
  // MPI does for one source and tag; they must name the same micro-batch.
  void match_channels() {
    for (int c = 0; c + 1 < C_; ++c) {
      chan_.push_back({stage_of(c), stage_of(c + 1), WorkKind::SendActivation, WorkKind::RecvActivation, c, c + 1,
                       {}, {}, {}, {}, {}, 0});
      chan_.push_back({stage_of(c + 1), stage_of(c), WorkKind::SendGrad, WorkKind::RecvGrad, c + 1, c,
                       {}, {}, {}, {}, {}, 0});
    }
    for (int s = 0; s < S_; ++s)
      for (size_t k = 0; k < prog_[s].code.size(); ++k) {
        const Instruction& in = prog_[s].code[k];
        const int ch = channel_of(in);
        if (ch < 0) continue;
        Channel& c = chan_[ch];
        if (in.kind == c.send) {
          c.sends.push_back(prog_[s].pos[k]);
          c.send_mb.push_back(in.micro_batch);
        } else {
          c.recvs.push_back(prog_[s].pos[k]);
          c.recv_mb.push_back(in.micro_batch);
        }
      }
    // Unpaired messages first: they say more than an order mismatch would.
    for (Channel& c : chan_) {
      unpaired(c.send_mb, c.recv_mb, [&](size_t i) {
        fail_at(c.from, c.sends[i],
                "has no matching " + text(c.recv, c.send_mb[i], c.recv_chunk) + " on " +
                    where(c.recv_chunk));
      });
      unpaired(c.recv_mb, c.send_mb, [&](size_t i) {
        fail_at(c.to, c.recvs[i],
                "has no matching " + text(c.send, c.recv_mb[i], c.send_chunk) + " on " +
                    where(c.send_chunk));
      });
    }
    for (Channel& c : chan_)
      for (size_t i = 0; i < c.recvs.size(); ++i)
        if (c.recv_mb[i] != c.send_mb[i])
          fail_at(c.to, c.recvs[i],
                  "would receive micro-batch " + std::to_string(c.send_mb[i]) + " (" +
                      text(c.send, c.send_mb[i], c.send_chunk) + " of " + where(c.send_chunk) +
                      ", step " + std::to_string(c.sends[i].step) + "): messages from " + where(c.send_chunk) +
                      " to " + where(c.recv_chunk) + " are received in the order they are sent");
  }

  // Calls fail(i) for the first entry of `a` whose micro-batch occurs more
  // often in `a` (up to that entry) than in `b`.
  template <class F>
  void unpaired(const std::vector<int>& a, const std::vector<int>& b, F fail) const {
    std::vector<int> in_b(M_, 0), seen(M_, 0);
    for (int mb : b) ++in_b[mb];
    for (size_t i = 0; i < a.size(); ++i)
      if (++seen[a[i]] > in_b[a[i]]) fail(i);
  }

  // Per stage, what has run so far; a (chunk, micro-batch) is a slot (slot()).
  struct State {
    size_t pc = 0;
    std::vector<std::vector<int>> done_step;  // [slot][WorkKind] -> step it ran in, or -1
    std::vector<int> buffer_of;               // slot -> buffer, -1 before its first instruction
    std::vector<int> holder;                  // buffer -> live slot, or -1
    std::vector<int> remaining;               // slot -> required instructions still to run
    std::vector<std::vector<bool>> required;  // [local chunk][WorkKind] -> whether each micro-batch needs one
    int weights_done = 0;
    int wide_step[kNumKinds];  // step of RT, RD, OPT, or -1
  };

  bool runnable(int s) const {
    const State& st = state_[s];
    if (st.pc >= prog_[s].code.size()) return false;
    const Instruction& in = prog_[s].code[st.pc];
    if (in.kind == WorkKind::RecvActivation || in.kind == WorkKind::RecvGrad)
      return !chan_[channel_of(in)].in_flight.empty();
    return true;  // sends never block
  }

  void simulate() {
    state_.resize(S_);
    for (int s = 0; s < S_; ++s) {
      State& st = state_[s];
      st.done_step.assign(static_cast<size_t>(V_) * M_, std::vector<int>(kNumKinds, -1));
      st.buffer_of.assign(static_cast<size_t>(V_) * M_, -1);
      st.holder.assign(std::max(sch_[s].num_buffers, 0), -1);
      st.remaining.assign(static_cast<size_t>(V_) * M_, 0);
      st.required.assign(V_, std::vector<bool>(kNumKinds, false));
      for (int c : stage_chunks(sch_[0].placement, s, S_, V_)) {
        const auto req = required_ops(sch_[s], c);
        for (int m = 0; m < M_; ++m) st.remaining[slot(c, m)] = static_cast<int>(req.size());
        for (WorkKind r : req) st.required[slot_of_chunk_[c]][static_cast<int>(r)] = true;
      }
      std::fill(std::begin(st.wide_step), std::end(st.wide_step), -1);
    }
    // Always advance the stage that is furthest behind (lowest step, then
    // lowest stage), so that the first error reported is the earliest one.
    for (;;) {
      int pick = -1;
      for (int s = 0; s < S_; ++s)
        if (runnable(s) && (pick < 0 || prog_[s].pos[state_[s].pc].step < prog_[pick].pos[state_[pick].pc].step))
          pick = s;
      if (pick < 0) break;
      execute(pick);
    }
    std::string blocked;
    for (int s = 0; s < S_; ++s) {
      const State& st = state_[s];
      if (st.pc >= prog_[s].code.size()) continue;
      const Instruction& in = prog_[s].code[st.pc];
      const Channel& c = chan_[channel_of(in)];
      const Pos at = prog_[s].pos[st.pc];
      blocked += std::string(blocked.empty() ? "" : "; ") + "stage " + std::to_string(s) + ", step " +
                 std::to_string(at.step) + ": " + to_text(sch_[s].steps[at.step][at.index]) + " waits for " +
                 text(c.send, in.micro_batch, c.send_chunk) + " of stage " +
                 std::to_string(c.from) + " (step " + std::to_string(c.sends[c.received].step) + ")";
    }
    if (!blocked.empty()) throw Error(describe(sch_[0]) + ": deadlock: " + blocked);
  }

  std::string pending(int s, int slot_index) const {
    const int c = chunk_of_slot(s, slot_index), mb = slot_index % M_;
    std::string r;
    for (WorkKind k : required_ops(sch_[s], c))
      if (state_[s].done_step[slot_index][static_cast<int>(k)] < 0)
        r += (r.empty() ? "" : " ") + text(k, mb, c);
    return r;
  }

  int chunk_of_slot(int s, int slot_index) const {
    return stage_chunks(sch_[0].placement, s, S_, V_)[slot_index / M_];
  }

  std::string slot_text(int s, int slot_index) const {
    const int c = chunk_of_slot(s, slot_index);
    return "micro-batch " + std::to_string(slot_index % M_) + (V_ > 1 ? " of chunk " + std::to_string(c) : "");
  }

  void execute(int s) {
    State& st = state_[s];
    const Instruction in = prog_[s].code[st.pc];
    const Pos at = prog_[s].pos[st.pc];
    const int mb = in.micro_batch, chunk = in.chunk;
    const bool first = chunk == 0, last = chunk == C_ - 1;
    const int k = static_cast<int>(in.kind);
    auto fail = [&](const std::string& what) { fail_at(s, at, what); };

    if (is_step_wide(in.kind)) {
      if (st.wide_step[k] >= 0) fail("runs twice (first at step " + std::to_string(st.wide_step[k]) + ")");
      if (in.kind != WorkKind::OptimizerStep && st.weights_done < V_ * M_) {
        for (int c : stage_chunks(sch_[0].placement, s, S_, V_))
          for (int m = 0; m < M_; ++m)
            if (st.done_step[slot(c, m)][static_cast<int>(WorkKind::BackwardWeight)] < 0)
              fail("runs before " + text(WorkKind::BackwardWeight, m, c));
      }
      if (in.kind == WorkKind::OptimizerStep) {
        for (WorkKind r : {WorkKind::ReduceTiedGrads, WorkKind::ReduceGrads})
          if (st.wide_step[static_cast<int>(r)] < 0) fail("runs before " + to_text(r));
        if (st.pc + 1 < prog_[s].code.size())
          fail("is not the last instruction: " + to_text(at_pos(s, prog_[s].pos[st.pc + 1])) + " follows at step " +
               std::to_string(prog_[s].pos[st.pc + 1].step));
      }
      st.wide_step[k] = at.step;
      ++st.pc;
      return;
    }

    const int me = slot(chunk, mb);
    auto done = [&](WorkKind op) { return st.done_step[me][static_cast<int>(op)] >= 0; };
    auto op_text = [&](WorkKind op) { return text(op, mb, chunk); };
    if (done(in.kind)) fail("runs twice (first at step " + std::to_string(st.done_step[me][k]) + ")");
    switch (in.kind) {
      case WorkKind::Forward:
        if (first && !done(WorkKind::LoadMicroBatch))
          fail("runs before its input is loaded (no " + op_text(WorkKind::LoadMicroBatch) + " before it)");
        if (!first && !done(WorkKind::RecvActivation))
          fail("runs before its input is received (no " + op_text(WorkKind::RecvActivation) + " before it)");
        if (last && !done(WorkKind::LoadMicroBatch))
          fail("runs before its labels are loaded (no " + op_text(WorkKind::LoadMicroBatch) + " before it)");
        break;
      case WorkKind::BackwardInput:
        if (!done(WorkKind::Forward)) fail("runs before " + op_text(WorkKind::Forward));
        if (!last && !done(WorkKind::RecvGrad))
          fail("runs before its output gradient is received (no " + op_text(WorkKind::RecvGrad) + " before it)");
        break;
      case WorkKind::BackwardWeight:
        if (!done(WorkKind::BackwardInput)) fail("runs before " + op_text(WorkKind::BackwardInput));
        // Weight gradients accumulate in micro-batch order, as one process adds them.
        if (mb > 0 && st.done_step[me - 1][k] < 0)
          fail("runs before " + text(in.kind, mb - 1, chunk) +
               " (weight gradients are added in micro-batch order)");
        break;
      case WorkKind::SendActivation:
        if (!done(WorkKind::Forward)) fail("runs before " + op_text(WorkKind::Forward));
        break;
      case WorkKind::SendGrad:
        if (!done(WorkKind::BackwardInput)) fail("runs before " + op_text(WorkKind::BackwardInput));
        break;
      default:
        break;
    }

    // The micro-batch takes its buffer at its first instruction and keeps it
    // until the stage has run every instruction it owes it.
    const int b = in.buffer;
    if (st.buffer_of[me] < 0) {
      if (st.holder[b] >= 0)
        fail("reuses buffer " + std::to_string(b) + " while " + slot_text(s, st.holder[b]) +
             " still lives in it (still to run: " + pending(s, st.holder[b]) + ")");
      st.buffer_of[me] = b;
      st.holder[b] = me;
    } else if (st.buffer_of[me] != b) {
      fail("uses buffer " + std::to_string(b) + " but " + slot_text(s, me) + " lives in buffer " +
           std::to_string(st.buffer_of[me]));
    }

    const int c = channel_of(in);
    if (in.kind == WorkKind::SendActivation || in.kind == WorkKind::SendGrad) {
      chan_[c].in_flight.push_back(mb);
    } else if (in.kind == WorkKind::RecvActivation || in.kind == WorkKind::RecvGrad) {
      chan_[c].in_flight.pop_front();  // matched in order by match_channels()
      ++chan_[c].received;
    }

    st.done_step[me][k] = at.step;
    if (in.kind == WorkKind::BackwardWeight) ++st.weights_done;
    if (st.required[slot_of_chunk_[chunk]][k] && --st.remaining[me] == 0) st.holder[b] = -1;
    ++st.pc;
  }

  void check_complete() const {
    for (int s = 0; s < S_; ++s) {
      for (int c : stage_chunks(sch_[0].placement, s, S_, V_)) {
        const auto req = required_ops(sch_[s], c);
        for (int m = 0; m < M_; ++m)
          for (WorkKind k : req)
            if (state_[s].done_step[slot(c, m)][static_cast<int>(k)] < 0)
              throw Error(describe(sch_[0]) + ": stage " + std::to_string(s) + ": " + text(k, m, c) +
                          " never runs");
      }
      if (training_)
        for (WorkKind k : {WorkKind::ReduceTiedGrads, WorkKind::ReduceGrads, WorkKind::OptimizerStep})
          if (state_[s].wide_step[static_cast<int>(k)] < 0)
            throw Error(describe(sch_[0]) + ": stage " + std::to_string(s) + ": " + to_text(k) +
                        " never runs (a training schedule ends with RT, RD, OPT)");
    }
  }

  const std::vector<Schedule>& sch_;
  int S_ = 0, M_ = 0, V_ = 1, C_ = 0;
  bool training_ = false;
  std::vector<int> slot_of_chunk_;  // chunk -> its index among its stage's chunks
  std::vector<Program> prog_;
  std::vector<Channel> chan_;
  std::vector<State> state_;
};

}  // namespace

bool operator==(const Instruction& a, const Instruction& b) {
  return a.kind == b.kind && a.micro_batch == b.micro_batch && a.buffer == b.buffer && a.chunk == b.chunk;
}

const char* placement_name(ChunkPlacement placement) {
  return placement == ChunkPlacement::v_shape ? "v-shape" : "looped";
}

int chunk_stage(ChunkPlacement placement, int chunk, int stages) {
  const int leg = chunk / stages, position = chunk % stages;
  if (placement == ChunkPlacement::v_shape && leg % 2 == 1) return stages - 1 - position;
  return position;
}

std::vector<int> stage_chunks(ChunkPlacement placement, int stage, int stages, int virtual_stages) {
  std::vector<int> chunks;
  for (int leg = 0; leg < virtual_stages; ++leg) {
    const bool up = placement == ChunkPlacement::v_shape && leg % 2 == 1;
    chunks.push_back(leg * stages + (up ? stages - 1 - stage : stage));
  }
  return chunks;
}

void assign_buffers(Schedule& schedule) {
  // A (chunk, micro-batch) of this stage as an index (a chunk out of range, which the checker refuses, gets one
  // past the end).
  const int M = schedule.micro_batches, V = schedule.virtual_stages;
  auto key = [&](const Instruction& in) -> std::size_t {
    const int v = in.chunk >= 0 && in.chunk < V ? in.chunk : V;
    const int mb = in.micro_batch >= 0 && in.micro_batch < M ? in.micro_batch : 0;
    return static_cast<std::size_t>(v) * M + mb;
  };
  const std::size_t keys = static_cast<std::size_t>(V + 1) * M;
  // Flat position of the last instruction of each key.
  std::vector<std::size_t> last(keys, 0);
  std::size_t position = 0;
  for (const Step& step : schedule.steps)
    for (const Instruction& in : step) {
      if (!is_step_wide(in.kind)) last[key(in)] = position;
      ++position;
    }
  std::vector<int> buffer_of(keys, -1);
  std::priority_queue<int, std::vector<int>, std::greater<int>> free;  // the lowest free buffer first
  int used = 0;
  position = 0;
  for (Step& step : schedule.steps)
    for (Instruction& in : step) {
      if (!is_step_wide(in.kind)) {
        const std::size_t k = key(in);
        if (buffer_of[k] < 0) {
          if (free.empty()) free.push(used++);
          buffer_of[k] = free.top();
          free.pop();
        }
        in.buffer = buffer_of[k];
        if (last[k] == position) free.push(in.buffer);
      }
      ++position;
    }
  schedule.num_buffers = std::max(1, used);
}

std::vector<std::string> schedule_kinds() { return kind_names(); }

bool is_training_schedule(const std::string& kind) {
  require_kind(kind);
  return kind == kCustom || find_kind(kind)->training;
}

int schedule_virtual_stages(const std::string& kind, int requested) {
  require_kind(kind);
  if (requested < 0) throw Error("virtual stages must be at least 1, got " + std::to_string(requested));
  if (kind == kCustom) return requested == 0 ? 1 : requested;
  const KindInfo& k = *find_kind(kind);
  if (requested == 0) return k.default_virtual_stages;
  if (k.any_virtual_stages || requested == k.default_virtual_stages) return requested;
  throw Error("the " + kind + " schedule runs " + plural(k.default_virtual_stages, "chunk") + " per stage, not " +
              std::to_string(requested) +
              (k.default_virtual_stages == 1 ? "; virtual stages need interleaved-1f1b or zb-v" : ""));
}

ChunkPlacement schedule_placement(const std::string& kind) {
  require_kind(kind);
  return kind == kCustom ? ChunkPlacement::looped : find_kind(kind)->placement;
}

std::string describe_schedule_kinds() {
  std::string out;
  for (const KindInfo& k : kKindTable) {
    out += std::string("  ") + k.name;
    std::string notes;
    if (!k.training) notes += "forward only";
    if (k.any_virtual_stages) notes += std::string(notes.empty() ? "" : "; ") + "any --virtual-stages (default " +
                                       std::to_string(k.default_virtual_stages) + ")";
    else if (k.default_virtual_stages > 1)
      notes += std::string(notes.empty() ? "" : "; ") + std::to_string(k.default_virtual_stages) + " chunks per stage";
    if (k.default_virtual_stages > 1) notes += std::string(", ") + placement_name(k.placement);
    if (*k.needs) notes += std::string(notes.empty() ? "" : "; ") + "needs " + k.needs;
    if (!notes.empty()) out += " (" + notes + ")";
    out += "\n";
  }
  return out;
}

namespace {

// A generated kind's schedule of `stage` without its steps, and its placement (checks every argument).
std::pair<Schedule, Placement> plan_schedule(const std::string& kind, int stages, int micro_batches, int stage,
                                             int virtual_stages) {
  require_kind(kind);
  if (kind == kCustom) throw Error("a custom schedule is read from its text (--schedule-file), not generated");
  require_shape(stages, micro_batches);
  if (stage < 0 || stage >= stages)
    throw Error("stage " + std::to_string(stage) + " is outside the pipeline's " + plural(stages, "stage") + " (0.." +
                std::to_string(stages - 1) + ")");
  const KindInfo& info = *find_kind(kind);
  Schedule s;
  s.kind = kind;
  s.stages = stages;
  s.micro_batches = micro_batches;
  s.stage = stage;
  s.virtual_stages = schedule_virtual_stages(kind, virtual_stages);
  s.placement = info.placement;
  const std::string shape = plural(micro_batches, "micro-batch") + " for " + plural(stages, "stage");
  if (std::string(info.needs) == "M >= S" && micro_batches < stages)
    throw Error("the " + kind + " schedule needs at least as many micro-batches as stages (M >= S), got " + shape);
  if (std::string(info.needs) == "M a multiple of S" && micro_batches % stages != 0)
    throw Error("the " + kind + " schedule needs the micro-batches to be a multiple of the stages, got " + shape);
  if (static_cast<long long>(stages) * s.virtual_stages * micro_batches > (1LL << 28))
    throw Error("the " + kind + " schedule of " + shape +
                (s.virtual_stages > 1 ? " and " + plural(s.virtual_stages, "chunk") + " per stage" : "") +
                " is too large (stages x chunks per stage x micro-batches is at most 2^28)");
  s.num_buffers = info.buffers(stages, micro_batches, stage);
  Placement p = info.place(stages, micro_batches, s.virtual_stages, stage);
  return {std::move(s), std::move(p)};
}

}  // namespace

Schedule make_schedule(const std::string& kind, int stages, int micro_batches, int stage, int virtual_stages) {
  auto [s, p] = plan_schedule(kind, stages, micro_batches, stage, virtual_stages);
  s.steps = assemble(p, s, s.num_buffers > 0);
  if (s.num_buffers == 0) assign_buffers(s);
  return s;
}

Schedule schedule_program(const std::string& kind, int stages, int micro_batches, int stage, int virtual_stages,
                          std::vector<Instruction>& program) {
  auto [s, p] = plan_schedule(kind, stages, micro_batches, stage, virtual_stages);
  program.clear();
  program.reserve(3 * p.size());
  lower(p, s, false, program, nullptr);
  return s;
}

std::string to_text(WorkKind kind) { return std::string(work_kind_symbol(kind)); }

std::string to_text(const Instruction& instruction) {
  if (is_step_wide(instruction.kind)) return to_text(instruction.kind);
  return to_text(instruction.kind) + std::to_string(instruction.micro_batch) +
         (instruction.chunk != 0 ? "c" + std::to_string(instruction.chunk) : "");
}

std::string to_text(const Step& step) {
  std::string r;
  for (const auto& i : step) r += (r.empty() ? "" : " ") + to_text(i);
  return r;
}

std::string format_grid(const std::vector<Schedule>& per_stage) {
  if (per_stage.empty()) throw Error("format_grid: no schedules given");
  size_t rows = 0;
  for (size_t i = 0; i < per_stage.size(); ++i) {
    if (per_stage[i].stage != static_cast<int>(i))
      throw Error("format_grid: the schedule at position " + std::to_string(i) + " is for stage " +
                  std::to_string(per_stage[i].stage));
    rows = std::max(rows, per_stage[i].steps.size());
  }
  // table[row][col]: row 0 is the header, column 0 the step index.
  std::vector<std::vector<std::string>> table(rows + 1, std::vector<std::string>(per_stage.size() + 1));
  table[0][0] = "step";
  for (size_t c = 0; c < per_stage.size(); ++c) table[0][c + 1] = "stage " + std::to_string(c);
  for (size_t r = 0; r < rows; ++r) {
    table[r + 1][0] = std::to_string(r);
    for (size_t c = 0; c < per_stage.size(); ++c) {
      const std::string cell = r < per_stage[c].steps.size() ? to_text(per_stage[c].steps[r]) : "";
      table[r + 1][c + 1] = cell.empty() ? "." : cell;
    }
  }
  std::vector<size_t> width(per_stage.size() + 1, 0);
  for (const auto& row : table)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  std::string out;
  for (const auto& row : table) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    out += line.substr(0, line.find_last_not_of(' ') + 1) + "\n";
  }
  return out;
}

void check_schedules(const std::vector<Schedule>& per_stage) { Checker(per_stage).run(); }

void check_messages_within_steps(const std::vector<Schedule>& per_stage) {
  // (sending chunk, micro-batch, gradient?) -> step, for each side.
  std::map<std::tuple<int, int, int>, std::size_t> sent, received;
  const int stages = static_cast<int>(per_stage.size());
  for (int s = 0; s < stages; ++s) {
    const Schedule& sch = per_stage[s];
    const std::vector<int> chunks = stage_chunks(sch.placement, s, sch.stages, sch.virtual_stages);
    for (std::size_t t = 0; t < sch.steps.size(); ++t)
      for (Instruction i : sch.steps[t]) {
        if (is_step_wide(i.kind)) continue;
        i.chunk = chunks.at(i.chunk);
        if (i.kind == WorkKind::SendActivation) sent[{i.chunk, i.micro_batch, 0}] = t;
        if (i.kind == WorkKind::SendGrad) sent[{i.chunk, i.micro_batch, 1}] = t;
        if (i.kind == WorkKind::RecvActivation) received[{i.chunk - 1, i.micro_batch, 0}] = t;
        if (i.kind == WorkKind::RecvGrad) received[{i.chunk + 1, i.micro_batch, 1}] = t;
      }
  }
  const Schedule& s0 = per_stage.at(0);
  for (const auto& [message, step] : sent) {
    const auto it = received.find(message);
    if (it != received.end() && it->second == step) continue;
    const auto& [chunk, mb, gradient] = message;
    const int to_chunk = gradient ? chunk - 1 : chunk + 1;
    const int from = chunk_stage(s0.placement, chunk, s0.stages), to = chunk_stage(s0.placement, to_chunk, s0.stages);
    throw Error(std::string("schedule: the ") + (gradient ? "gradient" : "activation") + " of micro-batch " +
                std::to_string(mb) + " is sent by stage " + std::to_string(from) + " at step " +
                std::to_string(step) + " but received by stage " + std::to_string(to) +
                (it == received.end() ? " never" : " at step " + std::to_string(it->second)) +
                ", so it cannot go in one step's batch of transfers (NCCL)");
  }
}

std::vector<Schedule> make_checked_schedules(const std::string& kind, int stages, int micro_batches,
                                             int virtual_stages) {
  require_kind(kind);
  require_shape(stages, micro_batches);
  std::vector<Schedule> all;
  for (int s = 0; s < stages; ++s) all.push_back(make_schedule(kind, stages, micro_batches, s, virtual_stages));
  check_schedules(all);
  return all;
}

std::vector<Schedule> make_checked_inference_schedules(int stages, int micro_batches, int virtual_stages,
                                                       ChunkPlacement placement) {
  if (virtual_stages <= 1) return make_checked_schedules("inference", stages, micro_batches);
  require_shape(stages, micro_batches);
  std::vector<Schedule> all;
  for (int s = 0; s < stages; ++s) {
    Schedule sch;
    sch.kind = "inference";
    sch.stages = stages;
    sch.micro_batches = micro_batches;
    sch.stage = s;
    sch.virtual_stages = virtual_stages;
    sch.placement = placement;
    // In (chunk, micro-batch) order, a topological order of the forwards that every stage follows: no deadlock.
    Placement p;
    for (int c : stage_chunks(placement, s, stages, virtual_stages))
      for (int m = 0; m < micro_batches; ++m) p.push_back(Compute{Work::forward, m, c});
    p.emplace_back();  // room for the last send
    sch.steps = assemble(p, sch, false);
    assign_buffers(sch);
    all.push_back(std::move(sch));
  }
  check_schedules(all);
  return all;
}

int peak_in_flight(const Schedule& schedule) {
  std::vector<Instruction> program;
  for (const Step& step : schedule.steps) program.insert(program.end(), step.begin(), step.end());
  return peak_in_flight(schedule, program);
}

int peak_in_flight(const Schedule& schedule, const std::vector<Instruction>& program) {
  const bool training = is_training_schedule(schedule.kind);
  // The stage's index of the pipeline's last chunk, if it holds it (else an index no instruction names).
  const int last = schedule.chunks() - 1;
  const int last_chunk = chunk_stage(schedule.placement, last, schedule.stages) == schedule.stage
                             ? chunk_index_on_stage(last, schedule.stages)
                             : -1;
  int live = 0, peak = 0;
  for (const Instruction& in : program) {
    if (in.kind == WorkKind::Forward) {
      peak = std::max(peak, ++live);
      if (!training && in.chunk == last_chunk) --live;
    } else if ((training && in.kind == WorkKind::BackwardWeight) || (!training && in.kind == WorkKind::SendActivation)) {
      --live;
    }
  }
  return peak;
}

double theoretical_bubble(const std::string& kind, int stages, int micro_batches, int virtual_stages) {
  require_kind(kind);
  require_shape(stages, micro_batches);
  const KindInfo* info = find_kind(kind);
  if (!info || !info->bubble) return std::nan("");  // custom, zb-v: no closed form
  return info->bubble(stages, micro_batches, std::max(1, virtual_stages));
}

std::string theoretical_bubble_formula(const std::string& kind) {
  require_kind(kind);
  const KindInfo* info = find_kind(kind);
  return info ? info->formula : "";
}

}  // namespace libpipe
