// The pipeline simulator against the closed forms (bubble (S-1)/(M+S-1),
// makespan (M+S-1)(F+B)) over many shapes and cost ratios, against its own
// semantics (dependencies, latency, a slow stage); the Chrome trace reader on
// hand-written traces and the writer in a round trip. (pipe-sim's SVG
// renderer, and the simulation at the promised scale of 1,024 stages x 4,096
// micro-batches, are test_sim_svg.cpp's; the trace vocabulary is
// test_trace.cpp's.)
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE simulate
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/simulate.hpp"
#include "pipe/timeline.hpp"
#include "test_util.hpp"

// WorkKind in BOOST_TEST messages, by name (found by ADL).
namespace libpipe {
std::ostream& operator<<(std::ostream& out, WorkKind kind) { return out << work_kind_name(kind); }
}  // namespace libpipe

using libpipe::Block;
using libpipe::StageCosts;
using libpipe::Timeline;
using libpipe::WorkKind;

namespace {

using pipe_test::error_of;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Blocks of one kind in a row, in order.
std::vector<Block> of_kind(const libpipe::TimelineRow& row, WorkKind kind) {
  std::vector<Block> r;
  for (const Block& b : row.blocks)
    if (b.kind == kind) r.push_back(b);
  return r;
}

const char* const kTrainingKinds[] = {"1f1b", "gpipe"};

}  // namespace

BOOST_AUTO_TEST_CASE(uniform_costs_give_the_closed_form_bubble) {
  // Equal stages: the bubble is (S-1)/(M+S-1) whatever the F:B:W ratio.
  const StageCosts ratios[] = {{1, 1, 0}, {1, 2, 0}, {1, 1, 1}, {2, 3, 1}, {0.5, 1.5, 0.25}};
  int cases = 0;
  for (const char* kind : kTrainingKinds)
    for (const StageCosts& c : ratios)
      for (int S = 1; S <= 16; ++S)
        for (int M = 1; M <= 32; ++M) {
          const auto r = libpipe::simulate(kind, S, M, {c});
          const double closed = static_cast<double>(S - 1) / (M + S - 1);
          BOOST_TEST_CONTEXT(kind << " S=" << S << " M=" << M << " F:B:W=" << c.forward << ":" << c.backward_input
                                  << ":" << c.backward_weight) {
            BOOST_TEST(std::fabs(r.bubble - closed) < 1e-9);
            BOOST_TEST(std::fabs(r.theoretical_bubble - closed) < 1e-12);
          }
          ++cases;
        }
  for (int S = 1; S <= 16; ++S)
    for (int M = 1; M <= 32; ++M) {
      const auto r = libpipe::simulate("inference", S, M, {{1.5, 0, 0}});
      BOOST_TEST(std::fabs(r.bubble - static_cast<double>(S - 1) / (M + S - 1)) < 1e-9,
                 "inference S=" << S << " M=" << M);
    }
  BOOST_TEST(cases == 2 * 5 * 16 * 32);
}

BOOST_AUTO_TEST_CASE(uniform_makespan_is_m_plus_s_minus_1_slots) {
  for (const char* kind : kTrainingKinds)
    for (int S : {1, 2, 3, 4, 7, 8, 16})
      for (int M : {1, 2, 3, 8, 13, 64}) {
        for (const StageCosts& c : {StageCosts{1, 1, 0}, StageCosts{1, 2, 0}, StageCosts{2, 3, 1}}) {
          const auto r = libpipe::simulate(kind, S, M, {c});
          const double slot = c.forward + c.backward_input + c.backward_weight;
          BOOST_TEST(r.makespan == (M + S - 1) * slot, kind << " S=" << S << " M=" << M);
          for (int s = 0; s < S; ++s) BOOST_TEST(r.busy[s] == M * slot);
        }
      }
  const auto inference = libpipe::simulate("inference", 4, 8, {{2, 5, 5}});
  BOOST_TEST(inference.makespan == (8 + 4 - 1) * 2.0);
  BOOST_TEST(inference.busy[3] == 8 * 2.0);
}

// ZB-H1 with W <= F: makespan M(F+B+W) + (S-1)(F+B-W), so with F = B = W the bubble (S-1)/(3M+S-1), a third of
// 1F1B's idle time.
BOOST_AUTO_TEST_CASE(zb_h1_closed_form) {
  const StageCosts ratios[] = {{1, 1, 1}, {1, 2, 1}, {2, 3, 1}, {1, 1, 0.5}, {0.5, 1.5, 0.25}};
  for (const StageCosts& c : ratios)
    for (int S = 1; S <= 12; ++S)
      for (int M = S; M <= 3 * S + 2; ++M) {
        const auto r = libpipe::simulate("zb-h1", S, M, {c});
        const double F = c.forward, B = c.backward_input, W = c.backward_weight;
        BOOST_TEST(std::fabs(r.makespan - (M * (F + B + W) + (S - 1) * (F + B - W))) < 1e-9,
                   "zb-h1 S=" << S << " M=" << M << " F:B:W=" << F << ":" << B << ":" << W);
      }
  for (int S = 2; S <= 8; ++S)
    for (int M = S; M <= 32; M += 3) {
      const auto zb = libpipe::simulate("zb-h1", S, M, {{1, 1, 1}});
      const auto f1b = libpipe::simulate("1f1b", S, M, {{1, 1, 1}});
      BOOST_TEST(std::fabs(zb.bubble - static_cast<double>(S - 1) / (3 * M + S - 1)) < 1e-9);
      BOOST_TEST(std::fabs(zb.theoretical_bubble - zb.bubble) < 1e-12);
      BOOST_TEST(zb.bubble < f1b.bubble);
      BOOST_TEST(zb.makespan < f1b.makespan);
    }
}

// Interleaved 1F1B with V chunks per stage, each chunk 1/V of a stage's work: the bubble shrinks V times, to the
// closed form (S-1)/(VM+S-1) for any F and B. ZB-V with F = B = W idles less than ZB-H1 and 1F1B at no more
// activation memory than 1F1B's (2S chunk micro-batches = S of a stage), once M >= 2S.
BOOST_AUTO_TEST_CASE(chunked_schedules_against_their_closed_forms) {
  for (int S = 1; S <= 8; ++S)
    for (int V = 1; V <= 4; ++V)
      for (int M = S; M <= 4 * S; M += S) {
        const auto r = libpipe::simulate("interleaved-1f1b", S, M, {{1.0 / V, 2.0 / V, 0}}, 0, false, V);
        BOOST_TEST(std::fabs(r.bubble - static_cast<double>(S - 1) / (V * M + S - 1)) < 1e-9,
                   "interleaved-1f1b S=" << S << " V=" << V << " M=" << M << ": " << r.bubble);
        BOOST_TEST(std::fabs(r.theoretical_bubble - r.bubble) < 1e-9);
      }
  for (int S = 2; S <= 8; ++S)
    for (int M = 2 * S; M <= 4 * S; M += S) {
      const auto zbv = libpipe::simulate("zb-v", S, M, {{0.5, 0.5, 0.5}}, 0, false);
      const auto zbh1 = libpipe::simulate("zb-h1", S, M, {{1, 1, 1}});
      const auto f1b = libpipe::simulate("1f1b", S, M, {{1, 2, 0}});
      BOOST_TEST(zbv.bubble < zbh1.bubble, "zb-v S=" << S << " M=" << M << ": " << zbv.bubble << " vs " << zbh1.bubble);
      BOOST_TEST(zbv.bubble < f1b.bubble);
      BOOST_TEST(std::isnan(zbv.theoretical_bubble));
      for (int s = 0; s < S; ++s) BOOST_TEST(zbv.peak_activations[s] <= 2 * f1b.peak_activations[0]);
    }
}

// Activations held at once, per stage: gpipe all M; 1f1b S-s (its warm-up), at most M; zb-h1 S on every stage
// (warm-up S-s plus W deferred by s): 1f1b's peak, spread to every stage.
BOOST_AUTO_TEST_CASE(peak_activations_per_schedule) {
  for (int S = 1; S <= 6; ++S)
    for (int M = 1; M <= 3 * S; ++M) {
      const auto gpipe = libpipe::simulate("gpipe", S, M, {{1, 2, 0}});
      const auto f1b = libpipe::simulate("1f1b", S, M, {{1, 2, 0}});
      const auto inference = libpipe::simulate("inference", S, M, {{1, 0, 0}});
      BOOST_TEST_REQUIRE(gpipe.peak_activations.size() == static_cast<std::size_t>(S));
      for (int s = 0; s < S; ++s) {
        BOOST_TEST(gpipe.peak_activations[s] == M, "gpipe S=" << S << " M=" << M << " stage " << s);
        BOOST_TEST(f1b.peak_activations[s] == std::min(S - s, M), "1f1b S=" << S << " M=" << M << " stage " << s);
        BOOST_TEST(inference.peak_activations[s] == 1);
      }
      if (M < S) continue;
      const auto zb = libpipe::simulate("zb-h1", S, M, {{1, 1, 1}});
      for (int s = 0; s < S; ++s) BOOST_TEST(zb.peak_activations[s] == S, "zb-h1 S=" << S << " M=" << M << " stage " << s);
    }
}

BOOST_AUTO_TEST_CASE(a_slow_stage_dominates) {
  // Stage 2 of 5 costs three times the others: the pipeline runs at its pace.
  std::vector<StageCosts> costs(5, StageCosts{1, 2, 0});
  costs[2] = {3, 6, 0};
  for (const char* kind : kTrainingKinds)
    for (int M : {1, 4, 16, 64}) {
      const auto r = libpipe::simulate(kind, 5, M, costs);
      BOOST_TEST_CONTEXT(kind << " M=" << M) {
        BOOST_TEST(r.makespan >= M * 9.0);
        // Monotone: no faster than if every stage were as slow as the slowest.
        BOOST_TEST(r.makespan <= (M + 5 - 1) * 9.0);
        BOOST_TEST(r.busy[2] == M * 9.0);
        BOOST_TEST(r.busy[0] == M * 3.0);
        // One micro-batch runs through the stages one after the other: (S-1)/S either way.
        if (M > 1) BOOST_TEST(r.bubble > r.theoretical_bubble);
        if (M == 1) BOOST_TEST(std::fabs(r.bubble - 0.8) < 1e-12);
      }
    }
  // With many micro-batches the slow stage is nearly always busy.
  const auto r = libpipe::simulate("1f1b", 5, 256, costs);
  BOOST_TEST(r.busy[2] / r.makespan > 0.95);
}

BOOST_AUTO_TEST_CASE(latency_is_paid_on_every_hop) {
  // 2 stages, 1 micro-batch: F on stage 0, message, F and B on stage 1,
  // message, B on stage 0.
  const auto r = libpipe::simulate("1f1b", 2, 1, {{1, 2, 0}}, 0.5);
  BOOST_TEST(r.makespan == 1 + 0.5 + 1 + 2 + 0.5 + 2);
  // One stage sends nothing.
  BOOST_TEST(libpipe::simulate("1f1b", 1, 4, {{1, 2, 0}}, 10).makespan == 12);
  // Latency never shortens a step.
  for (const char* kind : {"1f1b", "gpipe", "inference"})
    BOOST_TEST(libpipe::simulate(kind, 6, 9, {{1, 2, 0}}, 0.3).makespan >
               libpipe::simulate(kind, 6, 9, {{1, 2, 0}}).makespan);
}

BOOST_AUTO_TEST_CASE(the_timeline_honours_the_dependencies) {
  for (const char* kind : {"1f1b", "gpipe", "inference"}) {
    const int S = 5, M = 7;
    const auto r = libpipe::simulate(kind, S, M, {{1, 2, 0.5}}, 0.25);
    const Timeline& t = r.timeline;
    BOOST_TEST_REQUIRE(t.rows.size() == static_cast<std::size_t>(S));
    std::vector<std::vector<Block>> fwd(S), bwd(S);
    for (int s = 0; s < S; ++s) {
      BOOST_TEST(t.rows[s].name == "stage " + std::to_string(s));
      const auto& blocks = t.rows[s].blocks;
      for (std::size_t i = 1; i < blocks.size(); ++i)
        BOOST_TEST(blocks[i].start >= blocks[i - 1].end);  // one at a time
      fwd[s] = of_kind(t.rows[s], WorkKind::Forward);
      bwd[s] = of_kind(t.rows[s], WorkKind::BackwardInput);
      BOOST_TEST(fwd[s].size() == static_cast<std::size_t>(M));
      BOOST_TEST(bwd[s].size() == (std::string(kind) == "inference" ? 0u : static_cast<std::size_t>(M)));
    }
    for (int s = 1; s < S; ++s)
      for (const Block& f : fwd[s]) {
        const auto prev = std::find_if(fwd[s - 1].begin(), fwd[s - 1].end(),
                                       [&](const Block& b) { return b.micro_batch == f.micro_batch; });
        BOOST_TEST_REQUIRE(bool(prev != fwd[s - 1].end()));
        BOOST_TEST(f.start >= prev->end + 0.25, kind << " F" << f.micro_batch << " on stage " << s);
      }
    for (int s = 0; s + 1 < S && !bwd[s].empty(); ++s)
      for (const Block& b : bwd[s]) {
        const auto next = std::find_if(bwd[s + 1].begin(), bwd[s + 1].end(),
                                       [&](const Block& x) { return x.micro_batch == b.micro_batch; });
        BOOST_TEST_REQUIRE(bool(next != bwd[s + 1].end()));
        // The gradient leaves after B and W of the next stage.
        BOOST_TEST(b.start >= next->end + 0.5 + 0.25, kind << " B" << b.micro_batch << " on stage " << s);
      }
  }
}

BOOST_AUTO_TEST_CASE(errors_are_one_clear_line) {
  BOOST_TEST(contains(error_of([] { libpipe::simulate("zb", 2, 2, {{}}); }), "unknown pipeline schedule 'zb'"));
  BOOST_TEST(error_of([] { libpipe::simulate("1f1b", 0, 2, {{}}); }) ==
             "a pipeline schedule needs at least 1 stage, got 0");
  BOOST_TEST(error_of([] {
               libpipe::simulate("1f1b", 3, 2, {{}, {}});
             }) == "simulate: 2 cost entries for 3 stages (give one per stage, or one for all)");
  BOOST_TEST(error_of([] {
               libpipe::simulate("1f1b", 2, 2, {{1, 2, 0}, {1, -2, 0}});
             }) == "simulate: the backward-input cost of stage 1 must be a finite number >= 0, got -2");
  BOOST_TEST(contains(error_of([] { libpipe::simulate("gpipe", 2, 2, {{}}, -1); }), "point-to-point latency"));
}

BOOST_AUTO_TEST_CASE(chrome_trace_reads_rows_names_and_blocks) {
  const std::string trace = R"({"traceEvents": [
    {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "rank 1"}},
    {"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "rank 0"}},
    {"ph": "M", "name": "thread_name", "pid": 0, "tid": 7, "args": {"name": "comm"}},
    {"ph": "X", "name": "F0", "cat": "forward", "pid": 1, "tid": 0, "ts": 1100, "dur": 100, "args": {"micro_batch": 0}},
    {"ph": "X", "name": "F0", "cat": "forward", "pid": 0, "tid": 0, "ts": 1000, "dur": 100, "args": {"micro_batch": 0}},
    {"ph": "X", "name": "SA0", "cat": "send_activation", "pid": 0, "tid": 7, "ts": 1100, "dur": 5,
     "args": {"micro_batch": 0}},
    {"ph": "X", "name": "B0", "cat": "backward_input", "pid": 1, "tid": 0, "ts": 1200, "dur": 200,
     "args": {"micro_batch": 0}},
    {"ph": "B", "name": "recv_grad", "pid": 0, "tid": 0, "ts": 1100},
    {"ph": "E", "pid": 0, "tid": 0, "ts": 1405},
    {"ph": "X", "name": "optimizer_step", "pid": 0, "tid": 0, "ts": 1600, "dur": 50},
    {"ph": "i", "name": "marker", "pid": 0, "tid": 0, "ts": 1500},
    {"ph": "C", "name": "memory", "pid": 0, "ts": 1500, "args": {"bytes": 5}}
  ], "displayTimeUnit": "ms"})";
  const Timeline t = libpipe::timeline_from_chrome_trace(trace);
  BOOST_TEST_REQUIRE(t.rows.size() == 3u);
  BOOST_TEST(t.rows[0].name == "rank 0: tid 0");  // pid 0 has two threads, only one named
  BOOST_TEST(t.rows[1].name == "rank 0: comm");
  BOOST_TEST(t.rows[2].name == "rank 1");
  BOOST_TEST(t.block_count() == 6u);
  BOOST_TEST(t.time_unit == "s");
  const auto& r0 = t.rows[0].blocks;
  BOOST_TEST_REQUIRE(r0.size() == 3u);
  BOOST_TEST(r0[0].kind == WorkKind::Forward);
  BOOST_TEST(r0[0].start == 0.0);
  BOOST_TEST(std::fabs(r0[0].end - 100e-6) < 1e-15);
  BOOST_TEST(r0[0].micro_batch == 0);
  BOOST_TEST(t.label(r0[0]) == "F0");
  BOOST_TEST(r0[1].kind == WorkKind::RecvGrad);  // from the name: no cat
  BOOST_TEST(std::fabs(r0[1].end - 405e-6) < 1e-15);
  BOOST_TEST(r0[2].kind == WorkKind::OptimizerStep);
  BOOST_TEST(r0[2].micro_batch == -1);
  BOOST_TEST(t.rows[1].blocks[0].kind == WorkKind::SendActivation);
  BOOST_TEST(t.rows[2].blocks[1].kind == WorkKind::BackwardInput);
  BOOST_TEST(std::fabs(t.end() - 650e-6) < 1e-15);

  // pipe-train --trace: one process, a thread per rank, its categories.
  const Timeline run = libpipe::timeline_from_chrome_trace(R"json({"traceEvents": [
    {"ph": "M", "pid": 0, "name": "process_name", "args": {"name": "pipe-train"}},
    {"ph": "M", "pid": 0, "tid": 1, "name": "thread_name", "args": {"name": "stage 1 replica 0 (rank 1)"}},
    {"ph": "M", "pid": 0, "tid": 0, "name": "thread_name", "args": {"name": "stage 0 replica 0 (rank 0)"}},
    {"ph": "X", "pid": 0, "tid": 1, "cat": "recv_activation", "name": "recv_activation 0", "ts": 0, "dur": 9,
     "args": {"micro_batch": 0}},
    {"ph": "X", "pid": 0, "tid": 0, "cat": "send_activation", "name": "send_activation 0", "ts": 8, "dur": 1,
     "args": {"micro_batch": 0}},
    {"ph": "X", "pid": 0, "tid": 0, "cat": "reduce_tied_grads", "name": "reduce_tied_grads", "ts": 20, "dur": 2,
     "args": {"micro_batch": -1}}], "displayTimeUnit": "ms"})json");
  BOOST_TEST_REQUIRE(run.rows.size() == 2u);
  BOOST_TEST(run.rows[0].name == "stage 0 replica 0 (rank 0)");
  BOOST_TEST(run.rows[1].name == "stage 1 replica 0 (rank 1)");
  BOOST_TEST(run.rows[0].blocks[0].kind == WorkKind::SendActivation);
  BOOST_TEST(run.rows[0].blocks[1].kind == WorkKind::ReduceTiedGrads);
  BOOST_TEST(run.rows[0].blocks[1].micro_batch == -1);
  BOOST_TEST(run.rows[1].blocks[0].kind == WorkKind::RecvActivation);

  // A bare array; rows ordered by sort index, then pid.
  const Timeline bare = libpipe::timeline_from_chrome_trace(R"([
    {"ph": "M", "name": "thread_sort_index", "pid": 3, "tid": 1, "args": {"sort_index": -1}},
    {"ph": "X", "name": "forward", "pid": 3, "tid": 2, "ts": 5, "dur": 1},
    {"ph": "X", "name": "backward_input", "pid": 3, "tid": 1, "ts": 6, "dur": 2}])");
  BOOST_TEST_REQUIRE(bare.rows.size() == 2u);
  BOOST_TEST(bare.rows[0].name == "pid 3 tid 1");
  BOOST_TEST(bare.rows[0].blocks[0].kind == WorkKind::BackwardInput);
  BOOST_TEST(bare.rows[1].blocks[0].kind == WorkKind::Forward);
}

BOOST_AUTO_TEST_CASE(chrome_trace_errors) {
  BOOST_TEST(contains(error_of([] { libpipe::timeline_from_chrome_trace("{\"traceEvents\": [}"); }),
                      "chrome trace: invalid JSON: "));
  BOOST_TEST(error_of([] { libpipe::timeline_from_chrome_trace("{\"events\": []}"); }) ==
             "chrome trace: expected an array of events or an object with a \"traceEvents\" array");
  BOOST_TEST(error_of([] { libpipe::timeline_from_chrome_trace(R"([{"ph": "X", "name": "F1", "dur": 3}])"); }) ==
             "chrome trace: event 0 ('F1') has no numeric \"ts\"");
  const std::string msg = error_of([] { libpipe::timeline_from_chrome_trace("[1, 2"); });
  BOOST_TEST(msg.find('\n') == std::string::npos);
}

BOOST_AUTO_TEST_CASE(chrome_trace_round_trip) {
  const auto r = libpipe::simulate("gpipe", 3, 4, {{1, 2, 0.5}}, 0.25);
  const Timeline back = libpipe::timeline_from_chrome_trace(libpipe::to_chrome_trace(r.timeline));
  BOOST_TEST_REQUIRE(back.rows.size() == r.timeline.rows.size());
  for (std::size_t s = 0; s < back.rows.size(); ++s) {
    BOOST_TEST(back.rows[s].name == r.timeline.rows[s].name);
    BOOST_TEST_REQUIRE(back.rows[s].blocks.size() == r.timeline.rows[s].blocks.size());
    for (std::size_t i = 0; i < back.rows[s].blocks.size(); ++i) {
      const Block &a = r.timeline.rows[s].blocks[i], &b = back.rows[s].blocks[i];
      BOOST_TEST(a.kind == b.kind);
      BOOST_TEST(a.micro_batch == b.micro_batch);
      BOOST_TEST(std::fabs(a.start - b.start) < 1e-9);
      BOOST_TEST(std::fabs(a.end - b.end) < 1e-9);
    }
  }
  BOOST_TEST(back.label(back.rows[0].blocks[0]) == "F0");
  BOOST_TEST(back.time_unit == "units");
}
