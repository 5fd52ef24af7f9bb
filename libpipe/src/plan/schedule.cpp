// Pipeline schedules: the generators (which compute runs in which step, as
// DeepSpeed places it), the one rule that turns compute placement into steps
// of instructions, the text forms, and the checker that simulates all stages.
#include "pipe/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <map>
#include <optional>
#include <tuple>

#include "pipe/error.hpp"
#include "model/suggest.hpp"

namespace libpipe {

namespace {

const std::vector<std::string> kKinds = {"inference", "gpipe", "1f1b", "zb-h1"};

bool is_step_wide(WorkKind k) {
  return k == WorkKind::ReduceTiedGrads || k == WorkKind::ReduceGrads || k == WorkKind::OptimizerStep;
}

// Schedules read from text (parse_schedules) have this kind: training, with no generator.
const char* const kCustom = "custom";

void require_kind(const std::string& kind) {
  if (kind == kCustom || std::find(kKinds.begin(), kKinds.end(), kind) != kKinds.end()) return;
  std::string known;
  for (const auto& k : kKinds) known += (known.empty() ? "" : ", ") + k;
  throw Error("unknown pipeline schedule '" + kind + "'" + did_you_mean(kind, kKinds) + "; known schedules: " + known);
}

void require_shape(int stages, int micro_batches) {
  if (stages < 1) throw Error("a pipeline schedule needs at least 1 stage, got " + std::to_string(stages));
  if (micro_batches < 1)
    throw Error("a pipeline schedule needs at least 1 micro-batch, got " + std::to_string(micro_batches));
}

std::string plural(int n, const std::string& word) {
  const bool es = !word.empty() && (word.back() == 'h' || word.back() == 's');  // "micro-batches"
  return std::to_string(n) + " " + word + (n == 1 ? "" : es ? "es" : "s");
}

// "1f1b schedule (4 stages, 8 micro-batches)": the start of every checker message.
std::string describe(const Schedule& s) {
  return s.kind + " schedule (" + plural(s.stages, "stage") + ", " + plural(s.micro_batches, "micro-batch") + ")";
}

// What a stage computes in one step: a forward, a whole backward (B then W), or
// one half of a split backward (zero-bubble schedules) of a micro-batch.
enum class Work { forward, backward, backward_input, backward_weight };
struct Compute {
  Work work;
  int micro_batch;
};
using Placement = std::vector<std::optional<Compute>>;  // one entry per step

// DeepSpeed's TrainSchedule._step_to_micro_batch: stages alternate by parity,
// a forward in the steps of their own parity and a backward in the others.
Placement place_1f1b(int S, int M, int s) {
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
    if (mb >= 0 && mb < M) p[t] = Compute{forward ? Work::forward : Work::backward, mb};
  }
  return p;
}

// Fill-drain: micro-batch m's forward reaches stage s at step m + s; the last
// stage starts the backwards right after its last forward, and each backward
// reaches the stage before one step later.
Placement place_gpipe(int S, int M, int s) {
  Placement p(2 * (M + S - 1));
  for (int m = 0; m < M; ++m) {
    p[m + s] = Compute{Work::forward, m};
    p[(M + S - 1) + m + (S - 1 - s)] = Compute{Work::backward, m};
  }
  return p;
}

Placement place_inference(int S, int M, int s) {
  Placement p(M + S - 1);
  for (int m = 0; m < M; ++m) p[m + s] = Compute{Work::forward, m};
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
// Needs M >= S (checked in make_schedule).
Placement place_zb_h1(int S, int M, int s) {
  Placement p(3 * M + S - 1);
  const int warm = S - s;
  for (int m = 0; m < warm; ++m) p[s + m] = Compute{Work::forward, m};
  int t = 2 * S - 1 - s, next_forward = warm, next_weight = 0;
  for (int k = 0; k < M; ++k) {
    p[t++] = Compute{Work::backward_input, k};
    if (k - next_weight >= s) p[t++] = Compute{Work::backward_weight, next_weight++};
    if (next_forward < M) p[t++] = Compute{Work::forward, next_forward++};
  }
  while (next_weight < M) p[t++] = Compute{Work::backward_weight, next_weight++};
  return p;
}

int num_buffers(const std::string& kind, int S, int M, int s) {
  if (kind == "gpipe") return M;
  if (kind == "1f1b") return std::max(2, std::min(S - s, M));  // DeepSpeed's num_pipe_buffers
  if (kind == "zb-h1") return std::max(2, S);                  // F to W of S micro-batches on every stage
  return 2;                                                    // inference: one receiving, one sending
}

// The one layout rule of every step (see schedule.hpp): sends of the previous
// step's result, load, receives, compute, and the step-wide reductions last.
std::vector<Step> assemble(const Placement& p, const Schedule& sch) {
  const bool first = sch.stage == 0, last = sch.stage == sch.stages - 1;
  auto buf = [&](int mb) { return mb % sch.num_buffers; };
  auto op = [&](WorkKind k, int mb) { return Instruction{k, mb, buf(mb)}; };
  const int T = static_cast<int>(p.size());
  std::vector<Step> steps(T);
  for (int t = 0; t < T; ++t) {
    Step& step = steps[t];
    // One allocation per busy step (a send, a load, a receive and a compute at most, before the tail's three):
    // 1,024 stages x 4,096 micro-batches make millions of steps.
    if (p[t] || (t > 0 && p[t - 1])) step.reserve(4);
    if (t > 0 && p[t - 1]) {
      const Compute& prev = *p[t - 1];
      const bool backward = prev.work == Work::backward || prev.work == Work::backward_input;
      if (prev.work == Work::forward && !last) step.push_back(op(WorkKind::SendActivation, prev.micro_batch));
      if (backward && !first) step.push_back(op(WorkKind::SendGrad, prev.micro_batch));
    }
    if (p[t]) {
      const int mb = p[t]->micro_batch;
      const Work work = p[t]->work;
      if (work == Work::forward) {
        if (first || last) step.push_back(op(WorkKind::LoadMicroBatch, mb));
        if (!first) step.push_back(op(WorkKind::RecvActivation, mb));
        step.push_back(op(WorkKind::Forward, mb));
      }
      if (work == Work::backward || work == Work::backward_input) {
        if (!last) step.push_back(op(WorkKind::RecvGrad, mb));
        step.push_back(op(WorkKind::BackwardInput, mb));
      }
      if (work == Work::backward || work == Work::backward_weight) step.push_back(op(WorkKind::BackwardWeight, mb));
    }
  }
  if (is_training_schedule(sch.kind) && T > 0) {
    steps.back().push_back(Instruction{WorkKind::ReduceTiedGrads});
    steps.back().push_back(Instruction{WorkKind::ReduceGrads});
    steps.back().push_back(Instruction{WorkKind::OptimizerStep});
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

// The per-micro-batch instructions a stage must run, in pipeline order: the
// micro-batch's buffer is live until all of them have run.
std::vector<WorkKind> required_ops(const Schedule& s) {
  const bool first = s.stage == 0, last = s.stage == s.stages - 1;
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
    training_ = is_training_schedule(sch_[0].kind);
    for (const auto& s : sch_) prog_.push_back(flatten(s));
    for (int s = 0; s < S_; ++s) check_instructions(s);
    match_channels();
    simulate();
    check_complete();
  }

 private:
  // Channels: activations go s -> s+1 (SA on s, RA on s+1), gradients go
  // s+1 -> s (SG on s+1, RG on s). Channel 2s is stage s's activations to
  // s+1, channel 2s+1 the gradients from s+1 to s.
  struct Channel {
    int from, to;
    WorkKind send, recv;
    std::vector<Pos> sends, recvs;  // in program order
    std::vector<int> send_mb, recv_mb;
    std::deque<int> in_flight;  // ordinals of sends issued but not yet received
    int received = 0;
  };

  [[noreturn]] void fail_at(int s, Pos p, const std::string& what) const {
    throw Error(describe(sch_[0]) + ": stage " + std::to_string(s) + ", step " + std::to_string(p.step) + ": " +
                to_text(sch_[s].steps[p.step][p.index]) + " " + what);
  }

  void check_headers() const {
    if (sch_.empty()) throw Error("check_schedules: no schedules given");
    const Schedule& s0 = sch_[0];
    require_kind(s0.kind);
    require_shape(s0.stages, s0.micro_batches);
    if (static_cast<int>(sch_.size()) != s0.stages)
      throw Error(describe(s0) + ": got schedules for " + plural(static_cast<int>(sch_.size()), "stage"));
    for (int i = 0; i < static_cast<int>(sch_.size()); ++i) {
      const Schedule& s = sch_[i];
      if (s.stage != i)
        throw Error(describe(s0) + ": the schedule at position " + std::to_string(i) + " is for stage " +
                    std::to_string(s.stage));
      if (s.kind != s0.kind || s.stages != s0.stages || s.micro_batches != s0.micro_batches)
        throw Error(describe(s0) + ": stage " + std::to_string(i) + " has a " + describe(s) + " instead");
    }
  }

  void check_instructions(int s) const {
    const Schedule& sch = sch_[s];
    const bool first = s == 0, last = s == S_ - 1;
    const Program& p = prog_[s];
    for (size_t k = 0; k < p.code.size(); ++k) {
      const Instruction& in = p.code[k];
      const int mb = in.micro_batch, b = in.buffer;
      if (!is_schedule_instruction(in.kind))
        fail_at(s, p.pos[k], "is not a schedule instruction (work the engine traces, no schedule runs it)");
      if (is_step_wide(in.kind)) {
        if (mb != -1 || b != -1)
          fail_at(s, p.pos[k],
                  "carries micro-batch " + std::to_string(mb) + " and buffer " + std::to_string(b) +
                      "; a step-wide instruction carries neither (-1)");
      } else {
        if (mb < 0 || mb >= M_)
          fail_at(s, p.pos[k], "names micro-batch " + std::to_string(mb) + ", outside 0.." + std::to_string(M_ - 1));
        if (b < 0 || b >= sch.num_buffers)
          fail_at(s, p.pos[k],
                  "uses buffer " + std::to_string(b) + ", outside the stage's " + plural(sch.num_buffers, "buffer") +
                      (sch.num_buffers > 0 ? " (0.." + std::to_string(sch.num_buffers - 1) + ")" : ""));
      }
      const bool backward_kind = in.kind == WorkKind::BackwardInput || in.kind == WorkKind::BackwardWeight ||
                                 in.kind == WorkKind::SendGrad || in.kind == WorkKind::RecvGrad || is_step_wide(in.kind);
      if (!training_ && backward_kind) fail_at(s, p.pos[k], "has no place in a forward-only schedule");
      switch (in.kind) {
        case WorkKind::SendActivation:
          if (last) fail_at(s, p.pos[k], "sends to the next stage, but this is the last stage");
          break;
        case WorkKind::RecvGrad:
          if (last) fail_at(s, p.pos[k], "receives from the next stage, but this is the last stage");
          break;
        case WorkKind::RecvActivation:
          if (first) fail_at(s, p.pos[k], "receives from the previous stage, but this is the first stage");
          break;
        case WorkKind::SendGrad:
          if (first) fail_at(s, p.pos[k], "sends to the previous stage, but this is the first stage");
          break;
        case WorkKind::LoadMicroBatch:
          if (!first && !last)
            fail_at(s, p.pos[k], "loads data on a middle stage; only the first and last stages load");
          break;
        default:
          break;
      }
    }
  }

  // Pairs the k-th send of each channel with its k-th receive, which is what
  // MPI does for one source and tag; they must name the same micro-batch.
  void match_channels() {
    for (int s = 0; s + 1 < S_; ++s) {
      chan_.push_back({s, s + 1, WorkKind::SendActivation, WorkKind::RecvActivation, {}, {}, {}, {}, {}, 0});
      chan_.push_back({s + 1, s, WorkKind::SendGrad, WorkKind::RecvGrad, {}, {}, {}, {}, {}, 0});
    }
    for (Channel& c : chan_) {
      for (size_t k = 0; k < prog_[c.from].code.size(); ++k)
        if (prog_[c.from].code[k].kind == c.send) {
          c.sends.push_back(prog_[c.from].pos[k]);
          c.send_mb.push_back(prog_[c.from].code[k].micro_batch);
        }
      for (size_t k = 0; k < prog_[c.to].code.size(); ++k)
        if (prog_[c.to].code[k].kind == c.recv) {
          c.recvs.push_back(prog_[c.to].pos[k]);
          c.recv_mb.push_back(prog_[c.to].code[k].micro_batch);
        }
    }
    // Unpaired messages first: they say more than an order mismatch would.
    for (Channel& c : chan_) {
      unpaired(c.send_mb, c.recv_mb, [&](size_t i) {
        fail_at(c.from, c.sends[i],
                "has no matching " + to_text(Instruction{c.recv, c.send_mb[i]}) + " on stage " + std::to_string(c.to));
      });
      unpaired(c.recv_mb, c.send_mb, [&](size_t i) {
        fail_at(
            c.to, c.recvs[i],
            "has no matching " + to_text(Instruction{c.send, c.recv_mb[i]}) + " on stage " + std::to_string(c.from));
      });
    }
    for (Channel& c : chan_)
      for (size_t i = 0; i < c.recvs.size(); ++i)
        if (c.recv_mb[i] != c.send_mb[i])
          fail_at(c.to, c.recvs[i],
                  "would receive micro-batch " + std::to_string(c.send_mb[i]) + " (" +
                      to_text(Instruction{c.send, c.send_mb[i]}) + " of stage " + std::to_string(c.from) + ", step " +
                      std::to_string(c.sends[i].step) + "): messages from stage " + std::to_string(c.from) +
                      " to stage " + std::to_string(c.to) + " are received in the order they are sent");
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

  int channel_of(int s, WorkKind k) const {
    switch (k) {
      case WorkKind::SendActivation:
        return 2 * s;
      case WorkKind::RecvActivation:
        return 2 * (s - 1);
      case WorkKind::SendGrad:
        return 2 * (s - 1) + 1;
      case WorkKind::RecvGrad:
        return 2 * s + 1;
      default:
        return -1;
    }
  }

  // Per stage, what has run so far.
  struct State {
    size_t pc = 0;
    std::vector<std::vector<int>> done_step;  // [micro-batch][WorkKind] -> step it ran in, or -1
    std::vector<int> buffer_of;               // micro-batch -> buffer, -1 before its first instruction
    std::vector<int> holder;                  // buffer -> live micro-batch, or -1
    std::vector<int> remaining;               // micro-batch -> required instructions still to run
    std::vector<bool> required;               // WorkKind -> whether each micro-batch needs one
    int weights_done = 0;
    int wide_step[kNumKinds];  // step of RT, RD, OPT, or -1
  };

  bool runnable(int s) const {
    const State& st = state_[s];
    if (st.pc >= prog_[s].code.size()) return false;
    const WorkKind k = prog_[s].code[st.pc].kind;
    if (k == WorkKind::RecvActivation || k == WorkKind::RecvGrad) return !chan_[channel_of(s, k)].in_flight.empty();
    return true;  // sends never block
  }

  void simulate() {
    state_.resize(S_);
    for (int s = 0; s < S_; ++s) {
      State& st = state_[s];
      st.done_step.assign(M_, std::vector<int>(kNumKinds, -1));
      st.buffer_of.assign(M_, -1);
      st.holder.assign(std::max(sch_[s].num_buffers, 0), -1);
      const auto req = required_ops(sch_[s]);
      st.remaining.assign(M_, static_cast<int>(req.size()));
      st.required.assign(kNumKinds, false);
      for (WorkKind r : req) st.required[static_cast<int>(r)] = true;
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
      const Channel& c = chan_[channel_of(s, in.kind)];
      const Pos at = prog_[s].pos[st.pc];
      blocked += std::string(blocked.empty() ? "" : "; ") + "stage " + std::to_string(s) + ", step " +
                 std::to_string(at.step) + ": " + to_text(in) + " waits for " +
                 to_text(Instruction{c.send, in.micro_batch}) + " of stage " + std::to_string(c.from) + " (step " +
                 std::to_string(c.sends[c.received].step) + ")";
    }
    if (!blocked.empty()) throw Error(describe(sch_[0]) + ": deadlock: " + blocked);
  }

  std::string pending(int s, int mb) const {
    std::string r;
    for (WorkKind k : required_ops(sch_[s]))
      if (state_[s].done_step[mb][static_cast<int>(k)] < 0) r += (r.empty() ? "" : " ") + to_text(Instruction{k, mb});
    return r;
  }

  void execute(int s) {
    State& st = state_[s];
    const Instruction in = prog_[s].code[st.pc];
    const Pos at = prog_[s].pos[st.pc];
    const bool first = s == 0, last = s == S_ - 1;
    const int mb = in.micro_batch;
    const int k = static_cast<int>(in.kind);
    auto fail = [&](const std::string& what) { fail_at(s, at, what); };
    auto done = [&](WorkKind op) { return st.done_step[mb][static_cast<int>(op)] >= 0; };
    auto text = [&](WorkKind op) { return to_text(Instruction{op, mb}); };

    if (is_step_wide(in.kind)) {
      if (st.wide_step[k] >= 0) fail("runs twice (first at step " + std::to_string(st.wide_step[k]) + ")");
      if (in.kind != WorkKind::OptimizerStep && st.weights_done < M_) {
        for (int m = 0; m < M_; ++m)
          if (st.done_step[m][static_cast<int>(WorkKind::BackwardWeight)] < 0)
            fail("runs before " + to_text(Instruction{WorkKind::BackwardWeight, m}));
      }
      if (in.kind == WorkKind::OptimizerStep) {
        for (WorkKind r : {WorkKind::ReduceTiedGrads, WorkKind::ReduceGrads})
          if (st.wide_step[static_cast<int>(r)] < 0) fail("runs before " + to_text(r));
        if (st.pc + 1 < prog_[s].code.size())
          fail("is not the last instruction: " + to_text(prog_[s].code[st.pc + 1]) + " follows at step " +
               std::to_string(prog_[s].pos[st.pc + 1].step));
      }
      st.wide_step[k] = at.step;
      ++st.pc;
      return;
    }

    if (done(in.kind)) fail("runs twice (first at step " + std::to_string(st.done_step[mb][k]) + ")");
    switch (in.kind) {
      case WorkKind::Forward:
        if (first && !done(WorkKind::LoadMicroBatch))
          fail("runs before its input is loaded (no " + text(WorkKind::LoadMicroBatch) + " before it)");
        if (!first && !done(WorkKind::RecvActivation))
          fail("runs before its input is received (no " + text(WorkKind::RecvActivation) + " before it)");
        if (last && !done(WorkKind::LoadMicroBatch))
          fail("runs before its labels are loaded (no " + text(WorkKind::LoadMicroBatch) + " before it)");
        break;
      case WorkKind::BackwardInput:
        if (!done(WorkKind::Forward)) fail("runs before " + text(WorkKind::Forward));
        if (!last && !done(WorkKind::RecvGrad))
          fail("runs before its output gradient is received (no " + text(WorkKind::RecvGrad) + " before it)");
        break;
      case WorkKind::BackwardWeight:
        if (!done(WorkKind::BackwardInput)) fail("runs before " + text(WorkKind::BackwardInput));
        break;
      case WorkKind::SendActivation:
        if (!done(WorkKind::Forward)) fail("runs before " + text(WorkKind::Forward));
        break;
      case WorkKind::SendGrad:
        if (!done(WorkKind::BackwardInput)) fail("runs before " + text(WorkKind::BackwardInput));
        break;
      default:
        break;
    }

    // The micro-batch takes its buffer at its first instruction and keeps it
    // until the stage has run every instruction it owes it.
    const int b = in.buffer;
    if (st.buffer_of[mb] < 0) {
      if (st.holder[b] >= 0)
        fail("reuses buffer " + std::to_string(b) + " while micro-batch " + std::to_string(st.holder[b]) +
             " still lives in it (still to run: " + pending(s, st.holder[b]) + ")");
      st.buffer_of[mb] = b;
      st.holder[b] = mb;
    } else if (st.buffer_of[mb] != b) {
      fail("uses buffer " + std::to_string(b) + " but micro-batch " + std::to_string(mb) + " lives in buffer " +
           std::to_string(st.buffer_of[mb]));
    }

    const int c = channel_of(s, in.kind);
    if (in.kind == WorkKind::SendActivation || in.kind == WorkKind::SendGrad) {
      chan_[c].in_flight.push_back(mb);
    } else if (in.kind == WorkKind::RecvActivation || in.kind == WorkKind::RecvGrad) {
      chan_[c].in_flight.pop_front();  // matched in order by match_channels()
      ++chan_[c].received;
    }

    st.done_step[mb][k] = at.step;
    if (in.kind == WorkKind::BackwardWeight) ++st.weights_done;
    if (st.required[k] && --st.remaining[mb] == 0) st.holder[b] = -1;
    ++st.pc;
  }

  void check_complete() const {
    for (int s = 0; s < S_; ++s) {
      const auto req = required_ops(sch_[s]);
      for (int m = 0; m < M_; ++m)
        for (WorkKind k : req)
          if (state_[s].done_step[m][static_cast<int>(k)] < 0)
            throw Error(describe(sch_[0]) + ": stage " + std::to_string(s) + ": " + to_text(Instruction{k, m}) +
                        " never runs");
      if (training_)
        for (WorkKind k : {WorkKind::ReduceTiedGrads, WorkKind::ReduceGrads, WorkKind::OptimizerStep})
          if (state_[s].wide_step[static_cast<int>(k)] < 0)
            throw Error(describe(sch_[0]) + ": stage " + std::to_string(s) + ": " + to_text(k) +
                        " never runs (a training schedule ends with RT, RD, OPT)");
    }
  }

  const std::vector<Schedule>& sch_;
  int S_ = 0, M_ = 0;
  bool training_ = false;
  std::vector<Program> prog_;
  std::vector<Channel> chan_;
  std::vector<State> state_;
};

}  // namespace

bool operator==(const Instruction& a, const Instruction& b) {
  return a.kind == b.kind && a.micro_batch == b.micro_batch && a.buffer == b.buffer;
}

std::vector<std::string> schedule_kinds() { return kKinds; }

bool is_training_schedule(const std::string& kind) {
  require_kind(kind);
  return kind != "inference";
}

Schedule make_schedule(const std::string& kind, int stages, int micro_batches, int stage) {
  require_kind(kind);
  if (kind == kCustom) throw Error("a custom schedule is read from its text (--schedule-file), not generated");
  require_shape(stages, micro_batches);
  if (stage < 0 || stage >= stages)
    throw Error("stage " + std::to_string(stage) + " is outside the pipeline's " + plural(stages, "stage") + " (0.." +
                std::to_string(stages - 1) + ")");
  Schedule s;
  s.kind = kind;
  s.stages = stages;
  s.micro_batches = micro_batches;
  s.stage = stage;
  s.num_buffers = num_buffers(kind, stages, micro_batches, stage);
  if (kind == "zb-h1" && micro_batches < stages)
    throw Error("the zb-h1 schedule needs at least as many micro-batches as stages (M >= S), got " +
                plural(micro_batches, "micro-batch") + " for " + plural(stages, "stage"));
  const Placement p = kind == "1f1b"    ? place_1f1b(stages, micro_batches, stage)
                      : kind == "gpipe" ? place_gpipe(stages, micro_batches, stage)
                      : kind == "zb-h1" ? place_zb_h1(stages, micro_batches, stage)
                                        : place_inference(stages, micro_batches, stage);
  s.steps = assemble(p, s);
  return s;
}

std::string to_text(WorkKind kind) { return std::string(work_kind_symbol(kind)); }

std::string to_text(const Instruction& instruction) {
  if (is_step_wide(instruction.kind)) return to_text(instruction.kind);
  return to_text(instruction.kind) + std::to_string(instruction.micro_batch);
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
  // (sender, receiver, micro-batch, gradient?) -> step, for each side.
  std::map<std::tuple<int, int, int, int>, std::size_t> sent, received;
  const int stages = static_cast<int>(per_stage.size());
  for (int s = 0; s < stages; ++s)
    for (std::size_t t = 0; t < per_stage[s].steps.size(); ++t)
      for (const Instruction& i : per_stage[s].steps[t]) {
        if (i.kind == WorkKind::SendActivation) sent[{s, s + 1, i.micro_batch, 0}] = t;
        if (i.kind == WorkKind::SendGrad) sent[{s, s - 1, i.micro_batch, 1}] = t;
        if (i.kind == WorkKind::RecvActivation) received[{s - 1, s, i.micro_batch, 0}] = t;
        if (i.kind == WorkKind::RecvGrad) received[{s + 1, s, i.micro_batch, 1}] = t;
      }
  for (const auto& [message, step] : sent) {
    const auto it = received.find(message);
    if (it != received.end() && it->second == step) continue;
    const auto& [from, to, mb, gradient] = message;
    throw Error(std::string("schedule: the ") + (gradient ? "gradient" : "activation") + " of micro-batch " +
                std::to_string(mb) + " is sent by stage " + std::to_string(from) + " at step " +
                std::to_string(step) + " but received by stage " + std::to_string(to) +
                (it == received.end() ? " never" : " at step " + std::to_string(it->second)) +
                ", so it cannot go in one step's batch of transfers (NCCL)");
  }
}

std::vector<Schedule> make_checked_schedules(const std::string& kind, int stages, int micro_batches) {
  require_kind(kind);
  require_shape(stages, micro_batches);
  std::vector<Schedule> all;
  for (int s = 0; s < stages; ++s) all.push_back(make_schedule(kind, stages, micro_batches, s));
  check_schedules(all);
  return all;
}

int peak_in_flight(const Schedule& schedule) {
  const bool training = is_training_schedule(schedule.kind);
  const bool last = schedule.stage == schedule.stages - 1;
  int live = 0, peak = 0;
  for (const Step& step : schedule.steps)
    for (const Instruction& in : step) {
      if (in.kind == WorkKind::Forward) {
        peak = std::max(peak, ++live);
        if (!training && last) --live;
      } else if ((training && in.kind == WorkKind::BackwardWeight) || (!training && in.kind == WorkKind::SendActivation)) {
        --live;
      }
    }
  return peak;
}

double theoretical_bubble(const std::string& kind, int stages, int micro_batches) {
  require_kind(kind);
  require_shape(stages, micro_batches);
  if (kind == kCustom) return std::nan("");  // no closed form
  // ZB-H1 with F = B = W: (S-1)(F+B-W) idle in a makespan of M(F+B+W) + (S-1)(F+B-W).
  if (kind == "zb-h1") return static_cast<double>(stages - 1) / (3.0 * micro_batches + stages - 1);
  return static_cast<double>(stages - 1) / (micro_batches + stages - 1);
}

std::string theoretical_bubble_formula(const std::string& kind) {
  require_kind(kind);
  if (kind == kCustom) return "";
  if (kind == "zb-h1") return "(S-1)/(3M+S-1) with F = B = W";
  return "(S-1)/(M+S-1)";
}

}  // namespace libpipe
