// The discrete-event simulation of a pipeline schedule. Because sends never
// block and each stage runs its instructions in order, a stage's clock only
// moves forward by its own compute and by waiting for a message; so there is
// no global event queue: each stage runs until it needs a message that has
// not been sent yet, and the send wakes it. Every instruction is visited once
// and every wake-up costs O(1), so the whole run is linear in the number of
// instructions (1,024 stages x 4,096 micro-batches: about 29 million).
#include "pipe/simulate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <functional>

#include "pipe/error.hpp"
#include "pipe/schedule.hpp"

namespace libpipe {

namespace {

// Only what costs time or orders stages is kept from a schedule, packed in
// 32 bits (the operation in the top 3, the micro-batch below), so that the
// programs of all stages fit in memory at once: Schedule's vectors of steps
// take about ten times more.
enum SimOp : std::uint32_t { kF, kB, kW, kSA, kRA, kSG, kRG };
constexpr int kOpShift = 29;
constexpr std::uint32_t kMbMask = (1u << kOpShift) - 1;

std::uint32_t pack(SimOp op, int mb) {
  return (static_cast<std::uint32_t>(op) << kOpShift) | static_cast<std::uint32_t>(mb);
}
SimOp op_of(std::uint32_t code) { return static_cast<SimOp>(code >> kOpShift); }
int mb_of(std::uint32_t code) { return static_cast<int>(code & kMbMask); }

// The work kind of each SimOp, for names and timeline blocks.
constexpr WorkKind kKindOf[] = {WorkKind::Forward,        WorkKind::BackwardInput, WorkKind::BackwardWeight,
                                WorkKind::SendActivation, WorkKind::RecvActivation, WorkKind::SendGrad,
                                WorkKind::RecvGrad};

std::string op_name(SimOp op) { return std::string(work_kind_symbol(kKindOf[op])); }

std::vector<std::uint32_t> compile(const Schedule& schedule) {
  std::vector<std::uint32_t> program;
  for (const Step& step : schedule.steps)
    for (const Instruction& in : step) {
      switch (in.kind) {
        case WorkKind::Forward:
          program.push_back(pack(kF, in.micro_batch));
          break;
        case WorkKind::BackwardInput:
          program.push_back(pack(kB, in.micro_batch));
          break;
        case WorkKind::BackwardWeight:
          program.push_back(pack(kW, in.micro_batch));
          break;
        case WorkKind::SendActivation:
          program.push_back(pack(kSA, in.micro_batch));
          break;
        case WorkKind::RecvActivation:
          program.push_back(pack(kRA, in.micro_batch));
          break;
        case WorkKind::SendGrad:
          program.push_back(pack(kSG, in.micro_batch));
          break;
        case WorkKind::RecvGrad:
          program.push_back(pack(kRG, in.micro_batch));
          break;
        default:
          break;  // loads, reductions and the optimizer step take no time here
      }
    }
  program.shrink_to_fit();
  return program;
}

// One direction of one link: the sends issued and not yet received, in order.
struct Channel {
  struct Message {
    double sent;
    int micro_batch;
  };
  std::deque<Message> queue;
};

std::string plural(long long n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

void require_cost(double v, const std::string& what) {
  if (std::isfinite(v) && v >= 0) return;
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  throw Error("simulate: " + what + " must be a finite number >= 0, got " + b);
}

// Both simulate()s: `stage_schedule(s)` gives stage s's schedule, made when it is needed so that a large pipeline's
// schedules are never all in memory at once.
SimResult run(const std::string& kind, int stages, int micro_batches, const std::function<Schedule(int)>& stage_schedule,
              const std::vector<StageCosts>& costs, double p2p_latency, bool with_timeline) {
  const int S = stages, M = micro_batches;
  if (M > static_cast<int>(kMbMask))
    throw Error("simulate: at most " + std::to_string(kMbMask) + " micro-batches, got " + std::to_string(M));
  if (costs.size() != 1 && costs.size() != static_cast<std::size_t>(S))
    throw Error("simulate: " + plural(static_cast<long long>(costs.size()), "cost entry", "cost entries") + " for " +
                plural(S, "stage", "stages") + " (give one per stage, or one for all)");
  for (std::size_t i = 0; i < costs.size(); ++i) {
    const std::string where = costs.size() == 1 ? "" : " of stage " + std::to_string(i);
    require_cost(costs[i].forward, "the forward cost" + where);
    require_cost(costs[i].backward_input, "the backward-input cost" + where);
    require_cost(costs[i].backward_weight, "the backward-weight cost" + where);
  }
  require_cost(p2p_latency, "the point-to-point latency");
  auto cost_of = [&](int s) -> const StageCosts& { return costs.size() == 1 ? costs[0] : costs[s]; };

  std::vector<std::vector<std::uint32_t>> program(S);
  std::vector<int> peak(S);
  for (int s = 0; s < S; ++s) {
    const Schedule schedule = stage_schedule(s);
    peak[s] = peak_in_flight(schedule);
    program[s] = compile(schedule);
  }

  // Channel 2s carries activations s -> s+1, channel 2s+1 gradients s+1 -> s.
  std::vector<Channel> channel(S > 1 ? 2 * (S - 1) : 0);
  std::vector<std::size_t> pc(S, 0);
  std::vector<double> clock(S, 0.0);
  std::vector<int> waiting_on(S, -1);  // the channel a blocked stage waits for, or -1

  SimResult r;
  r.kind = kind;
  r.stages = S;
  r.micro_batches = M;
  r.busy.assign(S, 0.0);
  r.theoretical_bubble = theoretical_bubble(kind, S, M);
  r.peak_activations = std::move(peak);
  Timeline& tl = r.timeline;
  tl.time_unit = "units";
  tl.rows.resize(S);
  for (int s = 0; s < S; ++s) {
    tl.rows[s].name = "stage " + std::to_string(s);
    if (with_timeline) tl.rows[s].blocks.reserve(3 * static_cast<std::size_t>(M) + 8);
  }

  std::vector<int> ready;  // stages that can run, as a stack
  ready.reserve(S);
  for (int s = S - 1; s >= 0; --s) ready.push_back(s);

  auto compute = [&](int s, WorkKind k, double c, int mb) {
    if (c > 0 && with_timeline) tl.rows[s].blocks.push_back(Block{clock[s], clock[s] + c, k, mb, 0});
    clock[s] += c;
    r.busy[s] += c;
  };
  auto send = [&](int s, int ch, int mb, int reader) {
    channel[ch].queue.push_back({clock[s], mb});
    if (waiting_on[reader] == ch) {
      waiting_on[reader] = -1;
      ready.push_back(reader);
    }
  };
  // Returns false (and marks the stage blocked) when the message is not sent
  // yet. The wait, if any, is a block of the receive's kind (RA or RG).
  auto receive = [&](int s, int ch, int mb, WorkKind wait_kind) {
    Channel& c = channel[ch];
    if (c.queue.empty()) {
      waiting_on[s] = ch;
      return false;
    }
    const Channel::Message m = c.queue.front();
    if (m.micro_batch != mb)
      throw Error("simulate: " + kind + " schedule, stage " + std::to_string(s) + ": " +
                  op_name(op_of(program[s][pc[s]])) + std::to_string(mb) + " would receive micro-batch " +
                  std::to_string(m.micro_batch) + " (messages on a link are received in the order they are sent)");
    c.queue.pop_front();
    const double arrival = m.sent + p2p_latency;
    if (arrival > clock[s]) {
      if (with_timeline) tl.rows[s].blocks.push_back(Block{clock[s], arrival, wait_kind, mb, 0});
      clock[s] = arrival;
    }
    return true;
  };

  while (!ready.empty()) {
    const int s = ready.back();
    ready.pop_back();
    const StageCosts& c = cost_of(s);
    const std::vector<std::uint32_t>& p = program[s];
    while (pc[s] < p.size()) {
      const std::uint32_t code = p[pc[s]];
      const int mb = mb_of(code);
      bool ran = true;
      switch (op_of(code)) {
        case kF:
          compute(s, WorkKind::Forward, c.forward, mb);
          break;
        case kB:
          compute(s, WorkKind::BackwardInput, c.backward_input, mb);
          break;
        case kW:
          compute(s, WorkKind::BackwardWeight, c.backward_weight, mb);
          break;
        case kSA:
          send(s, 2 * s, mb, s + 1);
          break;
        case kSG:
          send(s, 2 * (s - 1) + 1, mb, s - 1);
          break;
        case kRA:
          ran = receive(s, 2 * (s - 1), mb, WorkKind::RecvActivation);
          break;
        case kRG:
          ran = receive(s, 2 * s + 1, mb, WorkKind::RecvGrad);
          break;
      }
      if (!ran) break;
      ++pc[s];
    }
  }

  for (int s = 0; s < S; ++s)
    if (pc[s] < program[s].size()) {
      const std::uint32_t code = program[s][pc[s]];
      throw Error("simulate: " + kind + " schedule deadlocks: stage " + std::to_string(s) + " waits forever at " +
                  op_name(op_of(code)) + std::to_string(mb_of(code)));
    }

  double busy_total = 0;
  for (int s = 0; s < S; ++s) {
    r.makespan = std::max(r.makespan, clock[s]);
    busy_total += r.busy[s];
  }
  r.bubble = r.makespan > 0 ? 1 - busy_total / (static_cast<double>(S) * r.makespan) : 0;
  return r;
}

}  // namespace

SimResult simulate(const std::string& kind, int stages, int micro_batches, const std::vector<StageCosts>& costs,
                   double p2p_latency, bool with_timeline) {
  // make_schedule checks the kind and the shape; call it once before anything is allocated.
  (void)make_schedule(kind, stages, micro_batches, 0);
  return run(
      kind, stages, micro_batches, [&](int s) { return make_schedule(kind, stages, micro_batches, s); }, costs,
      p2p_latency, with_timeline);
}

SimResult simulate(const std::vector<Schedule>& per_stage, const std::vector<StageCosts>& costs, double p2p_latency,
                   bool with_timeline) {
  check_schedules(per_stage);  // also proves they are one pipeline's, in stage order
  const Schedule& s0 = per_stage[0];
  return run(
      s0.kind, s0.stages, s0.micro_batches, [&](int s) { return per_stage[s]; }, costs, p2p_latency,
      with_timeline);
}

}  // namespace libpipe
