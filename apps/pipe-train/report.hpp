// The end-of-run report and the trace: every rank describes its time (and,
// with --trace, its events) as JSON; rank 0 gathers them, prints a table per
// rank with the measured bubble beside the schedule's theoretical one, and
// writes the Chrome trace-event file (open it in Perfetto or chrome://tracing).
#pragma once

#include <string>
#include <vector>

#include "device_choice.hpp"
#include "options.hpp"
#include "pipe/describe.hpp"
#include "pipe/engine.hpp"
#include "pipe/grid.hpp"
#include "pipe/schedule.hpp"

namespace pipe_train {

// This rank's totals and device (and events when `with_events`) as one JSON object.
// `rss_before_model`: the process's resident memory before the model was built (current_rss_bytes).
std::string rank_summary_json(const libpipe::PipelineParallelGrid& grid, const libpipe::PipelineEngine& engine,
                              const DeviceChoice& where, bool with_events, double rss_before_model);
// The process's resident memory now, in bytes (0 where /proc cannot tell).
double current_rss_bytes();

// Rank 0: prints the table to stderr and returns the run's summary as one
// JSON object (for the last --metrics line). `comm` names the Comm kind.
// `predicted_memory` (bytes per stage, predicted_memory below) is printed beside each rank's peak RSS.
std::string print_report(const std::vector<std::string>& rank_summaries, const std::string& schedule, int stages,
                         int virtual_stages, int micro_batches, double tokens_per_s, const std::string& comm,
                         const std::vector<libpipe::Schedule>& custom, const std::vector<double>& predicted_memory);
// The memory model's total per stage (pipe/memory_model.hpp) for this run: its partition into chunks, its
// schedules, micro-batch size, optimizer, dtype and activation checkpointing, on `device`.
std::vector<double> predicted_memory(const libpipe::ModelDescription& description, const libpipe::Parts& parts,
                                     const Options& options, int stages, int data_parallel, libpipe::Device device);

// How an output is written: whole at the end, into a temporary file renamed over `path` (--trace,
// --profile-out), or streamed, line by line (--metrics).
enum class Output { renamed, streamed };
// Throws libpipe::Error "<flag> <path>: ..." unless `path` can be written: checked before training, so a bad path
// does not waste a run. A sibling file is created, 4 KiB written and synced, then removed; a renamed output must
// be a regular file if it exists, a streamed one anything but a directory.
void check_writable(const std::string& path, const std::string& flag, Output kind);

// What a profile says about the run it was measured in.
struct ProfileRun {
  std::string model;
  std::string schedule;
  int stages = 1;
  int virtual_stages = 1;
  int micro_batches = 1;
  int micro_batch_size = 1;
};

// Rank 0: writes this run's measured F, B and W per stage and micro-batch (seconds, each stage's mean over its
// replicas) as JSON, which pipe-sim --profile reads back (atomically). Throws libpipe::Error on I/O failure.
void write_profile(const std::string& path, const std::vector<std::string>& rank_summaries, const ProfileRun& run);

// Rank 0: writes the gathered events as a Chrome trace (atomically: a
// temporary file renamed into place). Throws libpipe::Error on I/O failure.
void write_trace(const std::string& path, const std::vector<std::string>& rank_summaries);

}  // namespace pipe_train
