// The text form of a pipeline's schedules (schedule.hpp: format_schedules,
// parse_schedules): what pipe-sim --print writes and pipe-train
// --schedule-file reads, so that a schedule can be written or edited by hand
// and proven by the checker before it runs.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/schedule.hpp"
#include "pipe/work_kind.hpp"

namespace libpipe {
namespace {

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

bool is_step_wide(WorkKind k) {
  return k == WorkKind::ReduceTiedGrads || k == WorkKind::ReduceGrads || k == WorkKind::OptimizerStep;
}

// "F3" -> Forward of micro-batch 3; "F3c2" -> the same on chunk 2; "RT" -> ReduceTiedGrads. `where` prefixes errors.
Instruction parse_instruction(const std::string& token, const std::string& where) {
  std::size_t letters = 0;
  while (letters < token.size() && std::isupper(static_cast<unsigned char>(token[letters]))) ++letters;
  const std::string symbol = token.substr(0, letters);
  std::string number = token.substr(letters), chunk;
  const auto c = number.find('c');
  if (c != std::string::npos) {
    chunk = number.substr(c + 1);
    number = number.substr(0, c);
    if (chunk.empty()) throw Error(where + ": '" + token + "': 'c' needs a chunk number (" + symbol + "0c1)");
  }
  auto all_digits = [](const std::string& t) {
    return std::all_of(t.begin(), t.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
  };
  for (int k = 0; k < kNumWorkKinds; ++k) {
    const WorkKind kind = static_cast<WorkKind>(k);
    if (!is_schedule_instruction(kind) || work_kind_symbol(kind) != symbol) continue;
    if (is_step_wide(kind)) {
      if (!number.empty() || c != std::string::npos)
        throw Error(where + ": '" + token + "': " + symbol + " takes no micro-batch");
      return Instruction{kind};
    }
    if (number.empty()) throw Error(where + ": '" + token + "': " + symbol + " needs a micro-batch number (" + symbol + "0)");
    if (!all_digits(number) || !all_digits(chunk))
      throw Error(where + ": '" + token + "': expected " + symbol + "<micro-batch>[c<chunk>], such as " + symbol +
                  "3 or " + symbol + "3c1");
    if (number.size() > 7 || chunk.size() > 7) throw Error(where + ": '" + token + "': number too large");
    return Instruction{kind, std::stoi(number), -1, chunk.empty() ? 0 : std::stoi(chunk)};
  }
  throw Error(where + ": '" + token +
              "' is not an instruction (L, F, B, W, SA, RA, SG, RG followed by a micro-batch and optionally c and a "
              "chunk; RT, RD, OPT)");
}

}  // namespace

std::string format_schedules(const std::vector<Schedule>& per_stage) {
  if (per_stage.empty()) throw Error("format_schedules: no schedules given");
  const Schedule& s0 = per_stage[0];
  std::ostringstream out;
  out << "# " << s0.kind << " schedule: " << s0.stages << " stages, " << s0.micro_batches
      << " micro-batches (pipe-sim --print; pipe-train --schedule-file reads it back)\n"
      << "# one line per stage; steps apart by '|', instructions in order within a step\n";
  // Chunks: their number per stage and their placement, before the stages; instructions name them ("F3c2").
  if (s0.virtual_stages > 1) out << "virtual-stages " << s0.virtual_stages << " " << placement_name(s0.placement) << "\n";
  for (const Schedule& s : per_stage) {
    out << "stage " << s.stage << " (buffers " << s.num_buffers << "):";
    for (std::size_t t = 0; t < s.steps.size(); ++t) out << (t ? " | " : " ") << to_text(s.steps[t]);
    out << "\n";
  }
  return out.str();
}

std::vector<Schedule> parse_schedules(const std::string& text, const std::string& source) {
  std::vector<Schedule> all;
  std::istringstream in(text);
  std::string line;
  int line_no = 0, largest_mb = -1, virtual_stages = 1;
  ChunkPlacement placement_kind = ChunkPlacement::looped;
  while (std::getline(in, line)) {
    ++line_no;
    const std::string where = source + ":" + std::to_string(line_no);
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    if (line.rfind("virtual-stages", 0) == 0) {
      char placement[32] = "";
      char extra = 0;
      const int got = std::sscanf(line.c_str(), "virtual-stages %d %31s %c", &virtual_stages, placement, &extra);
      const std::string name = placement;
      if (!all.empty())
        throw Error(where + ": 'virtual-stages' must come before the first stage line");
      if (got != 2 || virtual_stages < 1 || virtual_stages > 1024 || (name != "looped" && name != "v-shape"))
        throw Error(where + ": '" + line + "': expected 'virtual-stages V looped' or 'virtual-stages V v-shape'");
      placement_kind = name == "v-shape" ? ChunkPlacement::v_shape : ChunkPlacement::looped;
      continue;
    }
    const auto colon = line.find(':');
    const std::string head = trim(line.substr(0, colon));
    const std::string expected_head = "stage " + std::to_string(all.size());
    int buffers = 0;
    char tail = 0;
    if (colon == std::string::npos || head.rfind(expected_head, 0) != 0)
      throw Error(where + ": expected '" + expected_head + " (buffers N): STEP | STEP | ...' (stages in order from 0)");
    const std::string rest = trim(head.substr(expected_head.size()));
    if (!rest.empty() && (std::sscanf(rest.c_str(), "(buffers %d%c", &buffers, &tail) != 2 || tail != ')' ||
                          buffers < 1 || buffers > 1000000))
      throw Error(where + ": '" + rest + "': expected '(buffers N)' with N at least 1");
    Schedule s;
    s.kind = "custom";
    s.stage = static_cast<int>(all.size());
    s.num_buffers = buffers;  // 0 (not given): one per micro-batch, set below
    std::string body = line.substr(colon + 1) + "|";
    std::size_t start = 0;
    for (std::size_t bar = body.find('|'); bar != std::string::npos; start = bar + 1, bar = body.find('|', start)) {
      Step step;
      std::istringstream tokens(body.substr(start, bar - start));
      for (std::string token; tokens >> token;) {
        Instruction instruction =
            parse_instruction(token, where + ", step " + std::to_string(s.steps.size()));
        largest_mb = std::max(largest_mb, instruction.micro_batch);
        step.push_back(instruction);
      }
      s.steps.push_back(std::move(step));
    }
    all.push_back(std::move(s));
  }
  if (all.empty()) throw Error(source + ": no 'stage 0: ...' line");
  if (largest_mb < 0) throw Error(source + ": no instruction names a micro-batch");
  for (Schedule& s : all) {
    s.stages = static_cast<int>(all.size());
    s.micro_batches = largest_mb + 1;
    s.virtual_stages = virtual_stages;
    s.placement = placement_kind;
    if (virtual_stages > 1) {
      // With chunks a buffer holds one chunk's micro-batch: the lowest free one, from its first instruction to
      // its last (the checker proves a given "(buffers N)" is enough).
      const int given = s.num_buffers;
      assign_buffers(s);
      if (given > 0 && s.num_buffers > given)
        throw Error(source + ": stage " + std::to_string(s.stage) + " keeps " + std::to_string(s.num_buffers) +
                    " chunk micro-batches live at once but says (buffers " + std::to_string(given) + ")");
      continue;
    }
    if (s.num_buffers == 0) s.num_buffers = s.micro_batches;
    for (Step& step : s.steps)
      for (Instruction& i : step)
        if (i.micro_batch >= 0) i.buffer = i.micro_batch % s.num_buffers;
  }
  return all;
}

}  // namespace libpipe
