// Rank 0's report of a training run: a progress bar on a terminal (step, loss,
// tokens/s, ETA), plain lines otherwise, and the --metrics JSON lines.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

#include "pipe/engine.hpp"

namespace pipe_train {

class Progress {
 public:
  // `metrics_path` may be "" (no metrics file); a resumed run appends to it.
  // Throws libpipe::Error when it cannot be written.
  Progress(int total_steps, std::int64_t tokens_per_step, const std::string& metrics_path, bool append);
  void step(const libpipe::StepStats& stats);
  void validation(std::int64_t step, double loss);
  // Prints the summary line; returns it.
  std::string finish();
  // Appends the run's summary object as the last --metrics line.
  void summary(const std::string& json_object);
  // Closes the metrics file; a failed close (the last buffer not written) is an error naming it.
  void close_metrics();
  double mean_tokens_per_s() const { return static_cast<double>(tokens_per_step_) * done_ / elapsed_; }

 private:
  int total_;
  std::int64_t tokens_per_step_;
  bool terminal_;
  void write_metrics(const std::string& line);
  std::ofstream metrics_;
  std::string metrics_path_;
  double elapsed_ = 0;
  double first_loss_ = 0, last_loss_ = 0;
  int done_ = 0;
  bool bar_open_ = false;
};

}  // namespace pipe_train
