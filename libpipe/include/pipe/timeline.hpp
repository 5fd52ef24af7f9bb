// Timelines: what each stage (or rank) did when, as rows of timed blocks, and
// their pictures. pipe-sim fills one from a simulated schedule, a real run
// fills one from its Chrome trace (the trace-event JSON that chrome://tracing
// and Perfetto read), and the same SVG renderer draws both, so a simulated
// and a measured step can be compared side by side.
//
// A Block is kept to 32 bytes because a 1,024-stage, 4,096-micro-batch
// simulation holds about ten million of them: labels are stored once per
// Timeline and blocks refer to them by index.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "pipe/export.hpp"

namespace libpipe {

// What a block of time was spent on; the colours and the legend follow it.
enum class BlockKind : std::uint8_t {
  Forward,
  BackwardInput,
  BackwardWeight,
  Send,
  Recv,  // receiving or waiting for a message: time the stage could not compute
  Reduce,
  Optimizer,
  Other,
};
constexpr int kNumBlockKinds = static_cast<int>(BlockKind::Other) + 1;

// "forward", "backward_input", "backward_weight", "send", "recv", "reduce",
// "optimizer", "other": the category names of the Chrome traces we read and
// write.
PIPE_API std::string block_kind_name(BlockKind kind);
// The inverse, case-insensitive, with the usual aliases ("fwd", "backward",
// "bwd", "wait", "recv/wait", "allreduce", "opt", ...) and the categories of
// pipe-train --trace ("recv_wait", "send_wait", "reduce_tied",
// "reduce_grads"); anything else is Other.
PIPE_API BlockKind parse_block_kind(const std::string& name);

struct Block {
  double start = 0;  // in the timeline's time unit
  double end = 0;
  BlockKind kind = BlockKind::Other;
  int micro_batch = -1;     // -1 when the block belongs to no micro-batch
  std::uint32_t label = 0;  // index into Timeline::labels(); 0 is "no label"
};

struct TimelineRow {
  std::string name;  // "stage 3", or a trace's thread/process name
  std::vector<Block> blocks;
};

struct PIPE_API Timeline {
  std::vector<TimelineRow> rows;
  // The unit of every start and end, for the time axis: "s" for traces and
  // cost models in seconds, "units" for abstract costs.
  std::string time_unit = "s";

  // Stores `text` once and returns its index for Block::label ("" is 0).
  std::uint32_t add_label(const std::string& text);
  // The label of a block ("" when it has none).
  const std::string& label(const Block& block) const;
  const std::vector<std::string>& labels() const { return labels_; }

  std::size_t block_count() const;
  // The earliest start and latest end over all blocks (0 and 0 when empty).
  double start() const;
  double end() const;

 private:
  std::vector<std::string> labels_{""};
  std::unordered_map<std::string, std::uint32_t> label_ids_{{"", 0}};
};

struct SvgOptions {
  std::string title;  // "" draws "Pipeline timeline"
  // Width of the plot area in pixels; 0 chooses one from the blocks (about
  // 24 pixels for a typical block) between min_width and max_width.
  int width = 0;
  int min_width = 600;
  int max_width = 2400;
  // Height of one row in pixels, shrunk (down to 1) when the rows would not
  // fit in max_plot_height.
  int row_height = 22;
  int max_plot_height = 2048;
  // At most this many blocks are drawn one by one (about 50 bytes each): when
  // more are a pixel wide, only the widest are, and the others are merged.
  std::size_t max_rects = 100000;
  // A <title> tooltip on each block, when there are at most this many blocks
  // drawn one by one (tooltips double the size of a large file).
  std::size_t max_tooltips = 20000;
};

// An SVG picture: one row per timeline row with its name on the left, one
// rectangle per block coloured by kind and shaded per micro-batch (lighter
// and darker in a cycle of four, so neighbours differ), the micro-batch number
// (or the label) written inside when the block is wide enough, a time axis
// with round ticks, a legend and a title. Blocks are the only <rect>s.
//
// Blocks narrower than a pixel (or, past max_rects, than the widest ones)
// are not drawn one by one: each row is cut into cells of a few pixels, a
// cell takes the colour of the kind doing three quarters of its work ("mixed"
// otherwise), runs of alike cells become one rectangle as opaque as the share
// of the run spent working, and a comment in the SVG says how many blocks were
// merged. So 1,024 rows x 4,096 micro-batches make a file of about a
// megabyte, not gigabytes. The text is well-formed XML with every string
// escaped.
PIPE_API std::string render_svg(const Timeline& timeline, const SvgOptions& options = {});

// Reads a Chrome trace-event JSON: an object with "traceEvents" or a bare
// array of events. "X" (complete) events with ts and dur in microseconds, and
// "B"/"E" pairs, become blocks: one row per (pid, tid), the kind from "cat"
// (parse_block_kind; from "name" when the cat says nothing), the micro-batch
// from args.micro_batch, the label from "name". "M" metadata events
// thread_name and process_name (args.name) name the rows ("process: thread"
// when the trace has several processes), and thread_sort_index /
// process_sort_index order them (else by pid, then tid). Times become seconds
// from the earliest block (or in otherData.time_unit, which to_chrome_trace
// writes). Other phases, and an "E" without its "B", are ignored, as
// chrome://tracing does. Errors (invalid JSON, no event list, an event
// without a numeric ts) are one line naming the event.
PIPE_API Timeline timeline_from_chrome_trace(const std::string& json_text);

// The timeline as a Chrome trace (the inverse of timeline_from_chrome_trace):
// row i is pid 0, tid i, named by a thread_name event; each block an "X"
// event with cat = block_kind_name, its label (or kind and micro-batch) as
// name, and args.micro_batch. Times are taken as seconds and written in
// microseconds, so chrome://tracing and Perfetto can open a simulation; the
// time unit is kept in otherData.time_unit for the way back.
PIPE_API std::string to_chrome_trace(const Timeline& timeline);

}  // namespace libpipe
