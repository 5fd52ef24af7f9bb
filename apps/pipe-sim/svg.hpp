// Timelines as SVG pictures: pipe-sim draws simulated schedules and recorded
// Chrome traces with the same renderer, so a prediction and a measurement can
// be put side by side. (The timelines themselves, and the Chrome trace reader
// and writer, are libpipe's: pipe/timeline.hpp.)
#pragma once

#include <cstddef>
#include <string>

#include "pipe/timeline.hpp"

namespace pipe_sim {

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
// Colours go by what the time was spent on: forward, backward input and
// backward weight each have their own; sends (SA, SG) share one, as do
// waits (RA, RG: waiting for a message; WS: for the sends to complete), which
// are drawn plain, as idle time; reductions (RT, RD) share one; the optimizer
// step has its own; loads, checkpoints and other work share the last. The
// tooltip of a block names its kind (libpipe::work_kind_name).
//
// Blocks narrower than a pixel (or, past max_rects, than the widest ones)
// are not drawn one by one: each row is cut into cells of a few pixels, a
// cell takes the colour of the work doing three quarters of its busy time
// ("mixed" otherwise), runs of alike cells become one rectangle as opaque as
// the share of the run spent working, and a comment in the SVG says how many
// blocks were merged. So 1,024 rows x 4,096 micro-batches make a file of about
// a megabyte, not gigabytes. The text is well-formed XML with every string
// escaped. A block with a time that is not finite is an error naming the row.
std::string render_svg(const libpipe::Timeline& timeline, const SvgOptions& options = {});

}  // namespace pipe_sim
