// Pipeline schedules against DeepSpeed's TrainSchedule / InferenceSchedule
// (step counts, buffer counts, the order of compute: warm-up forwards, steady
// one-forward-one-backward, cool-down backwards), against their memory and
// bubble properties, and against the checker: every generated schedule passes,
// and each kind of broken schedule is caught with its exact message.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE schedule
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/schedule.hpp"
#include "test_util.hpp"

using libpipe::Instruction;
using libpipe::WorkKind;
using libpipe::Schedule;
using Lines = std::vector<std::string>;
using Ints = std::vector<int>;

namespace {

using pipe_test::error_of;

std::vector<Schedule> all_stages(const std::string& kind, int S, int M) {
  std::vector<Schedule> v;
  for (int s = 0; s < S; ++s) v.push_back(libpipe::make_schedule(kind, S, M, s));
  return v;
}

Lines step_texts(const Schedule& s) {
  Lines r;
  for (const auto& step : s.steps) r.push_back(libpipe::to_text(step));
  return r;
}

// Removes the instruction printed as `text` from step `t` and returns it, so
// that tests can break a schedule one instruction at a time.
Instruction take(Schedule& s, int t, const std::string& text) {
  auto& step = s.steps.at(t);
  auto it = std::find_if(step.begin(), step.end(), [&](const Instruction& i) { return libpipe::to_text(i) == text; });
  if (it == step.end()) throw std::logic_error("test bug: no " + text + " in step " + std::to_string(t));
  Instruction i = *it;
  step.erase(it);
  return i;
}

void put(Schedule& s, int t, int index, const Instruction& i) {
  auto& step = s.steps.at(t);
  if (index > static_cast<int>(step.size()))
    throw std::logic_error("test bug: step " + std::to_string(t) + " is short");
  step.insert(step.begin() + index, i);
}

// The compute a stage runs, in order: "F0 F1 B0 ...".
std::string compute_order(const Schedule& s) {
  std::string r;
  for (const auto& step : s.steps)
    for (const auto& i : step)
      if (i.kind == WorkKind::Forward || i.kind == WorkKind::BackwardInput)
        r += (r.empty() ? "" : " ") + libpipe::to_text(i);
  return r;
}

int count(const Schedule& s, WorkKind k) {
  int n = 0;
  for (const auto& step : s.steps)
    for (const auto& i : step) n += i.kind == k;
  return n;
}

}  // namespace

// DeepSpeed's step model: a step is half a forward+backward slot, B and W together, every message within a step.
const std::vector<std::string> kStepKinds = {"inference", "gpipe", "1f1b"};

BOOST_AUTO_TEST_CASE(kinds_and_argument_errors) {
  const std::string known = "known schedules: inference, gpipe, 1f1b, zb-h1, interleaved-1f1b, zb-v";
  BOOST_TEST(libpipe::schedule_kinds() == Lines({"inference", "gpipe", "1f1b", "zb-h1", "interleaved-1f1b", "zb-v"}),
             boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("1F1B", 4, 8, 0); }),
                    "unknown pipeline schedule '1F1B' (did you mean '1f1b'?); " + known);
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("zb-h2", 4, 8, 0); }),
                    "unknown pipeline schedule 'zb-h2' (did you mean 'zb-h1'?); " + known);
  // Virtual stages: each kind says which V it runs.
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("1f1b", 4, 8, 0, 2); }),
                    "the 1f1b schedule runs 1 chunk per stage, not 2; virtual stages need interleaved-1f1b or zb-v");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("zb-v", 4, 8, 0, 3); }),
                    "the zb-v schedule runs 2 chunks per stage, not 3");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("interleaved-1f1b", 4, 6, 0); }),
                    "the interleaved-1f1b schedule needs the micro-batches to be a multiple of the stages, got 6 "
                    "micro-batches for 4 stages");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("zb-v", 4, 3, 0); }),
                    "the zb-v schedule needs at least as many micro-batches as stages (M >= S), got 3 micro-batches for "
                    "4 stages");
  BOOST_CHECK_EQUAL(libpipe::schedule_virtual_stages("interleaved-1f1b", 0), 2);
  BOOST_CHECK_EQUAL(libpipe::schedule_virtual_stages("interleaved-1f1b", 5), 5);
  BOOST_CHECK_EQUAL(libpipe::schedule_virtual_stages("zb-v", 0), 2);
  BOOST_CHECK_EQUAL(libpipe::schedule_virtual_stages("gpipe", 0), 1);
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("1f1b", 0, 8, 0); }),
                    "a pipeline schedule needs at least 1 stage, got 0");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("gpipe", 2, 0, 0); }),
                    "a pipeline schedule needs at least 1 micro-batch, got 0");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("1f1b", 4, 8, 4); }),
                    "stage 4 is outside the pipeline's 4 stages (0..3)");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("inference", 1, 8, -1); }),
                    "stage -1 is outside the pipeline's 1 stage (0..0)");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_checked_schedules("pipedream", 4, 8); }),
                    "unknown pipeline schedule 'pipedream'; " + known);
  BOOST_CHECK_EQUAL(error_of([] { libpipe::theoretical_bubble("1f1b", 4, 0); }),
                    "a pipeline schedule needs at least 1 micro-batch, got 0");
  BOOST_CHECK(libpipe::is_training_schedule("1f1b") && libpipe::is_training_schedule("gpipe"));
  BOOST_CHECK(!libpipe::is_training_schedule("inference"));
}

BOOST_AUTO_TEST_CASE(instruction_text) {
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::LoadMicroBatch, 3, 1}), "L3");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::Forward, 3, 1}), "F3");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::BackwardInput, 3, 1}), "B3");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::BackwardWeight, 3, 1}), "W3");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::SendActivation, 3, 1}), "SA3");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::RecvActivation, 3, 1}), "RA3");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::SendGrad, 3, 1}), "SG3");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::RecvGrad, 12, 1}), "RG12");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::ReduceTiedGrads}), "RT");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::ReduceGrads}), "RD");
  BOOST_CHECK_EQUAL(libpipe::to_text(Instruction{WorkKind::OptimizerStep}), "OPT");
  BOOST_CHECK_EQUAL(libpipe::to_text(libpipe::Step{}), "");
  BOOST_CHECK_EQUAL(libpipe::to_text(libpipe::Step{
                        {WorkKind::RecvActivation, 2, 0}, {WorkKind::Forward, 2, 0}, {WorkKind::SendActivation, 1, 1}}),
                    "RA2 F2 SA1");
}

// DeepSpeed's TrainSchedule for 2 stages and 3 micro-batches, worked out by
// hand from _step_to_micro_batch: stage 0 forwards in even steps, stage 1 in
// odd ones; a result is sent at the start of the step after it is computed.
BOOST_AUTO_TEST_CASE(one_f_one_b_two_stages_three_micro_batches) {
  const auto v = libpipe::make_checked_schedules("1f1b", 2, 3);
  BOOST_TEST(step_texts(v[0]) ==
                 Lines({"L0 F0", "SA0", "L1 F1", "SA1 RG0 B0 W0", "L2 F2", "SA2 RG1 B1 W1", "", "RG2 B2 W2 RT RD OPT"}),
             boost::test_tools::per_element());
  BOOST_TEST(step_texts(v[1]) ==
                 Lines({"", "L0 RA0 F0", "B0 W0", "SG0 L1 RA1 F1", "B1 W1", "SG1 L2 RA2 F2", "B2 W2", "SG2 RT RD OPT"}),
             boost::test_tools::per_element());
  // Buffers: micro-batch m in slot m % num_buffers, 2 slots on both stages.
  BOOST_CHECK_EQUAL(v[0].num_buffers, 2);
  BOOST_CHECK_EQUAL(v[1].num_buffers, 2);
  BOOST_CHECK(v[0].steps[4][1] == (Instruction{WorkKind::Forward, 2, 0}));
  BOOST_CHECK(v[1].steps[3][0] == (Instruction{WorkKind::SendGrad, 0, 0}));
  BOOST_CHECK(v[1].steps[3][2] == (Instruction{WorkKind::RecvActivation, 1, 1}));
  BOOST_CHECK(v[0].steps[7][3] == (Instruction{WorkKind::ReduceTiedGrads, -1, -1}));

  BOOST_CHECK_EQUAL(libpipe::format_grid(v),
                    "step  stage 0              stage 1\n"
                    "0     L0 F0                .\n"
                    "1     SA0                  L0 RA0 F0\n"
                    "2     L1 F1                B0 W0\n"
                    "3     SA1 RG0 B0 W0        SG0 L1 RA1 F1\n"
                    "4     L2 F2                B1 W1\n"
                    "5     SA2 RG1 B1 W1        SG1 L2 RA2 F2\n"
                    "6     .                    B2 W2\n"
                    "7     RG2 B2 W2 RT RD OPT  SG2 RT RD OPT\n");
}

BOOST_AUTO_TEST_CASE(gpipe_and_inference_small_cases) {
  const auto g = libpipe::make_checked_schedules("gpipe", 3, 2);
  BOOST_CHECK_EQUAL(libpipe::format_grid(g),
                    "step  stage 0              stage 1        stage 2\n"
                    "0     L0 F0                .              .\n"
                    "1     SA0 L1 F1            RA0 F0         .\n"
                    "2     SA1                  SA0 RA1 F1     L0 RA0 F0\n"
                    "3     .                    SA1            L1 RA1 F1\n"
                    "4     .                    .              B0 W0\n"
                    "5     .                    RG0 B0 W0      SG0 B1 W1\n"
                    "6     RG0 B0 W0            SG0 RG1 B1 W1  SG1\n"
                    "7     RG1 B1 W1 RT RD OPT  SG1 RT RD OPT  RT RD OPT\n");
  const auto inf = libpipe::make_checked_schedules("inference", 3, 3);
  BOOST_CHECK_EQUAL(libpipe::format_grid(inf),
                    "step  stage 0    stage 1     stage 2\n"
                    "0     L0 F0      .           .\n"
                    "1     SA0 L1 F1  RA0 F0      .\n"
                    "2     SA1 L2 F2  SA0 RA1 F1  L0 RA0 F0\n"
                    "3     SA2        SA1 RA2 F2  L1 RA1 F1\n"
                    "4     .          SA2         L2 RA2 F2\n");
  // One stage: it is both first and last, so it loads once and talks to nobody.
  BOOST_TEST(
      step_texts(libpipe::make_schedule("1f1b", 1, 2, 0)) == Lines({"L0 F0", "B0 W0", "L1 F1", "B1 W1 RT RD OPT"}),
      boost::test_tools::per_element());
}

// Counts and structure for every S in 1..8 and M in 1..16, and every kind
// passes the checker.
BOOST_AUTO_TEST_CASE(every_small_pipeline_is_well_formed) {
  for (const auto& kind : kStepKinds)
    for (int S = 1; S <= 8; ++S)
      for (int M = 1; M <= 16; ++M) {
        BOOST_TEST_CONTEXT(kind << " S=" << S << " M=" << M) {
          std::vector<Schedule> v;
          BOOST_CHECK_NO_THROW(v = libpipe::make_checked_schedules(kind, S, M));
          BOOST_REQUIRE_EQUAL(v.size(), static_cast<size_t>(S));
          const bool training = kind != "inference";
          for (int s = 0; s < S; ++s) {
            const Schedule& sch = v[s];
            BOOST_CHECK_EQUAL(sch.kind, kind);
            BOOST_CHECK_EQUAL(sch.stage, s);
            BOOST_CHECK_EQUAL(sch.steps.size(), static_cast<size_t>(training ? 2 * (M + S - 1) : M + S - 1));
            const int buffers = kind == "1f1b" ? std::max(2, std::min(S - s, M)) : kind == "gpipe" ? M : 2;
            BOOST_CHECK_EQUAL(sch.num_buffers, buffers);
            BOOST_CHECK_EQUAL(count(sch, WorkKind::Forward), M);
            BOOST_CHECK_EQUAL(count(sch, WorkKind::BackwardInput), training ? M : 0);
            BOOST_CHECK_EQUAL(count(sch, WorkKind::BackwardWeight), training ? M : 0);
            BOOST_CHECK_EQUAL(count(sch, WorkKind::RecvActivation), s == 0 ? 0 : M);      // the first never receives
            BOOST_CHECK_EQUAL(count(sch, WorkKind::SendActivation), s == S - 1 ? 0 : M);  // the last never sends
            BOOST_CHECK_EQUAL(count(sch, WorkKind::LoadMicroBatch), s == 0 || s == S - 1 ? M : 0);
            if (training) {
              // The step ends with the reductions and the optimizer, in this order.
              const auto& last = sch.steps.back();
              BOOST_REQUIRE_GE(last.size(), 3u);
              BOOST_CHECK_EQUAL(libpipe::to_text(libpipe::Step(last.end() - 3, last.end())), "RT RD OPT");
              BOOST_CHECK_EQUAL(count(sch, WorkKind::OptimizerStep), 1);
              // B and W of a micro-batch sit together, B first.
              for (const auto& step : sch.steps)
                for (size_t i = 0; i < step.size(); ++i)
                  if (step[i].kind == WorkKind::BackwardInput) {
                    BOOST_REQUIRE_LT(i + 1, step.size());
                    BOOST_CHECK(step[i + 1] ==
                                (Instruction{WorkKind::BackwardWeight, step[i].micro_batch, step[i].buffer}));
                  }
            }
          }
        }
      }
}

// The order DeepSpeed's 1F1B computes in, on stage s: min(S-s, M) warm-up
// forwards, then one backward and one forward in turn, then the remaining
// backwards; gpipe runs all forwards, then all backwards.
BOOST_AUTO_TEST_CASE(compute_order_is_deepspeeds) {
  for (int S = 1; S <= 8; ++S)
    for (int M = 1; M <= 16; ++M)
      for (int s = 0; s < S; ++s) {
        const int warm = std::min(S - s, M);
        std::string one_f_one_b, gpipe;
        for (int m = 0; m < warm; ++m) one_f_one_b += " F" + std::to_string(m);
        for (int m = 0; m < M; ++m) {
          one_f_one_b += " B" + std::to_string(m);
          if (m + warm < M) one_f_one_b += " F" + std::to_string(m + warm);
        }
        for (int m = 0; m < M; ++m) gpipe += " F" + std::to_string(m);
        for (int m = 0; m < M; ++m) gpipe += " B" + std::to_string(m);
        BOOST_TEST_CONTEXT("S=" << S << " M=" << M << " stage " << s) {
          BOOST_CHECK_EQUAL(compute_order(libpipe::make_schedule("1f1b", S, M, s)), one_f_one_b.substr(1));
          BOOST_CHECK_EQUAL(compute_order(libpipe::make_schedule("gpipe", S, M, s)), gpipe.substr(1));
        }
      }
}

// The memory property of 1F1B: stage s never holds more than min(S-s, M)
// micro-batches between forward and backward, where gpipe holds all M; the
// stage's buffers always suffice.
BOOST_AUTO_TEST_CASE(in_flight_micro_batches) {
  for (int S = 1; S <= 8; ++S)
    for (int M = 1; M <= 16; ++M)
      for (int s = 0; s < S; ++s) {
        BOOST_TEST_CONTEXT("S=" << S << " M=" << M << " stage " << s) {
          const Schedule a = libpipe::make_schedule("1f1b", S, M, s);
          const Schedule g = libpipe::make_schedule("gpipe", S, M, s);
          const Schedule i = libpipe::make_schedule("inference", S, M, s);
          BOOST_CHECK_EQUAL(libpipe::peak_in_flight(a), std::min(S - s, M));
          BOOST_CHECK_EQUAL(libpipe::peak_in_flight(g), M);
          BOOST_CHECK_EQUAL(libpipe::peak_in_flight(i), 1);
          BOOST_CHECK_LE(libpipe::peak_in_flight(a), a.num_buffers);
        }
      }
}

// With equal costs per micro-batch, a stage computes in 2M of the 2(M+S-1)
// training steps (M of the M+S-1 inference steps): the idle fraction is the
// theoretical bubble (S-1)/(M+S-1).
BOOST_AUTO_TEST_CASE(bubble_matches_the_grid) {
  BOOST_CHECK_CLOSE(libpipe::theoretical_bubble("1f1b", 4, 8), 3.0 / 11.0, 1e-12);
  BOOST_CHECK_EQUAL(libpipe::theoretical_bubble("gpipe", 1, 5), 0.0);
  for (const auto& kind : kStepKinds)
    for (int S = 1; S <= 8; ++S)
      for (int M = 1; M <= 16; ++M)
        for (int s = 0; s < S; ++s) {
          const Schedule sch = libpipe::make_schedule(kind, S, M, s);
          int idle = 0;
          for (const auto& step : sch.steps)
            idle += std::none_of(step.begin(), step.end(), [](const Instruction& i) {
              return i.kind == WorkKind::Forward || i.kind == WorkKind::BackwardInput;
            });
          BOOST_CHECK_CLOSE(static_cast<double>(idle) / sch.steps.size(), libpipe::theoretical_bubble(kind, S, M),
                            1e-9);
        }
}

// Every message is sent and received in the same step index, sends first: a
// step is atomic, so an engine may wait for all of a step's traffic at the end
// of the step (and then reuse any buffer) without deadlock.
BOOST_AUTO_TEST_CASE(messages_stay_within_a_step) {
  for (const auto& kind : kStepKinds)
    for (int S = 2; S <= 8; ++S)
      for (int M = 1; M <= 16; ++M) {
        const auto v = all_stages(kind, S, M);
        // (sender, receiver, micro-batch, direction) -> step
        std::map<std::tuple<int, int, int, int>, int> sent, received;
        for (int s = 0; s < S; ++s)
          for (int t = 0; t < static_cast<int>(v[s].steps.size()); ++t) {
            bool seen_non_send = false;
            for (const auto& i : v[s].steps[t]) {
              const bool send = i.kind == WorkKind::SendActivation || i.kind == WorkKind::SendGrad;
              BOOST_CHECK(!(send && seen_non_send));  // sends open the step
              seen_non_send |= !send;
              if (i.kind == WorkKind::SendActivation) sent[{s, s + 1, i.micro_batch, 0}] = t;
              if (i.kind == WorkKind::SendGrad) sent[{s, s - 1, i.micro_batch, 1}] = t;
              if (i.kind == WorkKind::RecvActivation) received[{s - 1, s, i.micro_batch, 0}] = t;
              if (i.kind == WorkKind::RecvGrad) received[{s + 1, s, i.micro_batch, 1}] = t;
            }
          }
        BOOST_TEST_CONTEXT(kind << " S=" << S << " M=" << M) {
          BOOST_CHECK(sent == received);
          BOOST_CHECK_NO_THROW(libpipe::check_messages_within_steps(v));
        }
      }
}

// A receive moved to a later step than its send: still a valid schedule for MPI (receives are posted ahead), but
// not for NCCL's step batches, and the check says which message.
BOOST_AUTO_TEST_CASE(message_across_steps_is_refused_for_step_batches) {
  auto v = all_stages("gpipe", 2, 1);
  auto& steps = v[1].steps;
  auto is_recv = [](const libpipe::Instruction& i) { return i.kind == WorkKind::RecvActivation; };
  std::size_t t = 0;
  while (t < steps.size() && std::none_of(steps[t].begin(), steps[t].end(), is_recv)) ++t;
  BOOST_TEST_REQUIRE(t < steps.size());
  // Stage 1 starts one step later: an empty step first, then its receive leads the next one.
  const auto at = std::find_if(steps[t].begin(), steps[t].end(), is_recv);
  const auto recv = *at;
  steps[t].erase(at);
  steps.insert(steps.begin() + static_cast<std::ptrdiff_t>(t), libpipe::Step{});
  steps[t + 1].insert(steps[t + 1].begin(), recv);
  BOOST_CHECK_NO_THROW(libpipe::check_schedules(v));
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_messages_within_steps(v); }),
                    "schedule: the activation of micro-batch 0 is sent by stage 0 at step " + std::to_string(t) +
                        " but received by stage 1 at step " + std::to_string(t + 1) +
                        ", so it cannot go in one step's batch of transfers (NCCL)");
}

BOOST_AUTO_TEST_CASE(printer_for_1f1b_4_stages_8_micro_batches) {
  const auto v = libpipe::make_checked_schedules("1f1b", 4, 8);
  BOOST_CHECK_EQUAL(libpipe::format_grid(v),
                    "step  stage 0              stage 1        stage 2        stage 3\n"
                    "0     L0 F0                .              .              .\n"
                    "1     SA0                  RA0 F0         .              .\n"
                    "2     L1 F1                SA0            RA0 F0         .\n"
                    "3     SA1                  RA1 F1         SA0            L0 RA0 F0\n"
                    "4     L2 F2                SA1            RA1 F1         B0 W0\n"
                    "5     SA2                  RA2 F2         SA1 RG0 B0 W0  SG0 L1 RA1 F1\n"
                    "6     L3 F3                SA2 RG0 B0 W0  SG0 RA2 F2     B1 W1\n"
                    "7     SA3 RG0 B0 W0        SG0 RA3 F3     SA2 RG1 B1 W1  SG1 L2 RA2 F2\n"
                    "8     L4 F4                SA3 RG1 B1 W1  SG1 RA3 F3     B2 W2\n"
                    "9     SA4 RG1 B1 W1        SG1 RA4 F4     SA3 RG2 B2 W2  SG2 L3 RA3 F3\n"
                    "10    L5 F5                SA4 RG2 B2 W2  SG2 RA4 F4     B3 W3\n"
                    "11    SA5 RG2 B2 W2        SG2 RA5 F5     SA4 RG3 B3 W3  SG3 L4 RA4 F4\n"
                    "12    L6 F6                SA5 RG3 B3 W3  SG3 RA5 F5     B4 W4\n"
                    "13    SA6 RG3 B3 W3        SG3 RA6 F6     SA5 RG4 B4 W4  SG4 L5 RA5 F5\n"
                    "14    L7 F7                SA6 RG4 B4 W4  SG4 RA6 F6     B5 W5\n"
                    "15    SA7 RG4 B4 W4        SG4 RA7 F7     SA6 RG5 B5 W5  SG5 L6 RA6 F6\n"
                    "16    .                    SA7 RG5 B5 W5  SG5 RA7 F7     B6 W6\n"
                    "17    RG5 B5 W5            SG5            SA7 RG6 B6 W6  SG6 L7 RA7 F7\n"
                    "18    .                    RG6 B6 W6      SG6            B7 W7\n"
                    "19    RG6 B6 W6            SG6            RG7 B7 W7      SG7\n"
                    "20    .                    RG7 B7 W7      SG7            .\n"
                    "21    RG7 B7 W7 RT RD OPT  SG7 RT RD OPT  RT RD OPT      RT RD OPT\n");
  // A broken schedule still prints: a stage with fewer steps shows ".".
  auto broken = v;
  broken[1].steps.resize(2);
  const std::string grid = libpipe::format_grid(broken);
  BOOST_CHECK_EQUAL(grid.substr(grid.rfind('\n', grid.size() - 2) + 1),
                    "21    RG7 B7 W7 RT RD OPT  .        RT RD OPT      RT RD OPT\n");
  BOOST_CHECK_EQUAL(error_of([] { libpipe::format_grid({}); }), "format_grid: no schedules given");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::format_grid({v[1]}); }),
                    "format_grid: the schedule at position 0 is for stage 1");
}

// ---------------------------------------------------------------------------
// The checker catches broken schedules, each with a message that names the
// stage, the step and the instruction.

namespace {
const std::string k1f1b23 = "1f1b schedule (2 stages, 3 micro-batches): ";
}

BOOST_AUTO_TEST_CASE(checker_catches_a_missing_send_or_receive) {
  auto v = all_stages("1f1b", 2, 3);
  take(v[0], 3, "SA1");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 1, step 3: RA1 has no matching SA1 on stage 0");

  v = all_stages("1f1b", 2, 3);
  take(v[0], 7, "RG2");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 1, step 7: SG2 has no matching RG2 on stage 0");

  // A message sent twice: the second one has nobody to receive it.
  v = all_stages("1f1b", 2, 3);
  put(v[0], 4, 0, Instruction{WorkKind::SendActivation, 1, 1});
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 0, step 4: SA1 has no matching RA1 on stage 1");
}

BOOST_AUTO_TEST_CASE(checker_catches_receives_out_of_order) {
  auto v = all_stages("1f1b", 2, 3);
  const Instruction ra1 = take(v[1], 3, "RA1");
  const Instruction ra2 = take(v[1], 5, "RA2");
  put(v[1], 3, 2, ra2);
  put(v[1], 5, 2, ra1);
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 +
                        "stage 1, step 3: RA2 would receive micro-batch 1 (SA1 of stage 0, step 3): messages from "
                        "stage 0 to stage 1 are received in the order they are sent");
}

BOOST_AUTO_TEST_CASE(checker_catches_compute_out_of_order) {
  // A backward moved before its forward.
  auto v = all_stages("1f1b", 2, 3);
  const Instruction b0 = take(v[1], 2, "B0"), w0 = take(v[1], 2, "W0");
  put(v[1], 0, 0, b0);
  put(v[1], 0, 1, w0);
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }), k1f1b23 + "stage 1, step 0: B0 runs before F0");

  // A forward before its input arrives.
  v = all_stages("1f1b", 2, 3);
  put(v[1], 3, 3, take(v[1], 3, "RA1"));  // SG0 L1 F1 RA1
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 1, step 3: F1 runs before its input is received (no RA1 before it)");

  // A forward on the first stage before its load.
  v = all_stages("1f1b", 2, 3);
  put(v[0], 2, 1, take(v[0], 2, "L1"));  // F1 L1
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 0, step 2: F1 runs before its input is loaded (no L1 before it)");

  // The last stage's labels are loaded after its forward.
  v = all_stages("1f1b", 2, 3);
  put(v[1], 1, 2, take(v[1], 1, "L0"));  // RA0 F0 L0
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 1, step 1: F0 runs before its labels are loaded (no L0 before it)");

  // A backward before its gradient arrives.
  v = all_stages("1f1b", 2, 3);
  put(v[0], 3, 2, take(v[0], 3, "RG0"));  // SA1 B0 RG0 W0
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 0, step 3: B0 runs before its output gradient is received (no RG0 before it)");

  // W before B.
  v = all_stages("1f1b", 2, 3);
  put(v[1], 4, 0, take(v[1], 4, "W1"));
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }), k1f1b23 + "stage 1, step 4: W1 runs before B1");

  // A gradient sent before the backward that computes it.
  v = all_stages("1f1b", 2, 3);
  take(v[1], 6, "B2");
  take(v[1], 6, "W2");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }), k1f1b23 + "stage 1, step 7: SG2 runs before B2");
}

BOOST_AUTO_TEST_CASE(checker_catches_buffer_misuse) {
  // Stage 0 given one buffer instead of DeepSpeed's two: micro-batch 1 would
  // overwrite micro-batch 0, whose backward has not run.
  auto v = all_stages("1f1b", 2, 3);
  v[0].num_buffers = 1;
  for (auto& step : v[0].steps)
    for (auto& i : step)
      if (i.buffer > 0) i.buffer = 0;
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 +
                        "stage 0, step 2: L1 reuses buffer 0 while micro-batch 0 still lives in it (still to "
                        "run: RG0 B0 W0)");

  // Four buffers on stage 0 of 1f1b S=4 are needed: with three, F3 lands on
  // micro-batch 0 whose gradient has not come back.
  v = all_stages("1f1b", 4, 8);
  v[0].num_buffers = 3;
  for (auto& step : v[0].steps)
    for (auto& i : step)
      if (i.buffer >= 0) i.buffer = i.micro_batch % 3;
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "1f1b schedule (4 stages, 8 micro-batches): stage 0, step 6: L3 reuses buffer 0 while micro-batch "
                    "0 still lives in it (still to run: RG0 B0 W0)");

  // One instruction pointing at the wrong buffer.
  v = all_stages("1f1b", 2, 3);
  v[1].steps[4][0].buffer = 0;  // B1 in buffer 0
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 1, step 4: B1 uses buffer 0 but micro-batch 1 lives in buffer 1");

  // Inference with one buffer is fine on the last stage (it never sends)...
  v = all_stages("inference", 2, 3);
  v[1].num_buffers = 1;
  for (auto& step : v[1].steps)
    for (auto& i : step) i.buffer = 0;
  BOOST_CHECK_NO_THROW(libpipe::check_schedules(v));
  // ...but not on a stage that still has to send its result.
  v = all_stages("inference", 2, 3);
  for (auto& step : v[0].steps)
    for (auto& i : step) i.buffer = 0;
  put(v[0], 1, 2, take(v[0], 1, "SA0"));  // L1 F1 SA0: micro-batch 0 is overwritten before it is sent
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "inference schedule (2 stages, 3 micro-batches): stage 0, step 1: L1 reuses buffer 0 while "
                    "micro-batch 0 still lives in it (still to run: SA0)");
}

BOOST_AUTO_TEST_CASE(checker_catches_a_deadlock) {
  // Stage 0 waits for the gradient before it sends the activation that the
  // gradient depends on.
  auto v = all_stages("1f1b", 2, 1);
  BOOST_TEST(step_texts(v[0]) == Lines({"L0 F0", "SA0", "", "RG0 B0 W0 RT RD OPT"}), boost::test_tools::per_element());
  put(v[0], 3, 1, take(v[0], 1, "SA0"));
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "1f1b schedule (2 stages, 1 micro-batch): deadlock: stage 0, step 3: RG0 waits for SG0 of stage 1 "
                    "(step 3); stage 1, step 1: RA0 waits for SA0 of stage 0 (step 3)");

  // Stages 1 and 2 wait for each other, and stage 0, which needs stage 1's
  // gradient, is named too: every blocked stage says what it waits for.
  v = all_stages("1f1b", 3, 1);
  BOOST_TEST(step_texts(v[1]) == Lines({"", "RA0 F0", "SA0", "", "RG0 B0 W0", "SG0 RT RD OPT"}),
             boost::test_tools::per_element());
  put(v[1], 4, 1, take(v[1], 2, "SA0"));  // RG0 SA0 B0 W0
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "1f1b schedule (3 stages, 1 micro-batch): deadlock: stage 0, step 5: RG0 waits for SG0 of stage 1 "
                    "(step 5); stage 1, step 4: RG0 waits for SG0 of stage 2 (step 4); stage 2, step 2: RA0 waits "
                    "for SA0 of stage 1 (step 4)");
}

BOOST_AUTO_TEST_CASE(checker_catches_twice_and_never) {
  auto v = all_stages("1f1b", 2, 3);
  put(v[0], 4, 2, Instruction{WorkKind::Forward, 1, 1});
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 0, step 4: F1 runs twice (first at step 2)");

  v = all_stages("inference", 2, 3);
  take(v[1], 3, "F2");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "inference schedule (2 stages, 3 micro-batches): stage 1: F2 never runs");

  // A micro-batch dropped altogether from a training run: the reductions
  // notice first; without them, the end of the run does.
  v = all_stages("1f1b", 1, 2);
  for (const char* t : {"L1", "F1"}) take(v[0], 2, t);
  for (const char* t : {"B1", "W1"}) take(v[0], 3, t);
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "1f1b schedule (1 stage, 2 micro-batches): stage 0, step 3: RT runs before W1");
  for (const char* t : {"RT", "RD", "OPT"}) take(v[0], 3, t);
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "1f1b schedule (1 stage, 2 micro-batches): stage 0: L1 never runs");
}

BOOST_AUTO_TEST_CASE(checker_catches_a_misplaced_optimizer_step) {
  // Stage 1's reductions and step moved before its last gradient is sent.
  auto v = all_stages("1f1b", 2, 3);
  for (const char* t : {"RT", "RD", "OPT"}) v[1].steps[6].push_back(take(v[1], 7, t));
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 1, step 6: OPT is not the last instruction: SG2 follows at step 7");

  // Stage 0's reductions before its last backward.
  v = all_stages("1f1b", 2, 3);
  for (const char* t : {"RT", "RD", "OPT"}) v[0].steps[6].push_back(take(v[0], 7, t));
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }), k1f1b23 + "stage 0, step 6: RT runs before W2");

  // OPT before RD.
  v = all_stages("gpipe", 2, 3);
  const int last = static_cast<int>(v[0].steps.size()) - 1;
  take(v[0], last, "RD");
  put(v[0], last, static_cast<int>(v[0].steps[last].size()), Instruction{WorkKind::ReduceGrads});
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "gpipe schedule (2 stages, 3 micro-batches): stage 0, step 7: OPT runs before RD");

  // No optimizer step at all.
  v = all_stages("1f1b", 2, 3);
  take(v[0], 7, "OPT");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k1f1b23 + "stage 0: OPT never runs (a training schedule ends with RT, RD, OPT)");
}

BOOST_AUTO_TEST_CASE(checker_catches_malformed_instructions) {
  auto v = all_stages("1f1b", 3, 2);
  const std::string k = "1f1b schedule (3 stages, 2 micro-batches): ";
  v[2].steps[3].push_back(Instruction{WorkKind::SendActivation, 0, 0});
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k + "stage 2, step 3: SA0 sends to the next stage, but this is the last stage");

  v = all_stages("1f1b", 3, 2);
  put(v[0], 0, 0, Instruction{WorkKind::RecvActivation, 0, 0});
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k + "stage 0, step 0: RA0 receives from the previous stage, but this is the first stage");

  v = all_stages("1f1b", 3, 2);
  put(v[1], 1, 0, Instruction{WorkKind::LoadMicroBatch, 0, 0});
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k + "stage 1, step 1: L0 loads data on a middle stage; only the first and last stages load");

  v = all_stages("1f1b", 3, 2);
  v[1].steps[1][1].micro_batch = 2;
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k + "stage 1, step 1: F2 names micro-batch 2, outside 0..1");

  v = all_stages("1f1b", 3, 2);
  v[1].steps[1][1].buffer = 3;
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k + "stage 1, step 1: F0 uses buffer 3, outside the stage's 2 buffers (0..1)");

  v = all_stages("1f1b", 3, 2);
  v[0].steps.back().back().micro_batch = 1;
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k + "stage 0, step 7: OPT carries micro-batch 1 and buffer -1; a step-wide instruction carries "
                        "neither (-1)");

  // Work kinds that are traced but never scheduled.
  for (WorkKind traced : {WorkKind::WaitSends, WorkKind::Checkpoint, WorkKind::Other}) {
    v = all_stages("1f1b", 3, 2);
    put(v[1], 1, 0, Instruction{traced, 0, 0});
    BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                      k + "stage 1, step 1: " + libpipe::to_text(Instruction{traced, 0, 0}) +
                          " is not a schedule instruction (work the engine traces, no schedule runs it)");
  }

  auto inf = all_stages("inference", 2, 2);
  inf[1].steps[2].push_back(Instruction{WorkKind::BackwardInput, 1, 1});
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(inf); }),
                    "inference schedule (2 stages, 2 micro-batches): stage 1, step 2: B1 has no place in a "
                    "forward-only schedule");
}

BOOST_AUTO_TEST_CASE(checker_refuses_inconsistent_sets_of_schedules) {
  BOOST_CHECK_EQUAL(error_of([] { libpipe::check_schedules({}); }), "check_schedules: no schedules given");
  auto v = all_stages("1f1b", 3, 2);
  const std::string k = "1f1b schedule (3 stages, 2 micro-batches): ";
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules({v[0], v[1]}); }), k + "got schedules for 2 stages");
  BOOST_CHECK_EQUAL(error_of([&] {
                      libpipe::check_schedules({v[0], v[2], v[1]});
                    }),
                    k + "the schedule at position 1 is for stage 2");
  v[2] = libpipe::make_schedule("gpipe", 3, 2, 2);
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    k + "stage 2 has a gpipe schedule (3 stages, 2 micro-batches) instead");
  v[0].kind = "zb";
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::check_schedules(v); }),
                    "unknown pipeline schedule 'zb' (did you mean 'zb-v'?); known schedules: inference, gpipe, 1f1b, "
                    "zb-h1, interleaved-1f1b, zb-v");
}

// ZB-H1: B and W apart, W deferred s micro-batches on stage s. Proven by the checker for every small case; one
// compute per step, 3M+S-1 steps, so S-1 idle steps per stage (the bubble (S-1)/(3M+S-1) with F = B = W); at most
// S micro-batches live per stage (1F1B's peak); W's in micro-batch order, as one stage accumulates gradients, so
// that losses stay bit-identical to one stage.
BOOST_AUTO_TEST_CASE(zb_h1_is_well_formed) {
  for (int S = 1; S <= 8; ++S)
    for (int M = S; M <= 3 * S + 4; ++M) {
      BOOST_TEST_CONTEXT("zb-h1 S=" << S << " M=" << M) {
        std::vector<Schedule> v;
        BOOST_REQUIRE_NO_THROW(v = libpipe::make_checked_schedules("zb-h1", S, M));
        for (int s = 0; s < S; ++s) {
          const Schedule& sch = v[s];
          BOOST_CHECK_EQUAL(sch.steps.size(), static_cast<size_t>(3 * M + S - 1));
          BOOST_CHECK_EQUAL(count(sch, WorkKind::Forward), M);
          BOOST_CHECK_EQUAL(count(sch, WorkKind::BackwardInput), M);
          BOOST_CHECK_EQUAL(count(sch, WorkKind::BackwardWeight), M);
          BOOST_CHECK_EQUAL(libpipe::peak_in_flight(sch), S);
          BOOST_CHECK_LE(libpipe::peak_in_flight(sch), sch.num_buffers);
          int idle = 0, next_w = 0, computes_per_step_max = 0;
          for (const auto& step : sch.steps) {
            int computes = 0;
            for (const auto& i : step) {
              const bool compute = i.kind == WorkKind::Forward || i.kind == WorkKind::BackwardInput ||
                                   i.kind == WorkKind::BackwardWeight;
              computes += compute;
              if (i.kind == WorkKind::BackwardWeight) BOOST_CHECK_EQUAL(i.micro_batch, next_w++);
            }
            idle += computes == 0;
            computes_per_step_max = std::max(computes_per_step_max, computes);
          }
          BOOST_CHECK_EQUAL(computes_per_step_max, 1);
          BOOST_CHECK_EQUAL(idle, S - 1);
          BOOST_CHECK_CLOSE(static_cast<double>(idle) / sch.steps.size(), libpipe::theoretical_bubble("zb-h1", S, M),
                            1e-9);
        }
      }
    }
  BOOST_CHECK_LT(libpipe::theoretical_bubble("zb-h1", 4, 8), libpipe::theoretical_bubble("1f1b", 4, 8) / 2);
  BOOST_CHECK_EQUAL(error_of([] { libpipe::make_schedule("zb-h1", 4, 3, 0); }),
                    "the zb-h1 schedule needs at least as many micro-batches as stages (M >= S), got 3 micro-batches "
                    "for 4 stages");
  // Its messages may cross steps, which a Comm that batches each step's transfers (NCCL) cannot run.
  BOOST_CHECK_THROW(libpipe::check_messages_within_steps(libpipe::make_checked_schedules("zb-h1", 4, 8)),
                    libpipe::Error);
}

// The text form reads back to the same steps, instructions and buffers for every generated schedule, and bad text
// is one line naming the file, line, step and token.
BOOST_AUTO_TEST_CASE(schedule_text_round_trips) {
  for (const std::string kind : {"gpipe", "1f1b", "zb-h1", "inference", "interleaved-1f1b", "zb-v"})
    for (int S = 1; S <= 4; ++S)
      for (int M = S; M <= S + 3; ++M) {
        if (kind == "interleaved-1f1b" && M % S != 0) continue;
        const auto all = libpipe::make_checked_schedules(kind, S, M);
        const auto back = libpipe::parse_schedules(libpipe::format_schedules(all), "t.txt");
        BOOST_TEST_REQUIRE(back.size() == all.size());
        for (int s = 0; s < S; ++s) {
          BOOST_TEST(back[s].micro_batches == M);
          BOOST_TEST(back[s].num_buffers == all[s].num_buffers);
          BOOST_TEST(back[s].virtual_stages == all[s].virtual_stages);
          BOOST_TEST((back[s].placement == all[s].placement));
          BOOST_TEST(back[s].steps == all[s].steps, kind << " S=" << S << " M=" << M << " stage " << s);
        }
        if (kind != "inference") libpipe::check_schedules(back);
      }
  auto error_of = [](const std::string& text) {
    try {
      libpipe::parse_schedules(text, "f.txt");
    } catch (const libpipe::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  BOOST_TEST(error_of("stage 0: L0 F0 | X3\n") ==
             "f.txt:1, step 1: 'X3' is not an instruction (L, F, B, W, SA, RA, SG, RG followed by a micro-batch and "
             "optionally c and a chunk; RT, RD, OPT)");
  BOOST_TEST(error_of("stage 0: F0c | RT\n") == "f.txt:1, step 0: 'F0c': 'c' needs a chunk number (F0c1)");
  BOOST_TEST(error_of("stage 0: F0\nvirtual-stages 2 looped\n") ==
             "f.txt:2: 'virtual-stages' must come before the first stage line");
  BOOST_TEST(error_of("virtual-stages 2 zigzag\nstage 0: F0\n") ==
             "f.txt:1: 'virtual-stages 2 zigzag': expected 'virtual-stages V looped' or 'virtual-stages V v-shape'");
  BOOST_TEST(error_of("# c\nstage 1: F0\n") ==
             "f.txt:2: expected 'stage 0 (buffers N): STEP | STEP | ...' (stages in order from 0)");
  BOOST_TEST(error_of("stage 0: F | RT\n") == "f.txt:1, step 0: 'F': F needs a micro-batch number (F0)");
  BOOST_TEST(error_of("stage 0: F0 | RT2\n") == "f.txt:1, step 1: 'RT2': RT takes no micro-batch");
}

// Virtual stages. interleaved-1f1b (looped chunks, Megatron's order) and zb-v (V-shaped chunks, list-scheduled) are
// proven by the checker for every small case; each stage runs F, B and W of every micro-batch on each of its
// chunks, W's in micro-batch order per chunk; zb-v holds at most 2S chunk activations per stage (1F1B's peak in
// bytes: S micro-batches of a whole stage).
BOOST_AUTO_TEST_CASE(chunked_schedules_are_well_formed) {
  for (int S = 1; S <= 6; ++S)
    for (int M = S; M <= 3 * S + 2; ++M)
      for (const std::string kind : {"interleaved-1f1b", "zb-v"}) {
        if (kind == "interleaved-1f1b" && M % S != 0) continue;
        for (int V : kind == "zb-v" ? std::vector<int>{2} : std::vector<int>{1, 2, 3}) {
          BOOST_TEST_CONTEXT(kind << " S=" << S << " V=" << V << " M=" << M) {
            std::vector<Schedule> v;
            BOOST_REQUIRE_NO_THROW(v = libpipe::make_checked_schedules(kind, S, M, V));
            for (int s = 0; s < S; ++s) {
              BOOST_TEST(v[s].virtual_stages == V);
              BOOST_TEST(count(v[s], WorkKind::Forward) == V * M);
              BOOST_TEST(count(v[s], WorkKind::BackwardWeight) == V * M);
              std::vector<int> next_w(V, 0);
              for (const auto& step : v[s].steps)
                for (const auto& i : step)
                  if (i.kind == WorkKind::BackwardWeight) BOOST_TEST(i.micro_batch == next_w.at(i.chunk)++);
              BOOST_TEST(libpipe::peak_in_flight(v[s]) <= v[s].num_buffers);
              if (kind == "zb-v") BOOST_TEST(libpipe::peak_in_flight(v[s]) <= 2 * S);
            }
          }
        }
      }
  // Placements: looped puts chunk c on stage c mod S; the V goes down the stages and back up.
  BOOST_TEST(libpipe::stage_chunks(libpipe::ChunkPlacement::looped, 1, 4, 3) == Ints({1, 5, 9}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::stage_chunks(libpipe::ChunkPlacement::v_shape, 1, 4, 2) == Ints({1, 6}),
             boost::test_tools::per_element());
  BOOST_TEST(libpipe::chunk_stage(libpipe::ChunkPlacement::v_shape, 7, 4) == 0);
  BOOST_TEST(libpipe::chunk_stage(libpipe::ChunkPlacement::looped, 7, 4) == 3);
  // Evaluation under chunks: forward only, every chunk, proven.
  for (auto placement : {libpipe::ChunkPlacement::looped, libpipe::ChunkPlacement::v_shape})
    BOOST_CHECK_NO_THROW(libpipe::make_checked_inference_schedules(3, 5, 2, placement));
  // zb-v's V-shape puts chunks S-1 and S on one stage: their messages stay on it (the engine hands them over).
  const auto zbv = libpipe::make_checked_schedules("zb-v", 2, 4);
  BOOST_TEST(libpipe::format_grid(zbv).find("SA0 ") != std::string::npos);
  BOOST_CHECK_THROW(libpipe::check_messages_within_steps(zbv), libpipe::Error);
}

// The checker refuses chunked schedules that name a chunk the stage does not hold or break the order of weight
// gradients, naming the stage, step and instruction.
BOOST_AUTO_TEST_CASE(checker_catches_chunk_errors) {
  auto broken = libpipe::make_checked_schedules("interleaved-1f1b", 2, 2, 2);
  for (auto& step : broken[0].steps)
    for (auto& i : step)
      if (i.kind == WorkKind::Forward && i.micro_batch == 1 && i.chunk == 1) i.chunk = 2;
  const std::string e = error_of([&] { libpipe::check_schedules(broken); });
  BOOST_TEST(e.find("stage 0, step") != std::string::npos);
  BOOST_TEST(e.find("F1c2 names chunk 2, outside the stage's 2 chunks (0..1)") != std::string::npos, e);
  // Two W's of one chunk swapped where both B's ran before: gradients must be added in micro-batch order.
  bool found = false;
  for (int S = 2; S <= 4 && !found; ++S) {
    auto v = libpipe::make_checked_schedules("zb-v", S, 2 * S);
    for (int s = 0; s < S && !found; ++s) {
      std::vector<Instruction*> order;  // the stage's instructions in program order
      for (auto& step : v[s].steps)
        for (auto& i : step) order.push_back(&i);
      for (std::size_t a = 0; a < order.size() && !found; ++a) {
        const Instruction& wa = *order[a];
        if (wa.kind != WorkKind::BackwardWeight) continue;
        // The next W of the same chunk, with its B before wa.
        for (std::size_t b = a + 1; b < order.size(); ++b) {
          const Instruction& wb = *order[b];
          if (wb.kind != WorkKind::BackwardWeight || wb.chunk != wa.chunk) continue;
          bool b_before = false;
          for (std::size_t k = 0; k < a; ++k)
            b_before = b_before || (order[k]->kind == WorkKind::BackwardInput && order[k]->chunk == wb.chunk &&
                                    order[k]->micro_batch == wb.micro_batch);
          if (b_before) {
            std::swap(order[a]->micro_batch, order[b]->micro_batch);
            const std::string e2 = error_of([&] { libpipe::check_schedules(v); });
            BOOST_TEST(e2.find("(weight gradients are added in micro-batch order)") != std::string::npos, e2);
            found = true;
          }
          break;
        }
      }
    }
  }
  BOOST_TEST(found);
}
