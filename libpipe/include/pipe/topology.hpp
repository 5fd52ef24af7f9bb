// The logical layout of the ranks of a job: named axes (pipe, data, model)
// with a size each, mapped to ranks row-major as DeepSpeed's ProcessTopology
// does, so that rank numbering and groups match what DeepSpeed users expect.
// Pure arithmetic, no MPI: the grid (grid.hpp) builds communicators from it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "pipe/export.hpp"

namespace libpipe {

// Ranks are numbered row-major over the axes: the last axis varies fastest.
// With axes {pipe, data} the data-parallel replicas of one stage are
// neighbouring ranks, so gradient reductions stay on intra-node links.
class PIPE_API ProcessTopology {
 public:
  // Throws libpipe::Error when there are no axes, the counts differ, an axis
  // name is empty or repeated, a size is below 1 or the product overflows int.
  ProcessTopology(std::vector<std::string> axes, std::vector<int> dims);

  int world_size() const { return world_size_; }
  const std::vector<std::string>& axes() const { return axes_; }  // DeepSpeed get_axis_names
  const std::vector<int>& dims() const { return dims_; }
  bool has_axis(const std::string& axis) const;
  // Throws libpipe::Error naming the axis and the known axes if it is unknown.
  int get_dim(const std::string& axis) const;

  // Every axis must be given exactly once (no slices: use filter_match);
  // an unknown or missing axis or an out-of-range coordinate throws.
  int get_rank(const std::map<std::string, int>& coord) const;
  // Coordinates in the order of axes(); a rank out of range throws.
  std::vector<int> get_coord(int rank) const;
  int get_coord(int rank, const std::string& axis) const;

  // For each axis not in omit_axes, "<axis><inner_sep><coord as %02d>",
  // joined by outer_sep: rank 3 of {a, b} = {2, 2} is "a_01-b_01". Names in
  // omit_axes that are not axes are ignored, as in DeepSpeed.
  std::string get_rank_repr(int rank, const std::vector<std::string>& omit_axes = {"data", "pipe"},
                            const std::string& inner_sep = "_",
                            const std::string& outer_sep = "-") const;

  // Ranks whose coordinate on `axis` is idx, ascending. Unlike DeepSpeed
  // (which returns [] for an idx out of range) an unknown axis or an idx out
  // of range throws, since either is a caller's bug.
  std::vector<int> get_axis_list(const std::string& axis, int idx) const;

  // One list per combination of the other axes' coordinates (row-major over
  // them), each holding the ranks along `axis` in coordinate order: the
  // groups that communicate along that axis. An unknown axis gives {}, as in
  // DeepSpeed, so that hybrid-parallel code can ask for an axis that may be
  // absent.
  std::vector<std::vector<int>> get_axis_comm_lists(const std::string& axis) const;

  // Ranks (ascending) whose coordinates match every entry of the filter;
  // an unknown axis or an out-of-range value throws.
  std::vector<int> filter_match(const std::map<std::string, int>& filter) const;

  // "pipe=2 x data=4"
  std::string str() const;

 private:
  std::size_t axis_index(const std::string& axis, const char* caller) const;
  void check_rank(int rank) const;
  void check_coord(std::size_t axis, int value) const;

  std::vector<std::string> axes_;
  std::vector<int> dims_;
  std::vector<int> strides_;  // rank = sum(coord[i] * strides_[i])
  int world_size_ = 1;
};

// Axes {pipe, data}, dims {num_pp, num_dp}.
PIPE_API ProcessTopology PipeDataParallelTopology(int num_pp, int num_dp);
// Axes {pipe, data, model}, dims {num_pp, num_dp, num_mp} (note the order of
// the arguments differs from the order of the axes, as in DeepSpeed).
PIPE_API ProcessTopology PipeModelDataParallelTopology(int num_pp, int num_mp, int num_dp);

// Parses a command-line topology such as "data=2,pipe=4" or
// "pipe=2,data=2,model=2": axes in the given order, names pipe, data and
// model, "pipe" required. Errors quote the spec, e.g.
//   invalid topology "pipe=2,tensor=2": unknown axis "tensor" (allowed: pipe, data, model)
PIPE_API ProcessTopology parse_topology(const std::string& spec);

}  // namespace libpipe
