// See progress.hpp.
#include "progress.hpp"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "pipe/error.hpp"

namespace pipe_train {

Progress::Progress(int total_steps, std::int64_t tokens_per_step, const std::string& metrics_path, bool append)
    : total_(total_steps), tokens_per_step_(tokens_per_step), terminal_(isatty(STDERR_FILENO) != 0) {
  if (!metrics_path.empty()) {
    metrics_.open(metrics_path, append ? std::ios::app : std::ios::trunc);
    if (!metrics_) throw libpipe::Error("--metrics " + metrics_path + ": cannot open the file for writing");
    metrics_path_ = metrics_path;
  }
}

// One whole line, flushed at once (a crash must not lose the steps already done); a failed write or flush (a
// full disk) is an error naming the file, never a metrics file cut off mid-line and an exit status of 0.
void Progress::write_metrics(const std::string& line) {
  if (!metrics_.is_open()) return;
  metrics_ << line << "\n";
  metrics_.flush();
  if (!metrics_) throw libpipe::Error("--metrics " + metrics_path_ + ": writing failed (is the disk full?)");
}

void Progress::step(const libpipe::StepStats& s) {
  elapsed_ += s.seconds;
  if (done_ == 0) first_loss_ = s.loss;
  last_loss_ = s.loss;
  ++done_;
  const double tokens_per_s = static_cast<double>(tokens_per_step_) / s.seconds;
  write_metrics(nlohmann::json{{"step", s.step},
                               {"loss", s.loss},
                               {"lr", s.lr},
                               {"grad_norm", s.grad_norm},
                               {"tokens_per_s", tokens_per_s},
                               {"step_time_s", s.seconds}}
                    .dump());
  // Steps are numbered from the run's start, so a resumed run continues the count.
  const int shown = static_cast<int>(s.step) + 1;
  const double mean_rate = static_cast<double>(tokens_per_step_) * done_ / elapsed_;
  const int eta = static_cast<int>(std::lround(elapsed_ / done_ * (total_ - shown)));
  if (terminal_) {
    const int width = 24, filled = width * shown / total_;
    std::fprintf(stderr, "\rstep %d/%d [%s%s] loss %.4f  %.0f tokens/s  ETA %d:%02d ", shown, total_,
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(), s.loss, mean_rate,
                 eta / 60, eta % 60);
    bar_open_ = true;
  } else if (done_ == 1 || shown == total_ || shown % std::max(1, total_ / 20) == 0) {
    std::fprintf(stderr, "step %d/%d loss %.4f grad_norm %.3f lr %.2e %.0f tokens/s ETA %d:%02d\n", shown, total_,
                 s.loss, s.grad_norm, s.lr, mean_rate, eta / 60, eta % 60);
  }
  std::fflush(stderr);
}

void Progress::validation(std::int64_t step, double loss) {
  if (bar_open_) std::fprintf(stderr, "\n");
  bar_open_ = false;
  std::fprintf(stderr, "step %lld validation loss %.4f\n", static_cast<long long>(step + 1), loss);
  write_metrics(nlohmann::json{{"step", step}, {"val_loss", loss}}.dump());
}

std::string Progress::finish() {
  if (bar_open_) std::fprintf(stderr, "\n");
  char line[256];
  std::snprintf(line, sizeof line, "trained %d steps in %.1f s: loss %.4f -> %.4f, %.0f tokens/s", done_, elapsed_,
                first_loss_, last_loss_, static_cast<double>(tokens_per_step_) * done_ / elapsed_);
  std::fprintf(stderr, "pipe-train: %s\n", line);
  return line;
}

}  // namespace pipe_train

namespace pipe_train {

void Progress::summary(const std::string& json_object) { write_metrics(json_object); }

void Progress::close_metrics() {
  if (!metrics_.is_open()) return;
  metrics_.close();
  if (!metrics_) throw libpipe::Error("--metrics " + metrics_path_ + ": closing failed (is the disk full?)");
}

}  // namespace pipe_train
