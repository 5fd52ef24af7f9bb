// The one trace vocabulary (pipe/work_kind.hpp): every work kind's name reads
// back as that kind and nothing else does (no aliases, no case folding); the
// schedule's text uses the kinds' symbols; and a Chrome trace written with
// every kind reads back with the same kinds, micro-batches and labels.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE trace
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <ostream>
#include <set>
#include <string>

#include "pipe/schedule.hpp"
#include "pipe/timeline.hpp"
#include "pipe/work_kind.hpp"

// WorkKind in BOOST_TEST messages, by name (found by ADL).
namespace libpipe {
std::ostream& operator<<(std::ostream& out, WorkKind kind) { return out << work_kind_name(kind); }
}  // namespace libpipe

using libpipe::Block;
using libpipe::Timeline;
using libpipe::WorkKind;

namespace {

WorkKind kind_at(int k) { return static_cast<WorkKind>(k); }

}  // namespace

BOOST_AUTO_TEST_CASE(every_name_round_trips) {
  std::set<std::string> names, symbols;
  for (int k = 0; k < libpipe::kNumWorkKinds; ++k) {
    const WorkKind kind = kind_at(k);
    const std::string name(libpipe::work_kind_name(kind));
    BOOST_TEST_CONTEXT("kind " << k << " '" << name << "'") {
      BOOST_TEST(!name.empty());
      const auto back = libpipe::parse_work_kind(name);
      BOOST_TEST_REQUIRE(back.has_value());
      BOOST_TEST(*back == kind);
      // Names are one word of lower-case letters and underscores: a Chrome
      // trace category as written, never needing quotes or escapes.
      for (char c : name) BOOST_TEST(((c >= 'a' && c <= 'z') || c == '_'));
    }
    names.insert(name);
    symbols.insert(std::string(libpipe::work_kind_symbol(kind)));
  }
  BOOST_TEST(names.size() == static_cast<std::size_t>(libpipe::kNumWorkKinds));
  BOOST_TEST(symbols.size() == static_cast<std::size_t>(libpipe::kNumWorkKinds));
}

BOOST_AUTO_TEST_CASE(nothing_else_parses) {
  // Other spellings, the symbols, and the categories of earlier versions'
  // traces: none is a kind (a trace reader reads them as Other).
  for (const char* text : {"", "Forward", "FORWARD", "forward ", " forward", "backward-input", "backward input",
                           "F", "B", "W", "OPT", "fwd", "bwd", "backward", "wgrad", "send", "recv", "wait",
                           "recv/wait", "recv_wait", "send_wait", "reduce", "allreduce", "reduce_tied", "optimizer",
                           "opt", "load"})
    BOOST_TEST(!libpipe::parse_work_kind(text).has_value(), "'" << text << "'");
}

BOOST_AUTO_TEST_CASE(schedules_hold_the_instruction_kinds_and_print_their_symbols) {
  for (int k = 0; k < libpipe::kNumWorkKinds; ++k) {
    const WorkKind kind = kind_at(k);
    BOOST_TEST(libpipe::to_text(kind) == std::string(libpipe::work_kind_symbol(kind)));
    const bool instruction = kind != WorkKind::WaitSends && kind != WorkKind::Checkpoint && kind != WorkKind::Other;
    BOOST_TEST(libpipe::is_schedule_instruction(kind) == instruction, kind);
    BOOST_TEST(libpipe::is_compute(kind) == (kind == WorkKind::Forward || kind == WorkKind::BackwardInput ||
                                             kind == WorkKind::BackwardWeight),
               kind);
  }
  // B and W stay apart in every training schedule (zero-bubble schedules split them further in time).
  const auto s = libpipe::make_schedule("1f1b", 2, 2, 0);
  int b = 0, w = 0;
  for (const auto& step : s.steps)
    for (const auto& in : step) {
      b += in.kind == WorkKind::BackwardInput;
      w += in.kind == WorkKind::BackwardWeight;
    }
  BOOST_TEST(b == 2);
  BOOST_TEST(w == 2);
}

BOOST_AUTO_TEST_CASE(a_written_trace_reads_back_with_the_same_kinds) {
  // Two rows; every kind on each, with and without a micro-batch and a label.
  Timeline t;
  t.time_unit = "units";
  for (int r = 0; r < 2; ++r) {
    t.rows.push_back({"stage " + std::to_string(r), {}});
    for (int k = 0; k < libpipe::kNumWorkKinds; ++k) {
      const double start = 10.0 * k + r;
      const int mb = (k + r) % 3 == 0 ? -1 : k;
      const std::uint32_t label = r == 1 ? t.add_label("label " + std::to_string(k)) : 0;
      t.rows[r].blocks.push_back(Block{start, start + 4, kind_at(k), mb, label});
    }
  }
  const std::string json = libpipe::to_chrome_trace(t);
  for (int k = 0; k < libpipe::kNumWorkKinds; ++k)
    BOOST_TEST(json.find("\"cat\":\"" + std::string(libpipe::work_kind_name(kind_at(k))) + "\"") !=
               std::string::npos);
  const Timeline back = libpipe::timeline_from_chrome_trace(json);
  BOOST_TEST(back.time_unit == "units");
  BOOST_TEST_REQUIRE(back.rows.size() == 2u);
  for (int r = 0; r < 2; ++r) {
    BOOST_TEST(back.rows[r].name == t.rows[r].name);
    BOOST_TEST_REQUIRE(back.rows[r].blocks.size() == static_cast<std::size_t>(libpipe::kNumWorkKinds));
    for (int k = 0; k < libpipe::kNumWorkKinds; ++k) {
      const Block &a = t.rows[r].blocks[k], &b = back.rows[r].blocks[k];
      BOOST_TEST_CONTEXT("row " << r << " kind " << a.kind) {
        BOOST_TEST(b.kind == a.kind);
        BOOST_TEST(b.micro_batch == a.micro_batch);
        BOOST_TEST(std::fabs(b.start - a.start) < 1e-9);
        BOOST_TEST(std::fabs(b.end - a.end) < 1e-9);
        // An unlabelled block is named by its kind's symbol and micro-batch.
        const std::string name = r == 1 ? "label " + std::to_string(k)
                                        : std::string(libpipe::work_kind_symbol(a.kind)) +
                                              (a.micro_batch >= 0 ? std::to_string(a.micro_batch) : "");
        BOOST_TEST(back.label(b) == name);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(a_reader_takes_the_kind_from_the_cat_then_the_name) {
  const Timeline t = libpipe::timeline_from_chrome_trace(R"([
    {"ph": "X", "cat": "pipeline,forward,backward_input", "name": "F3", "ts": 0, "dur": 1},
    {"ph": "X", "cat": "gpu", "name": "backward_weight", "ts": 1, "dur": 1},
    {"ph": "X", "cat": "recv_wait", "name": "recv_wait 3", "ts": 2, "dur": 1},
    {"ph": "X", "name": "matmul", "ts": 3, "dur": 1},
    {"ph": "X", "cat": "other", "name": "forward", "ts": 4, "dur": 1},
    {"ph": "X", "cat": "Forward", "name": "F4", "ts": 5, "dur": 1}])");
  BOOST_TEST_REQUIRE(t.rows.size() == 1u);
  const auto& b = t.rows[0].blocks;
  BOOST_TEST_REQUIRE(b.size() == 6u);
  BOOST_TEST(b[0].kind == WorkKind::Forward);         // the first item of the cat that is a kind
  BOOST_TEST(b[1].kind == WorkKind::BackwardWeight);  // the cat names none: the name
  BOOST_TEST(b[2].kind == WorkKind::Other);           // an earlier version's category: not read
  BOOST_TEST(b[3].kind == WorkKind::Other);           // another tool's event
  BOOST_TEST(b[4].kind == WorkKind::Other);           // "other" is a kind: the cat decides
  BOOST_TEST(b[5].kind == WorkKind::Other);           // names are exact
}
