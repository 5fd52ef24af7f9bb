// See report.hpp.
#include "report.hpp"

#include <cmath>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/paths.hpp"
#include "pipe/schedule.hpp"
#include "pipe/simulate.hpp"
#include "pipe/work_kind.hpp"

using nlohmann::json;

namespace pipe_train {

double current_rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  double pages = 0, resident = 0;
  if (!(statm >> pages >> resident)) return 0;
  return resident * static_cast<double>(::sysconf(_SC_PAGESIZE));
}

std::string rank_summary_json(const libpipe::PipelineParallelGrid& grid, const libpipe::PipelineEngine& engine,
                              const DeviceChoice& where, bool with_events, double rss_before_model) {
  const auto& t = engine.totals();
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  json j = {{"rank", grid.global_rank()},          {"stage", grid.stage_id()},
            {"replica", grid.data_parallel_id()},  {"compute_s", t.compute_s},
            {"wait_s", t.wait_s},                  {"reduce_s", t.reduce_s},
            {"optimizer_s", t.optimizer_s},        {"step_s", t.step_s},
            {"bytes_sent", t.bytes_sent},          {"bytes_received", t.bytes_received},
            {"peak_rss_bytes", static_cast<std::int64_t>(usage.ru_maxrss) * 1024},
            {"rss_before_model_bytes", rss_before_model},
            {"peak_tensor_bytes", static_cast<double>(libpipe::peak_allocated_bytes(where.device))},
            {"device", where.description},         {"comm", libpipe::comm_kind_name(where.comm)},
            {"steps", t.steps},
            {"forward_s", t.work_s[static_cast<int>(libpipe::WorkKind::Forward)]},
            {"backward_input_s", t.work_s[static_cast<int>(libpipe::WorkKind::BackwardInput)]},
            {"backward_weight_s", t.work_s[static_cast<int>(libpipe::WorkKind::BackwardWeight)]}};
  if (with_events) {
    json events = json::array();
    for (const auto& e : engine.trace())
      events.push_back({std::string(libpipe::work_kind_name(e.kind)), e.micro_batch, e.start, e.end, e.chunk});
    j["events"] = events;
  }
  return j.dump();
}

namespace {

// Per stage: F, B and W of one micro-batch through the whole stage (all its chunks), in seconds, each stage's
// mean over its replicas. Empty when nothing was measured.
std::vector<libpipe::StageCosts> measured_costs(const std::vector<json>& ranks, int stages, int micro_batches) {
  std::vector<libpipe::StageCosts> costs(static_cast<std::size_t>(stages), libpipe::StageCosts{0, 0, 0});
  std::vector<int> replicas(static_cast<std::size_t>(stages), 0);
  for (const json& r : ranks) {
    const double per_mb = r["steps"].get<double>() * micro_batches;
    if (per_mb <= 0) return {};
    auto& c = costs[r["stage"].get<std::size_t>()];
    c.forward += r["forward_s"].get<double>() / per_mb;
    c.backward_input += r["backward_input_s"].get<double>() / per_mb;
    c.backward_weight += r["backward_weight_s"].get<double>() / per_mb;
    ++replicas[r["stage"].get<std::size_t>()];
  }
  for (int s = 0; s < stages; ++s) {
    if (replicas[s] == 0) return {};
    costs[s].forward /= replicas[s];
    costs[s].backward_input /= replicas[s];
    costs[s].backward_weight /= replicas[s];
  }
  return costs;
}

// pipe-sim's prediction of each rank's bubble, fed with this run's own measured F, B and W per micro-batch
// (measured_costs; with V chunks per stage each chunk takes 1/V of its stage's): the schedule's idle share of
// makespan + the rank's own reductions and optimizer step per step, which the schedule's simulation does not
// hold. Empty when nothing was measured.
std::vector<double> predicted_bubbles(const std::vector<json>& ranks, const std::string& schedule, int stages,
                                      int virtual_stages, int micro_batches,
                                      const std::vector<libpipe::Schedule>& custom) {
  std::vector<libpipe::StageCosts> costs = measured_costs(ranks, stages, micro_batches);
  if (costs.empty()) return {};
  costs = libpipe::chunk_costs_from_stages(
      costs, stages, virtual_stages, custom.empty() ? libpipe::schedule_placement(schedule) : custom[0].placement);
  const libpipe::SimResult sim =
      custom.empty()
          ? libpipe::simulate(schedule, stages, micro_batches, costs, 0, /*with_timeline=*/false, virtual_stages)
          : libpipe::simulate(custom, costs, 0, /*with_timeline=*/false);
  std::vector<double> out;
  for (const json& r : ranks) {
    const int s = r["stage"];
    const double tail = (r["reduce_s"].get<double>() + r["optimizer_s"].get<double>()) / r["steps"].get<double>();
    const double step = sim.makespan + tail;
    out.push_back(step > 0 ? 1.0 - sim.busy[s] / step : 0.0);
  }
  return out;
}

}  // namespace

std::vector<double> predicted_memory(const libpipe::ModelDescription& description, const libpipe::Parts& parts,
                                     const Options& options, int stages, int data_parallel, libpipe::Device device) {
  std::vector<libpipe::Schedule> schedules = options.train.custom_schedules;
  if (schedules.empty())
    for (int s = 0; s < stages; ++s)
      schedules.push_back(libpipe::make_schedule(options.train.schedule, stages, options.train.micro_batches, s,
                                                 options.virtual_stages));
  std::vector<double> out;
  for (const auto& m : libpipe::predict_memory(description, parts, schedules, memory_model_options(options, data_parallel, device)))
    out.push_back(m.total());
  return out;
}

std::string print_report(const std::vector<std::string>& rank_summaries, const std::string& schedule, int stages,
                         int virtual_stages, int micro_batches, double tokens_per_s, const std::string& comm,
                         const std::vector<libpipe::Schedule>& custom, const std::vector<double>& predicted_memory) {
  const double theory = libpipe::theoretical_bubble(schedule, stages, micro_batches, virtual_stages);
  std::vector<json> parsed;
  for (const auto& text : rank_summaries) parsed.push_back(json::parse(text));
  const std::vector<double> predicted =
      predicted_bubbles(parsed, schedule, stages, virtual_stages, micro_batches, custom);
  std::fprintf(stderr, "%-5s %-6s %-8s %10s %10s %10s %10s %8s %9s %8s %14s %14s %10s %10s %10s %10s  %s\n",
               "rank", "stage", "replica", "compute s", "wait s", "reduce s", "optim s", "bubble", "predicted", "theory",
               "sent", "received", "peak RSS", "grown", "tensors", "model", "device");
  json ranks = json::array();
  double worst = 0;
  for (std::size_t i = 0; i < parsed.size(); ++i) {
    json& r = parsed[i];
    r.erase("events");
    const double step_s = r["step_s"], compute_s = r["compute_s"];
    // The share of the step this rank did not spend computing: pipeline
    // bubble, communication waits, reductions and the optimizer together.
    const double bubble = step_s > 0 ? 1.0 - compute_s / step_s : 0.0;
    r["bubble"] = bubble;
    worst = std::max(worst, bubble);
    char guess[16] = "-", closed_form[16] = "-";  // a custom schedule has no closed form
    if (std::isfinite(theory)) std::snprintf(closed_form, sizeof closed_form, "%.1f%%", 100 * theory);
    if (!predicted.empty()) {
      r["predicted_bubble"] = predicted[i];
      std::snprintf(guess, sizeof guess, "%.1f%%", 100 * predicted[i]);
    }
    const std::size_t stage = r["stage"].get<std::size_t>();
    const double model = stage < predicted_memory.size() ? predicted_memory[stage] : 0;
    r["predicted_memory_bytes"] = model;
    const double peak = r["peak_rss_bytes"].get<double>();
    const double grown = std::max(0.0, peak - r["rss_before_model_bytes"].get<double>());
    const double tensors = r.value("peak_tensor_bytes", 0.0);
    std::fprintf(stderr,
                 "%-5d %-6d %-8d %10.3f %10.3f %10.3f %10.3f %7.1f%% %9s %8s %14s %14s %7.0f MB %7.0f MB %7.0f MB %7.0f MB  "
                 "%s\n",
                 r["rank"].get<int>(), r["stage"].get<int>(), r["replica"].get<int>(), compute_s,
                 r["wait_s"].get<double>(), r["reduce_s"].get<double>(), r["optimizer_s"].get<double>(), 100 * bubble,
                 guess, closed_form, libpipe::with_commas(r["bytes_sent"]).c_str(),
                 libpipe::with_commas(r["bytes_received"]).c_str(), peak / 1e6, grown / 1e6, tensors / 1e6, model / 1e6,
                 r["device"].get<std::string>().c_str());
    ranks.push_back(r);
  }
  const std::string formula = libpipe::theoretical_bubble_formula(schedule);
  const std::string theory_text = formula.empty() ? "none (" + schedule + " has no closed form)"
                                                  : formula + " for " + schedule + ", equal stages";
  std::fprintf(stderr,
               "bubble = 1 - compute / step time per rank (waits, reductions and the optimizer count as idle); "
               "predicted = pipe-sim's %s fed with this run's F, B and W per stage, plus the rank's reductions and "
               "optimizer; theory = %s\n",
               schedule.c_str(), theory_text.c_str());
  std::fprintf(stderr,
               "grown = peak RSS less the RSS before the model was built (the program, its libraries and MPI); "
               "tensors = the most the rank's tensors held at once (the allocator's count, its slack and the "
               "libraries' memory left out); "
               "model = the memory model's prediction for the rank's stage (parameters, gradients, optimizer "
               "state, the activations its schedule holds at its peak, buffers, and on the CPU the libraries' own "
               "memory, so that it predicts grown there; on a GPU it predicts tensors: pipe-plan prints the parts)\n");
  std::fprintf(stderr, "comm: %s (how activations, gradients and tied weights moved between ranks)\n", comm.c_str());
  return json{{"summary", true},       {"tokens_per_s", tokens_per_s}, {"theoretical_bubble", theory},
              {"max_bubble", worst},   {"ranks", ranks}}
      .dump();
}

void check_writable(const std::string& path, const std::string& flag, Output kind) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    // A file written by renaming a finished copy over it must be a file: renamed over /dev/null, it would replace
    // the device. A stream (metrics) may go to a device or a pipe, which cannot be probed, but not to a directory.
    if (kind == Output::streamed && !S_ISDIR(st.st_mode)) return;
    libpipe::require_regular_file(path, flag + " " + path);
  }
  // Create and test-write a sibling (the same directory and file system), synced, so that a missing directory,
  // no permission or a full disk shows up now rather than after the training.
  const std::string probe = path + ".partial";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw libpipe::Error(flag + " " + path + ": cannot write the file");
  const std::string block(4096, '\n');
  const bool written = ::write(fd, block.data(), block.size()) == static_cast<ssize_t>(block.size()) &&
                       ::fsync(fd) == 0;
  const bool closed = ::close(fd) == 0;
  std::remove(probe.c_str());
  if (!written || !closed) throw libpipe::Error(flag + " " + path + ": writing failed (is the disk full?)");
}

namespace {

// Writes `text` to `path` atomically: a temporary file renamed into place. `flag` names the file in errors.
void write_atomically(const std::string& path, const std::string& text, const std::string& flag) {
  const std::string temporary = path + ".partial";
  {
    std::ofstream out(temporary, std::ios::trunc);
    if (!out) throw libpipe::Error(flag + " " + path + ": cannot write the file");
    out << text;
    out.close();  // the last buffer is written here: a full disk shows up now, not never
    if (!out) {
      std::remove(temporary.c_str());
      throw libpipe::Error(flag + " " + path + ": writing failed (is the disk full?)");
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0)
    throw libpipe::Error(flag + " " + path + ": cannot rename the finished file into place");
}

}  // namespace

void write_profile(const std::string& path, const std::vector<std::string>& rank_summaries, const ProfileRun& run) {
  std::vector<json> ranks;
  for (const auto& text : rank_summaries) ranks.push_back(json::parse(text));
  const std::vector<libpipe::StageCosts> costs = measured_costs(ranks, run.stages, run.micro_batches);
  if (costs.empty()) throw libpipe::Error("--profile-out " + path + ": no step was measured");
  json per_stage = json::array();
  for (const auto& c : costs)
    per_stage.push_back(
        {{"forward", c.forward}, {"backward_input", c.backward_input}, {"backward_weight", c.backward_weight}});
  const json profile = {{"pipe_profile", 1},
                        {"model", run.model},
                        {"schedule", run.schedule},
                        {"stages", run.stages},
                        {"virtual_stages", run.virtual_stages},
                        {"micro_batches", run.micro_batches},
                        {"micro_batch_size", run.micro_batch_size},
                        {"time_unit", "s"},
                        {"costs", per_stage}};
  write_atomically(path, profile.dump(2) + "\n", "--profile-out");
}

void write_trace(const std::string& path, const std::vector<std::string>& rank_summaries) {
  json events = json::array();
  events.push_back({{"ph", "M"}, {"pid", 0}, {"name", "process_name"}, {"args", {{"name", "pipe-train"}}}});
  for (const auto& text : rank_summaries) {
    json r = json::parse(text);
    const int rank = r["rank"];
    const std::string row = "stage " + std::to_string(r["stage"].get<int>()) + " replica " +
                            std::to_string(r["replica"].get<int>()) + " (rank " + std::to_string(rank) + ")";
    events.push_back({{"ph", "M"}, {"pid", 0}, {"tid", rank}, {"name", "thread_name"}, {"args", {{"name", row}}}});
    events.push_back(
        {{"ph", "M"}, {"pid", 0}, {"tid", rank}, {"name", "thread_sort_index"}, {"args", {{"sort_index", rank}}}});
    for (const auto& e : r["events"]) {
      const std::string kind = e[0];  // work_kind_name: the category pipe-sim --from-trace reads back
      const int mb = e[1];
      const double start = e[2], end = e[3];
      const int chunk = e[4];
      events.push_back({{"ph", "X"},
                        {"pid", 0},
                        {"tid", rank},
                        {"cat", kind},
                        {"name", mb >= 0 ? kind + " " + std::to_string(mb) + (chunk ? "c" + std::to_string(chunk) : "")
                                         : kind},
                        {"ts", start * 1e6},
                        {"dur", (end - start) * 1e6},
                        {"args", {{"micro_batch", mb}, {"chunk", chunk}}}});
    }
  }
  write_atomically(path, json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() + "\n", "--trace");
}

}  // namespace pipe_train
