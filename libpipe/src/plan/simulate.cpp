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
#include "plan/schedule_program.hpp"

namespace libpipe {

namespace {

// Only what costs time or orders stages is kept from a schedule, packed in
// 64 bits (the operation in the top 3, the chunk in the next 29, the
// micro-batch in the low 32), so that the programs of all stages fit in
// memory at once: Schedule's vectors of steps take about five times more.
enum SimOp : std::uint64_t { kF, kB, kW, kSA, kRA, kSG, kRG };
constexpr int kOpShift = 61;
constexpr int kChunkShift = 32;
constexpr std::uint64_t kMbMask = (1ull << 31) - 1;
constexpr std::uint64_t kChunkMask = (1ull << 29) - 1;

std::uint64_t pack(SimOp op, int mb, int chunk) {
  return (static_cast<std::uint64_t>(op) << kOpShift) | (static_cast<std::uint64_t>(chunk) << kChunkShift) |
         static_cast<std::uint64_t>(mb);
}
SimOp op_of(std::uint64_t code) { return static_cast<SimOp>(code >> kOpShift); }
int mb_of(std::uint64_t code) { return static_cast<int>(code & kMbMask); }
int chunk_of(std::uint64_t code) { return static_cast<int>((code >> kChunkShift) & kChunkMask); }

// The work kind of each SimOp, for names and timeline blocks.
constexpr WorkKind kKindOf[] = {WorkKind::Forward,        WorkKind::BackwardInput, WorkKind::BackwardWeight,
                                WorkKind::SendActivation, WorkKind::RecvActivation, WorkKind::SendGrad,
                                WorkKind::RecvGrad};

std::string op_name(std::uint64_t code, int stages) {
  return to_text(Instruction{kKindOf[op_of(code)], mb_of(code), -1, chunk_index_on_stage(chunk_of(code), stages)});
}

// The program of `schedule`'s stage, with global chunks.
std::vector<std::uint64_t> compile(const Schedule& schedule, const std::vector<Instruction>& instructions) {
  const std::vector<int> chunks =
      stage_chunks(schedule.placement, schedule.stage, schedule.stages, schedule.virtual_stages);
  std::vector<std::uint64_t> program;
  program.reserve(instructions.size());
  for (const Instruction& in : instructions) {
    SimOp op;
    switch (in.kind) {
      case WorkKind::Forward: op = kF; break;
      case WorkKind::BackwardInput: op = kB; break;
      case WorkKind::BackwardWeight: op = kW; break;
      case WorkKind::SendActivation: op = kSA; break;
      case WorkKind::RecvActivation: op = kRA; break;
      case WorkKind::SendGrad: op = kSG; break;
      case WorkKind::RecvGrad: op = kRG; break;
      default: continue;  // loads, reductions and the optimizer step take no time here
    }
    program.push_back(pack(op, in.micro_batch, chunks.at(in.chunk)));
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

// Both simulate()s: `stage_program(s, instructions)` gives stage s's schedule (its steps may be left empty) and
// its instructions in order, made when they are needed so that a large pipeline's schedules are never all in
// memory at once.
SimResult run(const std::string& kind, int stages, int micro_batches, int virtual_stages, ChunkPlacement placement,
              const std::function<Schedule(int, std::vector<Instruction>&)>& stage_program,
              const std::vector<StageCosts>& costs, double p2p_latency, bool with_timeline) {
  const int S = stages, M = micro_batches, V = virtual_stages, C = S * V;
  if (M > static_cast<int>(kMbMask))
    throw Error("simulate: at most " + std::to_string(kMbMask) + " micro-batches, got " + std::to_string(M));
  if (costs.size() != 1 && costs.size() != static_cast<std::size_t>(C))
    throw Error("simulate: " + plural(static_cast<long long>(costs.size()), "cost entry", "cost entries") + " for " +
                (V > 1 ? plural(C, "chunk", "chunks") + " (give one per chunk, or one for all)"
                       : plural(S, "stage", "stages") + " (give one per stage, or one for all)"));
  for (std::size_t i = 0; i < costs.size(); ++i) {
    const std::string where = costs.size() == 1 ? "" : (V > 1 ? " of chunk " : " of stage ") + std::to_string(i);
    require_cost(costs[i].forward, "the forward cost" + where);
    require_cost(costs[i].backward_input, "the backward-input cost" + where);
    require_cost(costs[i].backward_weight, "the backward-weight cost" + where);
  }
  require_cost(p2p_latency, "the point-to-point latency");
  auto cost_of = [&](int chunk) -> const StageCosts& { return costs.size() == 1 ? costs[0] : costs[chunk]; };

  std::vector<std::vector<std::uint64_t>> program(S);
  std::vector<int> peak(S);
  std::vector<Instruction> instructions;
  for (int s = 0; s < S; ++s) {
    const Schedule schedule = stage_program(s, instructions);
    peak[s] = peak_in_flight(schedule, instructions);
    program[s] = compile(schedule, instructions);
  }

  // Channel 2c carries activations from chunk c to c+1, channel 2c+1 gradients from c+1 to c.
  std::vector<Channel> channel(C > 1 ? 2 * (C - 1) : 0);
  auto stage_of = [&](int chunk) { return chunk_stage(placement, chunk, S); };
  std::vector<std::size_t> pc(S, 0);
  std::vector<double> clock(S, 0.0);
  std::vector<int> waiting_on(S, -1);  // the channel a blocked stage waits for, or -1

  SimResult r;
  r.kind = kind;
  r.stages = S;
  r.micro_batches = M;
  r.busy.assign(S, 0.0);
  r.virtual_stages = V;
  r.theoretical_bubble = theoretical_bubble(kind, S, M, V);
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

  auto compute = [&](int s, WorkKind k, double c, int mb, int chunk) {
    if (c > 0 && with_timeline) tl.rows[s].blocks.push_back(Block{clock[s], clock[s] + c, k, mb, 0, static_cast<std::uint16_t>(chunk_index_on_stage(chunk, S))});
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
  auto receive = [&](int s, int ch, int mb, int chunk, WorkKind wait_kind) {
    Channel& c = channel[ch];
    if (c.queue.empty()) {
      waiting_on[s] = ch;
      return false;
    }
    const Channel::Message m = c.queue.front();
    if (m.micro_batch != mb)
      throw Error("simulate: " + kind + " schedule, stage " + std::to_string(s) + ": " +
                  op_name(program[s][pc[s]], S) + " would receive micro-batch " +
                  std::to_string(m.micro_batch) + " (messages on a link are received in the order they are sent)");
    c.queue.pop_front();
    const double arrival = m.sent + p2p_latency;
    if (arrival > clock[s]) {
      if (with_timeline) tl.rows[s].blocks.push_back(Block{clock[s], arrival, wait_kind, mb, 0, static_cast<std::uint16_t>(chunk_index_on_stage(chunk, S))});
      clock[s] = arrival;
    }
    return true;
  };

  while (!ready.empty()) {
    const int s = ready.back();
    ready.pop_back();
    const std::vector<std::uint64_t>& p = program[s];
    while (pc[s] < p.size()) {
      const std::uint64_t code = p[pc[s]];
      const int mb = mb_of(code), chunk = chunk_of(code);
      const StageCosts& c = cost_of(chunk);
      bool ran = true;
      switch (op_of(code)) {
        case kF:
          compute(s, WorkKind::Forward, c.forward, mb, chunk);
          break;
        case kB:
          compute(s, WorkKind::BackwardInput, c.backward_input, mb, chunk);
          break;
        case kW:
          compute(s, WorkKind::BackwardWeight, c.backward_weight, mb, chunk);
          break;
        case kSA:
          send(s, 2 * chunk, mb, stage_of(chunk + 1));
          break;
        case kSG:
          send(s, 2 * (chunk - 1) + 1, mb, stage_of(chunk - 1));
          break;
        case kRA:
          ran = receive(s, 2 * (chunk - 1), mb, chunk, WorkKind::RecvActivation);
          break;
        case kRG:
          ran = receive(s, 2 * chunk + 1, mb, chunk, WorkKind::RecvGrad);
          break;
      }
      if (!ran) break;
      ++pc[s];
    }
  }

  for (int s = 0; s < S; ++s)
    if (pc[s] < program[s].size()) {
      throw Error("simulate: " + kind + " schedule deadlocks: stage " + std::to_string(s) + " waits forever at " +
                  op_name(program[s][pc[s]], S));
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

std::vector<StageCosts> chunk_costs_from_stages(const std::vector<StageCosts>& per_stage, int stages,
                                                int virtual_stages, ChunkPlacement placement) {
  if (virtual_stages == 1) return per_stage;
  const int V = virtual_stages;
  std::vector<StageCosts> out;
  const int chunks = per_stage.size() == 1 ? 1 : stages * V;
  for (int c = 0; c < chunks; ++c) {
    StageCosts x = per_stage.size() == 1 ? per_stage[0] : per_stage.at(chunk_stage(placement, c, stages));
    x.forward /= V;
    x.backward_input /= V;
    x.backward_weight /= V;
    out.push_back(x);
  }
  return out;
}

SimResult simulate(const std::string& kind, int stages, int micro_batches, const std::vector<StageCosts>& costs,
                   double p2p_latency, bool with_timeline, int virtual_stages) {
  // The first stage's schedule checks the kind and the shape before anything is allocated.
  std::vector<Instruction> first_program;
  const Schedule first = schedule_program(kind, stages, micro_batches, 0, virtual_stages, first_program);
  return run(
      kind, stages, micro_batches, first.virtual_stages, first.placement,
      [&](int s, std::vector<Instruction>& program) {
        if (s == 0) {
          program.swap(first_program);
          return first;
        }
        return schedule_program(kind, stages, micro_batches, s, virtual_stages, program);
      },
      costs, p2p_latency, with_timeline);
}

SimResult simulate(const std::vector<Schedule>& per_stage, const std::vector<StageCosts>& costs, double p2p_latency,
                   bool with_timeline) {
  check_schedules(per_stage);  // also proves they are one pipeline's, in stage order
  const Schedule& s0 = per_stage[0];
  return run(
      s0.kind, s0.stages, s0.micro_batches, s0.virtual_stages, s0.placement,
      [&](int s, std::vector<Instruction>& program) {
        program.clear();
        for (const Step& step : per_stage[s].steps) program.insert(program.end(), step.begin(), step.end());
        return per_stage[s];
      },
      costs, p2p_latency, with_timeline);
}

}  // namespace libpipe
