// ProcessTopology: the rank <-> coordinate arithmetic of DeepSpeed's
// deepspeed/runtime/pipe/topology.py, with strides instead of a lookup table,
// and errors that name the offending value instead of KeyErrors.
#include "pipe/topology.hpp"

#include <climits>
#include <cstdio>
#include <utility>

#include "pipe/error.hpp"

namespace libpipe {

namespace {

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += items[i];
  }
  return out;
}

std::string quote(const std::string& s) { return "\"" + s + "\""; }

std::string topology_str(const std::vector<std::string>& axes, const std::vector<int>& dims) {
  std::string out;
  for (std::size_t i = 0; i < axes.size() && i < dims.size(); ++i) {
    if (i > 0) out += " x ";
    out += axes[i] + "=" + std::to_string(dims[i]);
  }
  return out;
}

}  // namespace

ProcessTopology::ProcessTopology(std::vector<std::string> axes, std::vector<int> dims)
    : axes_(std::move(axes)), dims_(std::move(dims)) {
  if (axes_.empty()) throw Error("a process topology needs at least one axis");
  if (axes_.size() != dims_.size()) {
    throw Error("a process topology needs one size per axis, but got " +
                std::to_string(axes_.size()) + " axes (" + join(axes_, ", ") + ") and " +
                std::to_string(dims_.size()) + " sizes");
  }
  for (std::size_t i = 0; i < axes_.size(); ++i) {
    if (axes_[i].empty()) {
      throw Error("axis " + std::to_string(i) + " of the process topology has an empty name");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (axes_[j] == axes_[i]) {
        throw Error("axis " + quote(axes_[i]) + " appears twice in the process topology (axes: " +
                    join(axes_, ", ") + ")");
      }
    }
    if (dims_[i] < 1) {
      throw Error("axis " + quote(axes_[i]) + " of the process topology has size " +
                  std::to_string(dims_[i]) + "; every axis needs a size of at least 1");
    }
  }
  // Row-major: the last axis is the fastest-varying one.
  strides_.assign(dims_.size(), 1);
  long long size = 1;
  for (std::size_t i = dims_.size(); i-- > 0;) {
    strides_[i] = static_cast<int>(size);
    size *= dims_[i];
    if (size > INT_MAX) {
      throw Error("the process topology " + topology_str(axes_, dims_) + " needs more than " +
                  std::to_string(INT_MAX) + " ranks");
    }
  }
  world_size_ = static_cast<int>(size);
}

bool ProcessTopology::has_axis(const std::string& axis) const {
  for (const auto& a : axes_) {
    if (a == axis) return true;
  }
  return false;
}

std::size_t ProcessTopology::axis_index(const std::string& axis, const char* caller) const {
  for (std::size_t i = 0; i < axes_.size(); ++i) {
    if (axes_[i] == axis) return i;
  }
  throw Error("unknown axis " + quote(axis) + " in " + caller + ": the topology " + str() +
              " has the axes " + join(axes_, ", "));
}

void ProcessTopology::check_rank(int rank) const {
  if (rank < 0 || rank >= world_size_) {
    throw Error("rank " + std::to_string(rank) + " is out of range for the topology " + str() +
                ", which has ranks 0 to " + std::to_string(world_size_ - 1));
  }
}

void ProcessTopology::check_coord(std::size_t axis, int value) const {
  if (value < 0 || value >= dims_[axis]) {
    throw Error("coordinate " + axes_[axis] + "=" + std::to_string(value) +
                " is out of range for the topology " + str() + ", where " + axes_[axis] +
                " runs from 0 to " + std::to_string(dims_[axis] - 1));
  }
}

int ProcessTopology::get_dim(const std::string& axis) const {
  return dims_[axis_index(axis, "get_dim")];
}

int ProcessTopology::get_rank(const std::map<std::string, int>& coord) const {
  // Unknown names first: a misspelt axis would otherwise be reported as the
  // correctly spelt one being missing, which hides the real mistake.
  for (const auto& [axis, value] : coord) {
    check_coord(axis_index(axis, "get_rank"), value);
  }
  int rank = 0;
  for (std::size_t i = 0; i < axes_.size(); ++i) {
    auto it = coord.find(axes_[i]);
    if (it == coord.end()) {
      throw Error("get_rank needs a coordinate on every axis of the topology " + str() +
                  ", but " + quote(axes_[i]) + " is missing (use filter_match for a partial one)");
    }
    rank += it->second * strides_[i];
  }
  return rank;
}

std::vector<int> ProcessTopology::get_coord(int rank) const {
  check_rank(rank);
  std::vector<int> coord(axes_.size());
  for (std::size_t i = 0; i < axes_.size(); ++i) {
    coord[i] = (rank / strides_[i]) % dims_[i];
  }
  return coord;
}

int ProcessTopology::get_coord(int rank, const std::string& axis) const {
  const std::size_t i = axis_index(axis, "get_coord");
  check_rank(rank);
  return (rank / strides_[i]) % dims_[i];
}

std::string ProcessTopology::get_rank_repr(int rank, const std::vector<std::string>& omit_axes,
                                           const std::string& inner_sep,
                                           const std::string& outer_sep) const {
  const std::vector<int> coord = get_coord(rank);
  std::vector<std::string> names;
  for (std::size_t i = 0; i < axes_.size(); ++i) {
    bool omitted = false;
    for (const auto& o : omit_axes) omitted = omitted || o == axes_[i];
    if (omitted) continue;
    char digits[16];
    std::snprintf(digits, sizeof digits, "%02d", coord[i]);
    names.push_back(axes_[i] + inner_sep + digits);
  }
  return join(names, outer_sep);
}

std::vector<int> ProcessTopology::get_axis_list(const std::string& axis, int idx) const {
  const std::size_t i = axis_index(axis, "get_axis_list");
  check_coord(i, idx);
  std::vector<int> ranks;
  for (int r = 0; r < world_size_; ++r) {
    if ((r / strides_[i]) % dims_[i] == idx) ranks.push_back(r);
  }
  return ranks;
}

std::vector<std::vector<int>> ProcessTopology::get_axis_comm_lists(const std::string& axis) const {
  if (!has_axis(axis)) return {};
  const std::size_t a = axis_index(axis, "get_axis_comm_lists");
  // Walking the ranks in order and keeping those at coordinate 0 on `axis`
  // visits the other axes' coordinates row-major, which is DeepSpeed's order
  // of the lists; each list then steps along `axis` by its stride.
  std::vector<std::vector<int>> lists;
  for (int r = 0; r < world_size_; ++r) {
    if ((r / strides_[a]) % dims_[a] != 0) continue;
    std::vector<int> list(dims_[a]);
    for (int k = 0; k < dims_[a]; ++k) list[k] = r + k * strides_[a];
    lists.push_back(std::move(list));
  }
  return lists;
}

std::vector<int> ProcessTopology::filter_match(const std::map<std::string, int>& filter) const {
  std::vector<std::pair<std::size_t, int>> wanted;
  for (const auto& [axis, value] : filter) {
    const std::size_t i = axis_index(axis, "filter_match");
    check_coord(i, value);
    wanted.emplace_back(i, value);
  }
  std::vector<int> ranks;
  for (int r = 0; r < world_size_; ++r) {
    bool match = true;
    for (const auto& [i, value] : wanted) match = match && (r / strides_[i]) % dims_[i] == value;
    if (match) ranks.push_back(r);
  }
  return ranks;
}

std::string ProcessTopology::str() const { return topology_str(axes_, dims_); }

ProcessTopology PipeDataParallelTopology(int num_pp, int num_dp) {
  return ProcessTopology({"pipe", "data"}, {num_pp, num_dp});
}

ProcessTopology PipeModelDataParallelTopology(int num_pp, int num_mp, int num_dp) {
  return ProcessTopology({"pipe", "data", "model"}, {num_pp, num_dp, num_mp});
}

namespace {

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t");
  return s.substr(first, last - first + 1);
}

}  // namespace

ProcessTopology parse_topology(const std::string& spec) {
  static const std::vector<std::string> allowed = {"pipe", "data", "model"};
  const std::string head = "invalid topology " + quote(spec) + ": ";
  const std::string example = "e.g. \"pipe=2,data=2\"";
  if (trim(spec).empty()) {
    throw Error(head + "expected axis=size pairs separated by commas, " + example);
  }

  std::vector<std::string> axes;
  std::vector<int> dims;
  std::size_t begin = 0;
  while (true) {
    const std::size_t comma = spec.find(',', begin);
    const std::string entry =
        trim(spec.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin));
    if (entry.empty()) {
      throw Error(head + "empty entry; expected axis=size pairs separated by commas, " + example);
    }
    const std::size_t eq = entry.find('=');
    if (eq == std::string::npos || entry.find('=', eq + 1) != std::string::npos) {
      throw Error(head + quote(entry) + " is not of the form axis=size (" + example + ")");
    }
    const std::string name = trim(entry.substr(0, eq));
    const std::string value = trim(entry.substr(eq + 1));
    if (name.empty() || value.empty()) {
      throw Error(head + quote(entry) + " is not of the form axis=size (" + example + ")");
    }
    bool known = false;
    for (const auto& a : allowed) known = known || a == name;
    if (!known) {
      throw Error(head + "unknown axis " + quote(name) + " (allowed: " + join(allowed, ", ") + ")");
    }
    for (const auto& a : axes) {
      if (a == name) throw Error(head + "axis " + quote(name) + " is given twice");
    }
    // Digits only: std::stoi would accept "2x", "+2" and " 2".
    long long size = 0;
    bool is_int = true;
    for (char c : value) {
      if (c < '0' || c > '9') {
        is_int = false;
        break;
      }
      size = size * 10 + (c - '0');
      if (size > INT_MAX) break;
    }
    if (!is_int || size < 1) {
      throw Error(head + "the size of axis " + quote(name) + " must be an integer of at least 1, not " +
                  quote(value));
    }
    if (size > INT_MAX) {
      throw Error(head + "the size of axis " + quote(name) + " is too large: " + value);
    }
    axes.push_back(name);
    dims.push_back(static_cast<int>(size));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }

  bool has_pipe = false;
  for (const auto& a : axes) has_pipe = has_pipe || a == "pipe";
  if (!has_pipe) throw Error(head + "the \"pipe\" axis is required, " + example);

  try {
    return ProcessTopology(axes, dims);
  } catch (const Error& e) {
    // Only the product of the sizes can still be wrong here (too many ranks).
    throw Error(head + e.what());
  }
}

}  // namespace libpipe
