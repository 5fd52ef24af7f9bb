// Timelines: what each stage (or rank) did when, as rows of timed blocks.
// pipe-sim fills one from a simulated schedule, a real run fills one from its
// Chrome trace (the trace-event JSON that chrome://tracing and Perfetto
// read), and pipe-sim draws both the same way (apps/pipe-sim/svg.hpp), so a
// simulated and a measured step can be compared side by side. The kind of a
// block is a WorkKind (work_kind.hpp), the same vocabulary as the schedule's
// instructions and the engine's trace events.
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
#include "pipe/work_kind.hpp"

namespace libpipe {

struct Block {
  double start = 0;  // in the timeline's time unit
  double end = 0;
  WorkKind kind = WorkKind::Other;
  int micro_batch = -1;             // -1 when the block belongs to no micro-batch
  std::uint32_t label = 0;          // index into Timeline::labels(); 0 is "no label"
  std::uint16_t chunk = 0;          // which of the row's stage's chunks (0..V-1; fits the padding: still 32 bytes)
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

// Reads a Chrome trace-event JSON: an object with "traceEvents" or a bare
// array of events. "X" (complete) events with ts and dur in microseconds, and
// "B"/"E" pairs, become blocks: one row per (pid, tid), the kind from "cat"
// (its first comma-separated item that is a work_kind_name; else "name" when
// that is one; else Other), the micro-batch from args.micro_batch, the label
// from "name". Kinds are matched exactly as work_kind_name writes them: the
// names of earlier versions ("recv_wait", "fwd", ...) read as Other. "M"
// metadata events thread_name and process_name (args.name) name the rows
// ("process: thread" when the trace has several processes), and
// thread_sort_index / process_sort_index order them (else by pid, then tid).
// Times become seconds from the earliest block (or in otherData.time_unit,
// which to_chrome_trace writes). Other phases, and an "E" without its "B",
// are ignored, as chrome://tracing does. Errors (invalid JSON, no event list,
// an event without a numeric ts) are one line naming the event.
PIPE_API Timeline timeline_from_chrome_trace(const std::string& json_text);

// The timeline as a Chrome trace (the inverse of timeline_from_chrome_trace):
// row i is pid 0, tid i, named by a thread_name event; each block an "X"
// event with cat = work_kind_name, its label (or the kind's symbol and the
// micro-batch and chunk, "F3", "F3c1") as name, and args.micro_batch and
// args.chunk. Times are taken as seconds and written in microseconds, so
// chrome://tracing and Perfetto can open a simulation; the time unit is kept
// in otherData.time_unit for the way back.
PIPE_API std::string to_chrome_trace(const Timeline& timeline);

}  // namespace libpipe
