// See pipe/watchdog.hpp. One thread, started by the first Watch that has a bound, sleeps until the armed
// deadline; a Watch's destructor disarms it.
#include "pipe/watchdog.hpp"

#include <errno.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>


namespace libpipe {
namespace {

using Clock = std::chrono::steady_clock;

struct WatchState {
  std::mutex mutex;
  std::condition_variable changed;
  bool thread_started = false;
  bool armed = false;
  Clock::time_point deadline;
  std::string message;  // printed when the deadline passes while armed
};

// Never destroyed: the thread may still wait on it while the process exits.
WatchState& state() {
  static auto* s = new WatchState();
  return *s;
}

[[noreturn]] void expire(const std::string& message) {
  std::size_t done = 0;
  while (done < message.size()) {
    const ssize_t n = ::write(STDERR_FILENO, message.data() + done, message.size() - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  std::_Exit(1);  // no destructors, no MPI: the process is stuck inside MPI
}

void watch_loop() {
  WatchState& s = state();
  std::unique_lock<std::mutex> lock(s.mutex);
  for (;;) {
    if (!s.armed) {
      s.changed.wait(lock);
      continue;
    }
    s.changed.wait_until(lock, s.deadline);
    if (s.armed && Clock::now() >= s.deadline) expire(s.message);
  }
}

// The rank for the message: MPI's where it is running, else the launcher's environment (before MPI_Init).
std::string rank_text() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    int rank = -1;
    if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) == MPI_SUCCESS) return std::to_string(rank);
  }
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* v = std::getenv(name)) return v;
  return "?";
}

std::string seconds_text(double s) {
  std::string text = std::to_string(s);
  text.erase(text.find_last_not_of('0') + 1);
  if (!text.empty() && text.back() == '.') text.pop_back();
  return text;
}

}  // namespace

Watch::Watch(const std::string& what, double seconds) {
  if (!(seconds > 0)) return;
  const std::string message = std::string(program_invocation_short_name) + ": rank " + rank_text() +
                              ": error: --comm-timeout: " + what + " did not finish within " + seconds_text(seconds) +
                              " s (a rank stopped, hung or never started)\n";
  WatchState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.thread_started) {
    std::thread(watch_loop).detach();
    s.thread_started = true;
  }
  s.armed = true;
  s.deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  s.message = message;
  armed_ = true;
  s.changed.notify_all();
}

Watch::~Watch() {
  if (!armed_) return;
  WatchState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.armed = false;
  s.changed.notify_all();
}

}  // namespace libpipe
