// Timelines: the label store, the SVG renderer (with its merging of
// sub-pixel blocks, which is what keeps a 1,024 x 4,096 picture small), and
// the Chrome trace reader and writer.
#include "pipe/timeline.hpp"

#include <climits>
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <tuple>

#include "pipe/error.hpp"

namespace libpipe {

namespace {

using nlohmann::json;

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// ---------------------------------------------------------------------------
// Text helpers for SVG.

// Numbers in coordinates: two decimals at most, trailing zeros trimmed ("12.5",
// "40"), because coordinates are most of a large file's bytes.
std::string num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", v);
  std::string s = b;
  if (s.find('.') != std::string::npos) {
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

// Times in tooltips and tick labels: 6 significant digits.
std::string short_num(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v == 0 ? 0.0 : v);  // no "-0"
  return b;
}

// Escapes XML's five special characters and drops the control characters
// XML 1.0 cannot carry at all (a trace's names come from anywhere).
std::string xml(const std::string& s) {
  std::string r;
  r.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        r += "&amp;";
        break;
      case '<':
        r += "&lt;";
        break;
      case '>':
        r += "&gt;";
        break;
      case '"':
        r += "&quot;";
        break;
      case '\'':
        r += "&apos;";
        break;
      default:
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t') r += c;
    }
  }
  return r;
}

// ---------------------------------------------------------------------------
// Colours.

struct Rgb {
  double r, g, b;
};

// Kinds in enum order, then "mixed" for merged pixel columns no kind dominates.
const Rgb kKindColour[kNumBlockKinds + 1] = {
    {0x4c, 0x78, 0xa8},  // forward: blue
    {0x59, 0xa1, 0x4f},  // backward input: green
    {0xf2, 0x8e, 0x2b},  // backward weight: orange
    {0xed, 0xc9, 0x48},  // send: yellow
    {0xd0, 0xd0, 0xd0},  // recv / wait: light grey, close to the background: it is idle time
    {0xe1, 0x57, 0x59},  // reduce: red
    {0x76, 0xb7, 0xb2},  // optimizer: teal
    {0x9c, 0x75, 0x5f},  // other: brown
    {0x6f, 0x6f, 0x80},  // mixed: slate
};
constexpr int kMixed = kNumBlockKinds;

// clang-format off
const char* kLegendName[kNumBlockKinds + 1] = {
    "forward (F)",
    "backward input (B)",
    "backward weight (W)",
    "send",
    "recv / wait",
    "reduce",
    "optimizer",
    "other",
    "mixed (blocks under a pixel)",
};
// clang-format on

// Neighbouring micro-batches get different shades: a cycle of four, mixing
// the colour with white or black.
Rgb shade(Rgb c, int micro_batch) {
  if (micro_batch < 0) return c;
  static const double kMix[4] = {0, 0.30, -0.20, 0.15};
  const double t = kMix[micro_batch % 4];
  const double target = t > 0 ? 255 : 0, a = std::fabs(t);
  return {c.r + (target - c.r) * a, c.g + (target - c.g) * a, c.b + (target - c.b) * a};
}

std::string hex(Rgb c) {
  char b[8];
  auto byte = [](double v) { return static_cast<int>(std::lround(std::clamp(v, 0.0, 255.0))); };
  std::snprintf(b, sizeof b, "#%02x%02x%02x", byte(c.r), byte(c.g), byte(c.b));
  return b;
}

bool dark(Rgb c) { return 0.299 * c.r + 0.587 * c.g + 0.114 * c.b < 140; }

// ---------------------------------------------------------------------------
// The renderer.

// Round tick spacing (1, 2 or 5 times a power of ten) for about `target` ticks.
double tick_step(double span, int target) {
  const double raw = span / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double n = raw / mag;
  return (n < 1.5 ? 1 : n < 3.5 ? 2 : n < 7.5 ? 5 : 10) * mag;
}

class SvgWriter {
 public:
  SvgWriter(const Timeline& t, const SvgOptions& o) : tl_(t), opt_(o) {}

  std::string render() {
    layout();
    std::string body;
    body.reserve(1 << 20);
    draw_axis(body);
    body += "<g id=\"blocks\">\n";
    for (std::size_t i = 0; i < tl_.rows.size(); ++i) draw_row(body, i);
    body += "</g>\n";
    draw_legend(body);

    std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(width_) + "\" height=\"" +
                      num(height_) + "\" viewBox=\"0 0 " + num(width_) + " " + num(height_) + "\">\n";
    out +=
        "<!-- A pipeline timeline drawn by libpipe (pipe/timeline.hpp): one row per stage or rank, one rect per "
        "block; rects are used for nothing else. -->\n";
    if (small_blocks_ > 0)
      out += "<!-- " + std::to_string(small_blocks_) + " blocks narrower than " + num(threshold_px_) +
             (threshold_px_ == 1 ? " pixel" : " pixels") + " are not drawn one by one: each row is cut in cells of " +
             num(cell_px_) +
             " pixels; a cell takes the colour of the kind doing three quarters of its work (else mixed), runs of "
             "alike cells become one rect (" +
             std::to_string(spans_) +
             " in all), as opaque as the share of the run spent working, and cells less than a fifth busy stay "
             "empty. -->\n";
    out += "<style>text{font-family:sans-serif;fill:#222}.t{font-size:16px;font-weight:bold}.n{font-size:" +
           num(name_font_) + "px;text-anchor:end;dominant-baseline:central}.m{font-size:" + num(mb_font_) +
           "px;text-anchor:middle;dominant-baseline:central}.w{fill:#fff}.a{font-size:11px;text-anchor:middle}"
           ".l{font-size:11px;dominant-baseline:central}</style>\n";
    out += "<path d=\"M0 0H" + num(width_) + "V" + num(height_) + "H0Z\" fill=\"#fff\"/>\n";
    out += "<text class=\"t\" x=\"" + num(left_) + "\" y=\"24\">" + xml(title()) + "</text>\n";
    out += body;
    out += "</svg>\n";
    return out;
  }

 private:
  void layout() {
    for (const auto& r : tl_.rows)
      for (const auto& b : r.blocks)
        if (!std::isfinite(b.start) || !std::isfinite(b.end))
          throw Error("render_svg: row '" + r.name + "' has a block with a time that is not a finite number");
    t0_ = tl_.block_count() ? tl_.start() : 0;
    t1_ = tl_.block_count() ? tl_.end() : 1;
    if (!(t1_ > t0_)) t1_ = t0_ + 1;
    std::size_t longest = 0;
    for (const auto& r : tl_.rows) longest = std::max(longest, r.name.size());
    left_ = std::clamp(static_cast<double>(longest) * 6.5 + 16, 60.0, 260.0);

    // The title (16px bold, about 9.5px a character) must fit: an automatic
    // width grows the plot for it, a given one only the picture.
    const double title_w = 9.5 * static_cast<double>(title().size());
    plot_w_ = opt_.width > 0 ? opt_.width : std::max(auto_width(), title_w - left_);
    scale_ = plot_w_ / (t1_ - t0_);

    const double rows = static_cast<double>(std::max<std::size_t>(tl_.rows.size(), 1));
    pitch_ = std::max(1, opt_.row_height);
    if (rows * pitch_ > opt_.max_plot_height) pitch_ = std::max(1.0, opt_.max_plot_height / rows);
    bar_h_ = pitch_ >= 4 ? pitch_ * 0.82 : pitch_;
    name_font_ = std::clamp(pitch_ * 0.6, 9.0, 12.0);
    mb_font_ = std::clamp(bar_h_ * 0.6, 6.0, 11.0);
    // Names at most every 12 pixels: every k-th row when rows are thin.
    name_every_ = pitch_ >= 10 ? 1 : static_cast<std::size_t>(std::ceil(12.0 / pitch_));

    top_ = 40;
    plot_h_ = rows * pitch_;
    width_ = std::max(left_ + plot_w_, left_ + title_w) + 24;

    // Blocks drawn one by one: those a pixel wide or more, or the widest
    // max_rects of them when there are more (each costs ~50 bytes); the rest
    // are merged in cells twice as wide as the widest of them.
    std::vector<double> widths;
    for (const auto& r : tl_.rows)
      for (const auto& b : r.blocks)
        if ((b.end - b.start) * scale_ >= 1) widths.push_back((b.end - b.start) * scale_);
    threshold_px_ = 1;
    if (widths.size() > opt_.max_rects) {
      const std::size_t k = std::max<std::size_t>(opt_.max_rects, 1);
      std::nth_element(widths.begin(), widths.begin() + (widths.size() - k), widths.end());
      threshold_px_ = std::nextafter(widths[widths.size() - k], std::numeric_limits<double>::infinity());
    }
    cell_px_ = std::max(3.0, 2 * threshold_px_);
    std::size_t wide = 0;
    for (double w : widths) wide += w >= threshold_px_;
    tooltips_ = wide <= opt_.max_tooltips;

    // The legend: the kinds present. Whether merging yields mixed runs is
    // only known after drawing, so mixed is counted here whenever blocks are
    // merged, and drawn only when used.
    std::vector<bool> present(kNumBlockKinds + 1, false);
    for (const auto& r : tl_.rows)
      for (const auto& b : r.blocks) {
        present[static_cast<int>(b.kind)] = true;
        if ((b.end - b.start) * scale_ < threshold_px_) present[kMixed] = true;
      }
    for (int k = 0; k <= kNumBlockKinds; ++k)
      if (present[k]) legend_.push_back(k);
    legend_y_ = top_ + plot_h_ + 50;
    double x = left_;
    int lines = 1;
    for (int k : legend_) {
      const double w = 22 + 6.2 * std::string(kLegendName[k]).size() + 18;
      if (x + w > width_ && x > left_) {
        x = left_;
        ++lines;
      }
      x += w;
    }
    height_ = legend_y_ + 18.0 * lines + 10;
  }

  // About 24 pixels for the median block, so that micro-batch numbers fit.
  double auto_width() const {
    std::vector<double> d;
    const std::size_t n = tl_.block_count();
    const std::size_t stride = std::max<std::size_t>(1, n / 100000);
    std::size_t i = 0;
    for (const auto& r : tl_.rows)
      for (const auto& b : r.blocks)
        if (i++ % stride == 0 && b.end > b.start && b.kind != BlockKind::Recv) d.push_back(b.end - b.start);
    if (d.empty()) return opt_.min_width;
    std::nth_element(d.begin(), d.begin() + d.size() / 2, d.end());
    const double w = (t1_ - t0_) / d[d.size() / 2] * 24;
    return std::clamp(w, static_cast<double>(opt_.min_width),
                      static_cast<double>(std::max(opt_.min_width, opt_.max_width)));
  }

  double x_of(double t) const { return left_ + (t - t0_) * scale_; }
  std::string title() const { return opt_.title.empty() ? "Pipeline timeline" : opt_.title; }

  void draw_axis(std::string& out) const {
    // Seconds get a friendlier unit when the span is short.
    double factor = 1;
    std::string unit = tl_.time_unit;
    const double span = t1_ - t0_;
    if (unit == "s" && span < 1e-3) {
      factor = 1e6;
      unit = "us";
    } else if (unit == "s" && span < 1) {
      factor = 1e3;
      unit = "ms";
    }
    const double y = top_ + plot_h_;
    const double step = tick_step(span, std::max(2, static_cast<int>(plot_w_ / 110)));
    std::string grid, ticks;
    const double first = std::ceil(t0_ / step - 1e-9);
    for (double k = first; k < first + 1000; k += 1) {  // about plot_w_ / 110 ticks; the bound is a guard
      const double t = k * step;
      if (t > t1_ + 1e-9 * span) break;
      const double x = x_of(t);
      grid += "M" + num(x) + " " + num(top_) + "V" + num(y);
      ticks += "M" + num(x) + " " + num(y) + "v5";
      out += "<text class=\"a\" x=\"" + num(x) + "\" y=\"" + num(y + 18) + "\">" + short_num(t * factor) + "</text>\n";
    }
    out += "<path d=\"" + grid + "\" stroke=\"#eee\" fill=\"none\"/>\n";
    out += "<path d=\"M" + num(left_) + " " + num(y) + "H" + num(left_ + plot_w_) + ticks +
           "\" stroke=\"#444\" fill=\"none\"/>\n";
    out += "<text class=\"a\" x=\"" + num(left_ + plot_w_ / 2) + "\" y=\"" + num(y + 36) + "\">time (" + xml(unit) +
           ")</text>\n";
  }

  void draw_legend(std::string& out) const {
    double x = left_, y = legend_y_;
    for (int k : legend_) {
      if (k == kMixed && mixed_spans_ == 0) continue;
      const std::string name = kLegendName[k];
      const double w = 22 + 6.2 * name.size() + 18;
      if (x + w > width_ && x > left_) {
        x = left_;
        y += 18;
      }
      out += "<path d=\"M" + num(x) + " " + num(y - 6) + "h12v12h-12Z\" fill=\"" + hex(kKindColour[k]) + "\"/>";
      out += "<text class=\"l\" x=\"" + num(x + 18) + "\" y=\"" + num(y) + "\">" + xml(name) + "</text>\n";
      x += w;
    }
  }

  // The small blocks of one row, gathered into cells of cell_px_ pixels on a
  // grid from the plot's left edge, and the run of alike cells not yet drawn.
  struct Merge {
    long cell = std::numeric_limits<long>::min();             // the cell being filled, or the last one
    bool open = false;                                        // whether `cell` has blocks not yet classified
    double cover[kNumBlockKinds] = {};                        // pixels of each kind in it
    double lo = 0, hi = 0;                                    // extent of its blocks
    double floor = -std::numeric_limits<double>::infinity();  // end of the last wide block
    int run_class = kIdle;
    double run_x0 = 0, run_x1 = 0, run_busy = 0;
  };
  static constexpr int kIdle = -1;

  void draw_row(std::string& out, std::size_t i) {
    const TimelineRow& row = tl_.rows[i];
    const double y = top_ + static_cast<double>(i) * pitch_;
    if (i % name_every_ == 0)
      out += "<text class=\"n\" x=\"" + num(left_ - 6) + "\" y=\"" + num(y + pitch_ / 2) + "\">" + xml(row.name) +
             "</text>\n";
    const double by = y + (pitch_ - bar_h_) / 2;
    // Blocks in start order; a trace's rows usually are already.
    std::vector<std::size_t> order;
    const bool sorted = std::is_sorted(row.blocks.begin(), row.blocks.end(),
                                       [](const Block& a, const Block& b) { return a.start < b.start; });
    if (!sorted) {
      order.resize(row.blocks.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return row.blocks[a].start < row.blocks[b].start; });
    }
    Merge m;
    for (std::size_t j = 0; j < row.blocks.size(); ++j) {
      const Block& b = row.blocks[sorted ? j : order[j]];
      if (!(b.end >= b.start)) continue;  // NaN or reversed: nothing to draw
      const double x0 = x_of(b.start), x1 = x_of(b.end);
      if ((b.end - b.start) * scale_ >= threshold_px_) {  // the measure layout() chose the threshold by
        end_cell(out, m, by, x0);
        draw_run(out, m, by);
        draw_block(out, row, b, x0, x1, by);
        m = Merge{};
        m.floor = x1;
      } else {
        ++small_blocks_;
        add_small(out, m, x0, x1, b.kind, by);
      }
    }
    end_cell(out, m, by, std::numeric_limits<double>::infinity());
    draw_run(out, m, by);
  }

  void draw_block(std::string& out, const TimelineRow& row, const Block& b, double x0, double x1, double by) {
    // Waiting is drawn plain: it is idle time, and numbers on it would read as work.
    const bool wait = b.kind == BlockKind::Recv;
    const Rgb colour = shade(kKindColour[static_cast<int>(b.kind)], wait ? -1 : b.micro_batch);
    out += "<rect x=\"" + num(x0) + "\" y=\"" + num(by) + "\" width=\"" + num(x1 - x0) + "\" height=\"" + num(bar_h_) +
           "\" fill=\"" + hex(colour) + "\"";
    const std::string& label = tl_.label(b);
    if (tooltips_) {
      std::string what = label.empty() ? block_kind_name(b.kind) : label;
      if (b.micro_batch >= 0) what += ", micro-batch " + std::to_string(b.micro_batch);
      out += "><title>" +
             xml(row.name + ": " + what + ", " + short_num(b.start) + " to " + short_num(b.end) + " " + tl_.time_unit) +
             "</title></rect>\n";
    } else {
      out += "/>\n";
    }
    const std::string text = wait ? "" : b.micro_batch >= 0 ? std::to_string(b.micro_batch) : label;
    if (!text.empty() && bar_h_ >= 9 && x1 - x0 >= text.size() * mb_font_ * 0.62 + 4)
      out += "<text class=\"m" + std::string(dark(colour) ? " w" : "") + "\" x=\"" + num((x0 + x1) / 2) + "\" y=\"" +
             num(by + bar_h_ / 2) + "\">" + xml(text) + "</text>\n";
  }

  void add_small(std::string& out, Merge& m, double x0, double x1, BlockKind kind, double by) {
    const long first = static_cast<long>(std::floor((x0 - left_) / cell_px_));
    const long last = std::max(first, static_cast<long>(std::ceil((x1 - left_) / cell_px_)) - 1);
    for (long cell = first; cell <= last; ++cell) {
      const double c0 = left_ + static_cast<double>(cell) * cell_px_, c1 = c0 + cell_px_;
      const double a = std::max(x0, c0), z = std::min(x1, c1);
      if (!(m.open && cell <= m.cell)) {
        end_cell(out, m, by, std::numeric_limits<double>::infinity());
        // Cells skipped over are empty: they end the run unless it is idle.
        if (m.cell != std::numeric_limits<long>::min() && cell > m.cell + 1) draw_run(out, m, by);
        m.cell = cell;
        m.open = true;
        m.lo = a;
        m.hi = z;
      }
      // Overlapping blocks (nested trace events) may reach back into an earlier
      // cell; they count towards the current one.
      if (z > a) m.cover[static_cast<int>(kind)] += z - a;
      m.lo = std::min(m.lo, a);
      m.hi = std::max(m.hi, z);
    }
  }

  // Classifies the current cell and extends the run or draws it and starts
  // another. A cell that would change the run's class only changes it when it
  // is clearly of another class (hysteresis): a steady pattern whose shares sit
  // near a threshold would otherwise flip at every cell.
  void end_cell(std::string& out, Merge& m, double by, double ceiling) {
    if (!m.open) return;
    const double c0 = std::max(left_ + static_cast<double>(m.cell) * cell_px_, m.floor);
    const double c1 = std::min(c0 + cell_px_, ceiling);
    double compute = 0, best = 0;
    int best_kind = 0;
    for (int k = 0; k < kNumBlockKinds; ++k) {
      if (k == static_cast<int>(BlockKind::Recv)) continue;  // waiting is not work
      compute += m.cover[k];
      if (m.cover[k] > best) {
        best = m.cover[k];
        best_kind = k;
      }
    }
    const double busy = compute / std::max(c1 - c0, 1e-9);
    const double share = compute > 0 ? best / compute : 0;
    auto share_of = [&](int k) { return compute > 0 ? m.cover[k] / compute : 0; };
    const int strict = busy < 0.2 ? kIdle : share >= 0.75 ? best_kind : kMixed;
    bool keep = strict == m.run_class;
    if (!keep && m.run_class == kIdle) keep = busy < 0.3;
    if (!keep && m.run_class == kMixed) keep = busy >= 0.1 && share < 0.85;
    if (!keep && m.run_class >= 0 && m.run_class < kNumBlockKinds) keep = busy >= 0.1 && share_of(m.run_class) >= 0.6;
    if (!keep) {
      draw_run(out, m, by);
      m.run_class = strict;
      m.run_x0 = m.lo;
      m.run_busy = 0;
    }
    m.run_x1 = m.hi;
    m.run_busy += compute;
    for (double& c : m.cover) c = 0;
    m.open = false;
  }

  // Draws the run as one rect, as opaque as the share of it spent computing.
  void draw_run(std::string& out, Merge& m, double by) {
    if (m.run_class != kIdle && m.run_x1 > m.run_x0) {
      const double w = m.run_x1 - m.run_x0;
      const double opacity = std::clamp(m.run_busy / w, 0.15, 1.0);
      out += "<rect x=\"" + num(m.run_x0) + "\" y=\"" + num(by) + "\" width=\"" + num(w) + "\" height=\"" +
             num(bar_h_) + "\" fill=\"" + hex(kKindColour[m.run_class]) + "\"" +
             (opacity < 0.95 ? " fill-opacity=\"" + num(opacity) + "\"" : std::string()) + "/>\n";
      ++spans_;
      if (m.run_class == kMixed) ++mixed_spans_;
    }
    m.run_class = kIdle;
  }

  const Timeline& tl_;
  const SvgOptions& opt_;
  double t0_ = 0, t1_ = 1, scale_ = 1;
  double left_ = 0, top_ = 0, plot_w_ = 0, plot_h_ = 0, width_ = 0, height_ = 0;
  double pitch_ = 1, bar_h_ = 1, name_font_ = 11, mb_font_ = 10, legend_y_ = 0;
  std::size_t name_every_ = 1;
  bool tooltips_ = true;
  std::vector<int> legend_;
  double threshold_px_ = 1, cell_px_ = 3;  // blocks under threshold_px_ are merged in cells
  std::size_t small_blocks_ = 0, spans_ = 0, mixed_spans_ = 0;
};

// ---------------------------------------------------------------------------
// Chrome traces.

// A row of a trace being read: its (pid, tid) and how to order and name it.
struct TraceRow {
  std::string pid, tid;        // as written in the trace (numbers as their JSON text)
  double pid_num, tid_num;     // numeric pid/tid, or infinity for strings
  std::size_t first_seen = 0;  // order of first appearance, to break ties
  std::vector<Block> blocks;   // times in raw microseconds until the end
  std::vector<Block> open;     // "B" events waiting for their "E"
};

std::string id_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }
double id_number(const json& v) { return v.is_number() ? v.get<double>() : std::numeric_limits<double>::infinity(); }

std::string event_where(std::size_t i, const json& e) {
  std::string s = "chrome trace: event " + std::to_string(i);
  if (e.contains("name") && e["name"].is_string()) s += " ('" + e["name"].get<std::string>() + "')";
  return s;
}

double number_field(std::size_t i, const json& e, const char* key, bool required) {
  auto it = e.find(key);
  if (it == e.end() || !it->is_number()) {
    if (!required) return 0;
    throw Error(event_where(i, e) + " has no numeric \"" + key + "\"");
  }
  return it->get<double>();
}

BlockKind kind_of_event(const json& e) {
  if (e.contains("cat") && e["cat"].is_string()) {
    const std::string cat = e["cat"].get<std::string>();
    std::size_t from = 0;
    while (from <= cat.size()) {  // a comma-separated list: the first known kind wins
      const std::size_t comma = std::min(cat.find(',', from), cat.size());
      const BlockKind k = parse_block_kind(cat.substr(from, comma - from));
      if (k != BlockKind::Other) return k;
      from = comma + 1;
    }
  }
  if (e.contains("name") && e["name"].is_string()) return parse_block_kind(e["name"].get<std::string>());
  return BlockKind::Other;
}

int micro_batch_of(const json& e) {
  auto args = e.find("args");
  if (args == e.end() || !args->is_object()) return -1;
  auto mb = args->find("micro_batch");
  if (mb == args->end()) return -1;
  // Out-of-range numbers mean "no micro-batch", never an undefined conversion.
  if (mb->is_number_integer()) {
    const auto v = mb->get<std::int64_t>();
    return v >= 0 && v <= INT_MAX ? static_cast<int>(v) : -1;
  }
  if (mb->is_number()) {
    const double v = mb->get<double>();
    return v >= 0 && v <= INT_MAX ? static_cast<int>(v) : -1;
  }
  if (mb->is_string()) {
    try {
      return std::stoi(mb->get<std::string>());
    } catch (...) {
      return -1;
    }
  }
  return -1;
}

std::string json_string(const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

// ---------------------------------------------------------------------------

std::string block_kind_name(BlockKind kind) {
  switch (kind) {
    case BlockKind::Forward:
      return "forward";
    case BlockKind::BackwardInput:
      return "backward_input";
    case BlockKind::BackwardWeight:
      return "backward_weight";
    case BlockKind::Send:
      return "send";
    case BlockKind::Recv:
      return "recv";
    case BlockKind::Reduce:
      return "reduce";
    case BlockKind::Optimizer:
      return "optimizer";
    case BlockKind::Other:
      return "other";
  }
  return "other";
}

BlockKind parse_block_kind(const std::string& name) {
  std::string n = lower(name);
  for (char& c : n)
    if (c == '-' || c == ' ') c = '_';
  static const std::map<std::string, BlockKind> kAliases = {
      {"forward", BlockKind::Forward},
      {"fwd", BlockKind::Forward},
      {"f", BlockKind::Forward},
      {"backward_input", BlockKind::BackwardInput},
      {"backward", BlockKind::BackwardInput},
      {"bwd", BlockKind::BackwardInput},
      {"b", BlockKind::BackwardInput},
      {"backward_weight", BlockKind::BackwardWeight},
      {"wgrad", BlockKind::BackwardWeight},
      {"w", BlockKind::BackwardWeight},
      {"send", BlockKind::Send},
      {"isend", BlockKind::Send},
      {"send_activation", BlockKind::Send},
      {"send_grad", BlockKind::Send},
      {"send_wait", BlockKind::Send},
      {"recv", BlockKind::Recv},
      {"irecv", BlockKind::Recv},
      {"receive", BlockKind::Recv},
      {"wait", BlockKind::Recv},
      {"recv/wait", BlockKind::Recv},
      {"recv_wait", BlockKind::Recv},
      {"recv_activation", BlockKind::Recv},
      {"recv_grad", BlockKind::Recv},
      {"reduce", BlockKind::Reduce},
      {"allreduce", BlockKind::Reduce},
      {"all_reduce", BlockKind::Reduce},
      {"reduce_grads", BlockKind::Reduce},
      {"reduce_tied_grads", BlockKind::Reduce},
      {"reduce_tied", BlockKind::Reduce},
      {"optimizer", BlockKind::Optimizer},
      {"optimizer_step", BlockKind::Optimizer},
      {"opt", BlockKind::Optimizer},
  };
  auto it = kAliases.find(n);
  return it == kAliases.end() ? BlockKind::Other : it->second;
}

std::uint32_t Timeline::add_label(const std::string& text) {
  auto it = label_ids_.find(text);
  if (it != label_ids_.end()) return it->second;
  const auto id = static_cast<std::uint32_t>(labels_.size());
  labels_.push_back(text);
  label_ids_.emplace(text, id);
  return id;
}

const std::string& Timeline::label(const Block& block) const {
  return block.label < labels_.size() ? labels_[block.label] : labels_[0];
}

std::size_t Timeline::block_count() const {
  std::size_t n = 0;
  for (const auto& r : rows) n += r.blocks.size();
  return n;
}

double Timeline::start() const {
  double t = std::numeric_limits<double>::infinity();
  for (const auto& r : rows)
    for (const auto& b : r.blocks) t = std::min(t, b.start);
  return std::isfinite(t) ? t : 0;
}

double Timeline::end() const {
  double t = -std::numeric_limits<double>::infinity();
  for (const auto& r : rows)
    for (const auto& b : r.blocks) t = std::max(t, b.end);
  return std::isfinite(t) ? t : 0;
}

std::string render_svg(const Timeline& timeline, const SvgOptions& options) {
  return SvgWriter(timeline, options).render();
}

Timeline timeline_from_chrome_trace(const std::string& json_text) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    throw Error(std::string("chrome trace: invalid JSON: ") + e.what());
  }
  const json* events = nullptr;
  if (doc.is_array())
    events = &doc;
  else if (doc.is_object() && doc.contains("traceEvents") && doc["traceEvents"].is_array())
    events = &doc["traceEvents"];
  else
    throw Error("chrome trace: expected an array of events or an object with a \"traceEvents\" array");

  Timeline tl;
  std::vector<TraceRow> rows;
  std::map<std::pair<std::string, std::string>, std::size_t> row_of;
  std::map<std::string, std::string> process_name, thread_key_name;  // thread key: pid + '\n' + tid
  std::map<std::string, double> process_sort, thread_sort;

  auto row_for = [&](const json& e) -> TraceRow& {
    const json pid = e.contains("pid") ? e["pid"] : json(0);
    const json tid = e.contains("tid") ? e["tid"] : json(0);
    auto key = std::make_pair(id_text(pid), id_text(tid));
    auto it = row_of.find(key);
    if (it == row_of.end()) {
      it = row_of.emplace(key, rows.size()).first;
      rows.push_back(TraceRow{key.first, key.second, id_number(pid), id_number(tid), rows.size(), {}, {}});
    }
    return rows[it->second];
  };

  for (std::size_t i = 0; i < events->size(); ++i) {
    const json& e = (*events)[i];
    if (!e.is_object() || !e.contains("ph") || !e["ph"].is_string()) continue;
    const std::string ph = e["ph"].get<std::string>();
    if (ph == "M") {
      const std::string what = e.contains("name") && e["name"].is_string() ? e["name"].get<std::string>() : "";
      const std::string pid = e.contains("pid") ? id_text(e["pid"]) : "0";
      const std::string tid = e.contains("tid") ? id_text(e["tid"]) : "0";
      const json args = e.contains("args") && e["args"].is_object() ? e["args"] : json::object();
      if (what == "process_name" && args.contains("name") && args["name"].is_string())
        process_name[pid] = args["name"].get<std::string>();
      else if (what == "thread_name" && args.contains("name") && args["name"].is_string())
        thread_key_name[pid + '\n' + tid] = args["name"].get<std::string>();
      else if (what == "process_sort_index" && args.contains("sort_index") && args["sort_index"].is_number())
        process_sort[pid] = args["sort_index"].get<double>();
      else if (what == "thread_sort_index" && args.contains("sort_index") && args["sort_index"].is_number())
        thread_sort[pid + '\n' + tid] = args["sort_index"].get<double>();
      continue;
    }
    if (ph != "X" && ph != "B" && ph != "E") continue;  // instants, counters, flows: not blocks
    const double ts = number_field(i, e, "ts", true);
    TraceRow& row = row_for(e);
    if (ph == "E") {
      if (row.open.empty()) continue;  // an "E" without its "B": ignored, as chrome://tracing does
      Block b = row.open.back();
      row.open.pop_back();
      b.end = std::max(ts, b.start);
      row.blocks.push_back(b);
      continue;
    }
    Block b;
    b.start = ts;
    b.end = ph == "X" ? ts + std::max(0.0, number_field(i, e, "dur", false)) : ts;
    b.kind = kind_of_event(e);
    b.micro_batch = micro_batch_of(e);
    if (e.contains("name") && e["name"].is_string()) b.label = tl.add_label(e["name"].get<std::string>());
    (ph == "X" ? row.blocks : row.open).push_back(b);
  }

  // Order: sort index, else numeric pid/tid, else order of appearance.
  auto process_key = [&](const TraceRow& r) {
    auto it = process_sort.find(r.pid);
    return it != process_sort.end() ? it->second : r.pid_num;
  };
  auto thread_key = [&](const TraceRow& r) {
    auto it = thread_sort.find(r.pid + '\n' + r.tid);
    return it != thread_sort.end() ? it->second : r.tid_num;
  };
  std::map<std::string, std::size_t> first_of_process, rows_in_process;
  for (const auto& r : rows) {
    first_of_process.emplace(r.pid, r.first_seen);
    ++rows_in_process[r.pid];
  }
  std::vector<std::size_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const TraceRow &x = rows[a], &y = rows[b];
    const auto kx = std::make_tuple(process_key(x), first_of_process[x.pid], thread_key(x), x.first_seen);
    const auto ky = std::make_tuple(process_key(y), first_of_process[y.pid], thread_key(y), y.first_seen);
    return kx < ky;
  });

  double t_min = std::numeric_limits<double>::infinity();
  for (const auto& r : rows)
    for (const auto& b : r.blocks) t_min = std::min(t_min, b.start);
  if (!std::isfinite(t_min)) t_min = 0;

  for (std::size_t i : order) {
    TraceRow& r = rows[i];
    TimelineRow out;
    auto pn = process_name.find(r.pid);
    auto tn = thread_key_name.find(r.pid + '\n' + r.tid);
    // The process name goes in front of a thread name only when it tells
    // processes apart (pipe-train writes one process with a thread per rank).
    const bool alone = rows_in_process[r.pid] == 1;
    const bool many_processes = rows_in_process.size() > 1;
    if (tn != thread_key_name.end())
      out.name = many_processes && pn != process_name.end() ? pn->second + ": " + tn->second : tn->second;
    else if (pn != process_name.end())
      out.name = alone ? pn->second : pn->second + ": tid " + r.tid;
    else
      out.name = alone ? "pid " + r.pid : "pid " + r.pid + " tid " + r.tid;
    std::stable_sort(r.blocks.begin(), r.blocks.end(),
                     [](const Block& a, const Block& b) { return a.start < b.start; });
    out.blocks = std::move(r.blocks);
    for (Block& b : out.blocks) {
      b.start = (b.start - t_min) * 1e-6;
      b.end = (b.end - t_min) * 1e-6;
    }
    tl.rows.push_back(std::move(out));
  }
  // Our own traces of simulations in abstract units say so (to_chrome_trace).
  tl.time_unit = "s";
  if (doc.is_object() && doc.contains("otherData") && doc["otherData"].is_object() &&
      doc["otherData"].contains("time_unit") && doc["otherData"]["time_unit"].is_string())
    tl.time_unit = doc["otherData"]["time_unit"].get<std::string>();
  return tl;
}

std::string to_chrome_trace(const Timeline& timeline) {
  // Written by hand rather than through a json value: a large simulation has
  // millions of events, and a json tree of them would take gigabytes.
  std::string out = "{\"displayTimeUnit\":\"ms\",\"otherData\":{\"time_unit\":" + json_string(timeline.time_unit) +
                    "},\"traceEvents\":[\n";
  char buffer[160];
  bool first = true;
  auto sep = [&]() -> const char* {
    const char* s = first ? "" : ",\n";
    first = false;
    return s;
  };
  for (std::size_t i = 0; i < timeline.rows.size(); ++i) {
    out += sep();
    out += "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":0,\"tid\":" + std::to_string(i) +
           ",\"args\":{\"name\":" + json_string(timeline.rows[i].name) + "}},\n";
    out += "{\"ph\":\"M\",\"name\":\"thread_sort_index\",\"pid\":0,\"tid\":" + std::to_string(i) +
           ",\"args\":{\"sort_index\":" + std::to_string(i) + "}}";
  }
  for (std::size_t i = 0; i < timeline.rows.size(); ++i)
    for (const Block& b : timeline.rows[i].blocks) {
      const std::string& label = timeline.label(b);
      std::string name = label;
      if (name.empty()) {
        static const char* kShort[kNumBlockKinds] = {"F", "B", "W", "send", "recv", "reduce", "optimizer", "other"};
        name = kShort[static_cast<int>(b.kind)];
        if (b.micro_batch >= 0) name += std::to_string(b.micro_batch);
      }
      out += sep();
      out += "{\"ph\":\"X\",\"name\":" + json_string(name) + ",\"cat\":\"" + block_kind_name(b.kind) + "\"";
      std::snprintf(buffer, sizeof buffer, ",\"pid\":0,\"tid\":%zu,\"ts\":%.15g,\"dur\":%.15g", i, b.start * 1e6,
                    (b.end - b.start) * 1e6);
      out += buffer;
      if (b.micro_batch >= 0) out += ",\"args\":{\"micro_batch\":" + std::to_string(b.micro_batch) + "}";
      out += "}";
    }
  out += "\n]}\n";
  return out;
}

}  // namespace libpipe
