// The SVG renderer of pipe-sim (svg.hpp), with its merging of sub-pixel
// blocks, which is what keeps a 1,024 x 4,096 picture small.
#include "svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/work_kind.hpp"

namespace pipe_sim {

namespace {

using libpipe::Block;
using libpipe::Error;
using libpipe::Timeline;
using libpipe::TimelineRow;
using libpipe::WorkKind;

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

// What the picture colours: work kinds grouped by what the time was spent on.
enum Paint { kForward, kBackwardInput, kBackwardWeight, kSend, kWait, kReduce, kOptimizer, kOther, kNumPaints };

Paint paint_of(WorkKind kind) {
  switch (kind) {
    case WorkKind::Forward:
      return kForward;
    case WorkKind::BackwardInput:
      return kBackwardInput;
    case WorkKind::BackwardWeight:
      return kBackwardWeight;
    case WorkKind::SendActivation:
    case WorkKind::SendGrad:
      return kSend;
    case WorkKind::RecvActivation:
    case WorkKind::RecvGrad:
    case WorkKind::WaitSends:
      return kWait;
    case WorkKind::ReduceTiedGrads:
    case WorkKind::ReduceGrads:
      return kReduce;
    case WorkKind::OptimizerStep:
      return kOptimizer;
    case WorkKind::LoadMicroBatch:
    case WorkKind::Checkpoint:
    case WorkKind::Other:
      return kOther;
  }
  return kOther;
}

// Paints in enum order, then "mixed" for merged pixel columns no paint dominates.
const Rgb kPaintColour[kNumPaints + 1] = {
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
constexpr int kMixed = kNumPaints;

// clang-format off
const char* kLegendName[kNumPaints + 1] = {
    "forward (F)",
    "backward input (B)",
    "backward weight (W)",
    "send (SA, SG)",
    "recv / wait (RA, RG, WS)",
    "reduce (RT, RD)",
    "optimizer (OPT)",
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

// The colour of a row's later chunks: the n-th one mixed 45% (n odd) or 25% (n even) towards black, so that
// two chunks of a stage differ at a glance while the kind stays readable.
Rgb deepen(Rgb c, int chunk_index) {
  if (chunk_index <= 0) return c;
  const double a = chunk_index % 2 ? 0.45 : 0.25;
  return {c.r * (1 - a), c.g * (1 - a), c.b * (1 - a)};
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
        "<!-- A pipeline timeline drawn by pipe-sim: one row per stage or rank, one rect per "
        "block; rects are used for nothing else. -->\n";
    if (small_blocks_ > 0)
      out += "<!-- " + std::to_string(small_blocks_) + " blocks narrower than " + num(threshold_px_) +
             (threshold_px_ == 1 ? " pixel" : " pixels") + " are not drawn one by one: each row is cut in cells of " +
             num(cell_px_) +
             " pixels; a cell takes the colour of the work doing three quarters of its busy time (else mixed), runs of "
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

    // The legend: the paints present. Whether merging yields mixed runs is
    // only known after drawing, so mixed is counted here whenever blocks are
    // merged, and drawn only when used.
    std::vector<bool> present(kNumPaints + 1, false);
    for (const auto& r : tl_.rows)
      for (const auto& b : r.blocks) {
        present[paint_of(b.kind)] = true;
        if ((b.end - b.start) * scale_ < threshold_px_) present[kMixed] = true;
      }
    for (int k = 0; k <= kNumPaints; ++k)
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
        if (i++ % stride == 0 && b.end > b.start && paint_of(b.kind) != kWait) d.push_back(b.end - b.start);
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
      out += "<path d=\"M" + num(x) + " " + num(y - 6) + "h12v12h-12Z\" fill=\"" + hex(kPaintColour[k]) + "\"/>";
      out += "<text class=\"l\" x=\"" + num(x + 18) + "\" y=\"" + num(y) + "\">" + xml(name) + "</text>\n";
      x += w;
    }
  }

  // The small blocks of one row, gathered into cells of cell_px_ pixels on a
  // grid from the plot's left edge, and the run of alike cells not yet drawn.
  struct Merge {
    long cell = std::numeric_limits<long>::min();             // the cell being filled, or the last one
    bool open = false;                                        // whether `cell` has blocks not yet classified
    double cover[kNumPaints] = {};                            // pixels of each paint in it
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
        add_small(out, m, x0, x1, paint_of(b.kind), by);
      }
    }
    end_cell(out, m, by, std::numeric_limits<double>::infinity());
    draw_run(out, m, by);
  }

  void draw_block(std::string& out, const TimelineRow& row, const Block& b, double x0, double x1, double by) {
    // Waiting is drawn plain: it is idle time, and numbers on it would read as work.
    const bool wait = paint_of(b.kind) == kWait;
    // A stage's first chunk keeps the kind's colour, its later ones (Block::chunk, the stage's chunk index) are
    // drawn deeper, so that the chunks of a stage tell apart.
    const Rgb colour = shade(deepen(kPaintColour[paint_of(b.kind)], wait ? 0 : b.chunk), wait ? -1 : b.micro_batch);
    out += "<rect x=\"" + num(x0) + "\" y=\"" + num(by) + "\" width=\"" + num(x1 - x0) + "\" height=\"" + num(bar_h_) +
           "\" fill=\"" + hex(colour) + "\"";
    const std::string& label = tl_.label(b);
    if (tooltips_) {
      std::string what = label.empty() ? std::string(libpipe::work_kind_name(b.kind)) : label;
      if (b.micro_batch >= 0) what += ", micro-batch " + std::to_string(b.micro_batch);
      if (b.chunk > 0) what += ", the stage's chunk " + std::to_string(b.chunk);
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

  void add_small(std::string& out, Merge& m, double x0, double x1, Paint paint, double by) {
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
      if (z > a) m.cover[paint] += z - a;
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
    for (int k = 0; k < kNumPaints; ++k) {
      if (k == kWait) continue;  // waiting is not work
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
    if (!keep && m.run_class >= 0 && m.run_class < kNumPaints) keep = busy >= 0.1 && share_of(m.run_class) >= 0.6;
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
             num(bar_h_) + "\" fill=\"" + hex(kPaintColour[m.run_class]) + "\"" +
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

}  // namespace

std::string render_svg(const Timeline& timeline, const SvgOptions& options) {
  return SvgWriter(timeline, options).render();
}

}  // namespace pipe_sim
