// Timelines: the label store and the Chrome trace reader and writer, both in
// the one vocabulary of work_kind.hpp. (pipe-sim draws timelines: its svg.cpp.)
#include "pipe/timeline.hpp"

#include <climits>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string_view>
#include <tuple>

#include "pipe/error.hpp"

namespace libpipe {

namespace {

using nlohmann::json;

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
  const double value = it->get<double>();
  if (!std::isfinite(value)) throw Error(event_where(i, e) + " has a \"" + key + "\" that is not finite");
  if (std::string(key) == "dur" && value < 0) throw Error(event_where(i, e) + " has a negative \"dur\"");
  return value;
}

// The kind named by the cat (its first comma-separated item that is a kind),
// else by the name; Other when neither names one.
WorkKind kind_of_event(const json& e) {
  if (e.contains("cat") && e["cat"].is_string()) {
    const std::string& cat = e["cat"].get_ref<const std::string&>();
    std::size_t from = 0;
    while (from <= cat.size()) {
      const std::size_t comma = std::min(cat.find(',', from), cat.size());
      if (const auto k = parse_work_kind(std::string_view(cat).substr(from, comma - from))) return *k;
      from = comma + 1;
    }
  }
  if (e.contains("name") && e["name"].is_string())
    if (const auto k = parse_work_kind(e["name"].get_ref<const std::string&>())) return *k;
  return WorkKind::Other;
}

// args.<field> as a non-negative int, -1 when absent or not one.
int int_arg(const json& e, const char* field) {
  auto args = e.find("args");
  if (args == e.end() || !args->is_object()) return -1;
  auto mb = args->find(field);
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
    b.micro_batch = int_arg(e, "micro_batch");
    b.chunk = static_cast<std::uint16_t>(std::clamp(int_arg(e, "chunk"), 0, 65535));
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
        name = work_kind_symbol(b.kind);
        if (b.micro_batch >= 0) name += std::to_string(b.micro_batch);
        if (b.micro_batch >= 0 && b.chunk > 0) name += "c" + std::to_string(b.chunk);
      }
      out += sep();
      out += "{\"ph\":\"X\",\"name\":" + json_string(name) + ",\"cat\":\"" + std::string(work_kind_name(b.kind)) + "\"";
      std::snprintf(buffer, sizeof buffer, ",\"pid\":0,\"tid\":%zu,\"ts\":%.15g,\"dur\":%.15g", i, b.start * 1e6,
                    (b.end - b.start) * 1e6);
      out += buffer;
      if (b.micro_batch >= 0)
        out += ",\"args\":{\"micro_batch\":" + std::to_string(b.micro_batch) + ",\"chunk\":" + std::to_string(b.chunk) +
               "}";
      out += "}";
    }
  out += "\n]}\n";
  return out;
}

}  // namespace libpipe
