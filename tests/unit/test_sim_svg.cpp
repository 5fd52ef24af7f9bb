// pipe-sim's SVG renderer (apps/pipe-sim/svg.hpp, linked from pipe-sim's
// own library): well-formed XML, one <rect> per block, every name escaped, a
// small file at the promised scale of 1,024 stages x 4,096 micro-batches, the
// rect budget, and a recorded trace with nested events and every work kind.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE sim_svg
#include <boost/test/unit_test.hpp>
#include <cctype>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/simulate.hpp"
#include "pipe/timeline.hpp"
#include "pipe/work_kind.hpp"
#include "svg.hpp"
#include "test_util.hpp"

using libpipe::Block;
using libpipe::Timeline;
using libpipe::WorkKind;

namespace {

using pipe_test::error_of;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::size_t count(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

// A small XML well-formedness check: every tag closed in order, comments and
// attribute values skipped over, and every '&' the start of an entity. Returns
// "" when the text is well formed, else what is wrong and where.
std::string xml_problem(const std::string& x) {
  std::vector<std::string> open;
  std::size_t i = 0;
  while (i < x.size()) {
    if (x[i] == '&') {
      const std::size_t semi = x.find(';', i);
      const std::string entity = semi == std::string::npos ? "" : x.substr(i, semi - i + 1);
      if (entity != "&amp;" && entity != "&lt;" && entity != "&gt;" && entity != "&quot;" && entity != "&apos;")
        return "bare '&' at " + std::to_string(i);
      i = semi + 1;
      continue;
    }
    if (x[i] != '<') {
      ++i;
      continue;
    }
    if (x.compare(i, 4, "<!--") == 0) {
      const std::size_t end = x.find("-->", i + 4);
      if (end == std::string::npos) return "unclosed comment at " + std::to_string(i);
      if (x.substr(i + 4, end - i - 4).find("--") != std::string::npos) return "'--' inside a comment";
      i = end + 3;
      continue;
    }
    const bool closing = i + 1 < x.size() && x[i + 1] == '/';
    std::size_t j = i + (closing ? 2 : 1);
    std::string name;
    while (j < x.size() && (std::isalnum(static_cast<unsigned char>(x[j])) || x[j] == '-' || x[j] == ':'))
      name += x[j++];
    if (name.empty()) return "a '<' that starts no tag at " + std::to_string(i);
    char quote = 0;
    while (j < x.size() && (quote || x[j] != '>')) {
      if (quote && x[j] == quote)
        quote = 0;
      else if (!quote && (x[j] == '"' || x[j] == '\''))
        quote = x[j];
      else if (!quote && x[j] == '<')
        return "'<' inside tag <" + name + "> at " + std::to_string(j);
      ++j;
    }
    if (j >= x.size()) return "tag <" + name + "> never ends";
    const bool self_closing = x[j - 1] == '/';
    if (closing) {
      if (open.empty() || open.back() != name)
        return "</" + name + "> closes " + (open.empty() ? std::string("nothing") : "<" + open.back() + ">");
      open.pop_back();
    } else if (!self_closing) {
      open.push_back(name);
    }
    i = j + 1;
  }
  if (!open.empty()) return "<" + open.back() + "> is never closed";
  return "";
}

}  // namespace

BOOST_AUTO_TEST_CASE(svg_is_well_formed_with_one_rect_per_block) {
  const auto r = libpipe::simulate("1f1b", 4, 8, {{1, 2, 0}});
  pipe_sim::SvgOptions o;
  o.title = "1f1b <4 x 8> & \"friends\"";
  const std::string svg = pipe_sim::render_svg(r.timeline, o);
  BOOST_TEST(svg.rfind("<svg", 0) == 0);
  BOOST_TEST(xml_problem(svg) == "");
  BOOST_TEST(svg.substr(svg.size() - 7) == "</svg>\n");
  BOOST_TEST(count(svg, "<rect") == r.timeline.block_count());
  BOOST_TEST(contains(svg, "1f1b &lt;4 x 8&gt; &amp; &quot;friends&quot;"));
  BOOST_TEST(contains(svg, "forward (F)"));     // the legend
  BOOST_TEST(contains(svg, "time (units)"));    // the axis
  BOOST_TEST(!contains(svg, "narrower than"));  // nothing merged
  BOOST_TEST(contains(svg, ">7</text>"));       // micro-batch numbers inside blocks
}

BOOST_AUTO_TEST_CASE(svg_escapes_names_and_labels) {
  Timeline t;
  t.rows.push_back({"rank <0> & 'co'", {}});
  t.rows[0].blocks.push_back(Block{0, 1, WorkKind::ReduceGrads, -1, t.add_label("all<reduce> \x01&")});
  t.rows[0].blocks.push_back(Block{1, 3, WorkKind::Forward, 12, 0});
  const std::string svg = pipe_sim::render_svg(t);
  BOOST_TEST(xml_problem(svg) == "");
  BOOST_TEST(contains(svg, "rank &lt;0&gt; &amp; &apos;co&apos;"));
  BOOST_TEST(contains(svg, "all&lt;reduce&gt; &amp;"));
  BOOST_TEST(count(svg, "<rect") == 2u);
  // An empty timeline still draws; a time that is not a number does not.
  BOOST_TEST(xml_problem(pipe_sim::render_svg(Timeline{})) == "");
  t.rows[0].blocks.push_back(Block{3, HUGE_VAL, WorkKind::Other, -1, 0});
  BOOST_TEST(error_of([&] { pipe_sim::render_svg(t); }) ==
             "render_svg: row 'rank <0> & 'co'' has a block with a time that is not a finite number");
}

BOOST_AUTO_TEST_CASE(the_big_case_runs_and_draws_small) {
  // 1,024 stages x 4,096 micro-batches: ~29 million instructions. No timing
  // assert (machines differ); the time is printed with --log_level=message.
  const auto start = std::chrono::steady_clock::now();
  const auto r = libpipe::simulate("1f1b", 1024, 4096, {{1, 2, 0}});
  const double sim_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_TEST(std::fabs(r.bubble - 1023.0 / (4096 + 1023)) < 1e-9);
  BOOST_TEST(r.makespan == (4096 + 1023) * 3.0);
  BOOST_TEST(r.timeline.rows.size() == 1024u);
  const auto t1 = std::chrono::steady_clock::now();
  const std::string svg = pipe_sim::render_svg(r.timeline);
  const double svg_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  BOOST_TEST_MESSAGE("1024 x 4096: simulate " << sim_s << " s, " << r.timeline.block_count() << " blocks; svg " << svg_s
                                              << " s, " << svg.size() << " bytes");
  BOOST_TEST(svg.size() < 8u * 1024 * 1024);
  BOOST_TEST(contains(svg, "narrower than"));  // says what was merged
  BOOST_TEST(xml_problem(svg) == "");
}

BOOST_AUTO_TEST_CASE(many_wide_blocks_stay_within_the_rect_budget) {
  // 256 rows of 400 blocks each a few pixels wide: ten times max_rects.
  Timeline t;
  for (int s = 0; s < 256; ++s) {
    t.rows.push_back({"r" + std::to_string(s), {}});
    for (int m = 0; m < 400; ++m) t.rows.back().blocks.push_back(Block{m * 1.0, m + 0.75, WorkKind::Forward, m, 0});
  }
  pipe_sim::SvgOptions o;
  o.width = 2000;
  o.max_rects = 10000;
  const std::string svg = pipe_sim::render_svg(t, o);
  BOOST_TEST(xml_problem(svg) == "");
  // At most max_rects drawn one by one, plus a merged run before each and at the end of each row.
  BOOST_TEST(count(svg, "<rect") <= 2 * 10000u + 256u);
  BOOST_TEST(contains(svg, "narrower than"));
}

BOOST_AUTO_TEST_CASE(a_recorded_trace_with_every_kind_draws) {
  // Nested events (a wait around a forward, as B/E pairs nest) and one block
  // of every work kind, read as pipe-sim --from-trace reads them.
  std::string events = R"({"ph": "B", "name": "recv_activation", "pid": 0, "tid": 0, "ts": 0},
    {"ph": "X", "name": "F0", "cat": "forward", "pid": 0, "tid": 0, "ts": 2, "dur": 3, "args": {"micro_batch": 0}},
    {"ph": "E", "pid": 0, "tid": 0, "ts": 6})";
  for (int k = 0; k < libpipe::kNumWorkKinds; ++k)
    events += R"(, {"ph": "X", "cat": ")" +
              std::string(libpipe::work_kind_name(static_cast<WorkKind>(k))) + R"(", "pid": 0, "tid": 1, "ts": )" +
              std::to_string(10 * k) + R"(, "dur": 8, "args": {"micro_batch": )" + std::to_string(k) + "}}";
  const Timeline t = libpipe::timeline_from_chrome_trace("[" + events + "]");
  BOOST_TEST_REQUIRE(t.rows.size() == 2u);
  BOOST_TEST(t.rows[1].blocks.size() == static_cast<std::size_t>(libpipe::kNumWorkKinds));
  const std::string svg = pipe_sim::render_svg(t);
  BOOST_TEST(xml_problem(svg) == "");
  BOOST_TEST(count(svg, "<rect") == t.block_count());
  for (const char* legend : {"forward (F)", "backward input (B)", "backward weight (W)", "send (SA, SG)",
                             "recv / wait (RA, RG, WS)", "reduce (RT, RD)", "optimizer (OPT)", "other"})
    BOOST_TEST(contains(svg, legend), legend);
  // The tooltip of a block without a name names its kind.
  for (int k = 0; k < libpipe::kNumWorkKinds; ++k)
    BOOST_TEST(contains(svg, "pid 0 tid 1: " + std::string(libpipe::work_kind_name(static_cast<WorkKind>(k))) +
                                 ", micro-batch " + std::to_string(k) + ","));
}
