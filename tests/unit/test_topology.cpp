// ProcessTopology and parse_topology against DeepSpeed's documented behaviour
// (the examples in deepspeed/runtime/pipe/topology.py) and against the exact
// text of our errors, which users see when a launch is misconfigured.
#define BOOST_TEST_MODULE topology
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <map>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/topology.hpp"
#include "test_util.hpp"

using libpipe::ProcessTopology;
using Ranks = std::vector<int>;
using Lists = std::vector<std::vector<int>>;

namespace {

using pipe_test::error_of;

}  // namespace

BOOST_AUTO_TEST_CASE(deepspeed_row_col_example) {
  ProcessTopology topo({"row", "col"}, {2, 2});
  BOOST_CHECK_EQUAL(topo.world_size(), 4);
  BOOST_CHECK_EQUAL(topo.get_rank({{"row", 1}, {"col", 0}}), 2);
  BOOST_TEST(topo.get_axis_list("col", 1) == Ranks({1, 3}), boost::test_tools::per_element());
  BOOST_TEST(topo.get_axis_list("row", 0) == Ranks({0, 1}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(deepspeed_comm_lists_2x2x2) {
  ProcessTopology topo({"pipe", "data", "model"}, {2, 2, 2});
  BOOST_CHECK(topo.get_axis_comm_lists("pipe") == Lists({{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  BOOST_CHECK(topo.get_axis_comm_lists("data") == Lists({{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  BOOST_CHECK(topo.get_axis_comm_lists("model") == Lists({{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  // DeepSpeed returns [] rather than raising, so hybrid code can ask blindly.
  BOOST_CHECK(topo.get_axis_comm_lists("jeff").empty());
  BOOST_TEST(topo.filter_match({{"pipe", 0}, {"data", 1}}) == Ranks({2, 3}),
             boost::test_tools::per_element());
  BOOST_TEST(topo.filter_match({}) == Ranks({0, 1, 2, 3, 4, 5, 6, 7}),
             boost::test_tools::per_element());
  BOOST_TEST(topo.filter_match({{"model", 1}}) == Ranks({1, 3, 5, 7}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(comm_lists_uneven_shape) {
  // Lists are ordered row-major over the other axes; each list in axis order.
  ProcessTopology topo({"data", "pipe"}, {2, 3});
  BOOST_CHECK(topo.get_axis_comm_lists("pipe") == Lists({{0, 1, 2}, {3, 4, 5}}));
  BOOST_CHECK(topo.get_axis_comm_lists("data") == Lists({{0, 3}, {1, 4}, {2, 5}}));
  ProcessTopology single({"pipe"}, {4});
  BOOST_CHECK(single.get_axis_comm_lists("pipe") == Lists({{0, 1, 2, 3}}));
}

BOOST_AUTO_TEST_CASE(rank_repr) {
  ProcessTopology ab({"a", "b"}, {2, 2});
  BOOST_CHECK_EQUAL(ab.get_rank_repr(3), "a_01-b_01");
  BOOST_CHECK_EQUAL(ab.get_rank_repr(2), "a_01-b_00");
  BOOST_CHECK_EQUAL(ab.get_rank_repr(1, {}, ".", "/"), "a.00/b.01");
  BOOST_CHECK_EQUAL(ab.get_rank_repr(3, {"a"}), "b_01");
  BOOST_CHECK_EQUAL(ab.get_rank_repr(3, {"a", "b"}), "");

  // data and pipe are omitted by default: only the model-parallel rank is
  // left, as DeepSpeed names its checkpoint shards.
  const auto pmd = libpipe::PipeModelDataParallelTopology(2, 2, 2);
  BOOST_CHECK_EQUAL(pmd.get_rank_repr(0), "model_00");
  BOOST_CHECK_EQUAL(pmd.get_rank_repr(5), "model_01");
  BOOST_CHECK_EQUAL(pmd.get_rank_repr(5, {}), "pipe_01-data_00-model_01");
  BOOST_CHECK_EQUAL(pmd.get_rank_repr(6, {"model"}, "=", ","), "pipe=01,data=01");
  BOOST_CHECK_EQUAL(libpipe::PipeDataParallelTopology(2, 2).get_rank_repr(3), "");

  // Zero padding is to two digits, wider values are written in full.
  ProcessTopology wide({"x"}, {120});
  BOOST_CHECK_EQUAL(wide.get_rank_repr(7), "x_07");
  BOOST_CHECK_EQUAL(wide.get_rank_repr(42), "x_42");
  BOOST_CHECK_EQUAL(wide.get_rank_repr(105), "x_105");
}

BOOST_AUTO_TEST_CASE(row_major_last_axis_fastest) {
  ProcessTopology topo({"a", "b", "c"}, {2, 3, 4});
  BOOST_CHECK_EQUAL(topo.world_size(), 24);
  BOOST_TEST(topo.get_coord(0) == Ranks({0, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(topo.get_coord(1) == Ranks({0, 0, 1}), boost::test_tools::per_element());
  BOOST_TEST(topo.get_coord(4) == Ranks({0, 1, 0}), boost::test_tools::per_element());
  BOOST_TEST(topo.get_coord(12) == Ranks({1, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(topo.get_coord(23) == Ranks({1, 2, 3}), boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(topo.get_rank({{"a", 1}, {"b", 2}, {"c", 1}}), 1 * 12 + 2 * 4 + 1);
  BOOST_CHECK_EQUAL(topo.get_coord(23, "b"), 2);
  BOOST_CHECK_EQUAL(topo.get_coord(13, "c"), 1);
}

BOOST_AUTO_TEST_CASE(rank_coord_round_trip) {
  const std::vector<ProcessTopology> shapes = {
      ProcessTopology({"pipe"}, {1}),
      ProcessTopology({"pipe"}, {5}),
      ProcessTopology({"pipe", "data"}, {4, 2}),
      ProcessTopology({"data", "pipe"}, {2, 4}),
      ProcessTopology({"pipe", "data", "model"}, {3, 1, 2}),
      ProcessTopology({"a", "b", "c", "d"}, {2, 3, 1, 5}),
  };
  for (const auto& topo : shapes) {
    BOOST_TEST_CONTEXT("topology " << topo.str()) {
      int expected_size = 1;
      for (int d : topo.dims()) expected_size *= d;
      BOOST_CHECK_EQUAL(topo.world_size(), expected_size);
      for (int r = 0; r < topo.world_size(); ++r) {
        const auto coord = topo.get_coord(r);
        BOOST_REQUIRE_EQUAL(coord.size(), topo.axes().size());
        std::map<std::string, int> named;
        for (std::size_t i = 0; i < coord.size(); ++i) {
          named[topo.axes()[i]] = coord[i];
          BOOST_CHECK_EQUAL(topo.get_coord(r, topo.axes()[i]), coord[i]);
        }
        BOOST_CHECK_EQUAL(topo.get_rank(named), r);
        BOOST_TEST(topo.filter_match(named) == Ranks({r}), boost::test_tools::per_element());
      }
      // The comm lists of each axis partition the ranks.
      for (const auto& axis : topo.axes()) {
        std::vector<int> seen(topo.world_size(), 0);
        for (const auto& list : topo.get_axis_comm_lists(axis)) {
          BOOST_CHECK_EQUAL(static_cast<int>(list.size()), topo.get_dim(axis));
          for (std::size_t k = 0; k < list.size(); ++k) {
            ++seen[list[k]];
            BOOST_CHECK_EQUAL(topo.get_coord(list[k], axis), static_cast<int>(k));
          }
        }
        for (int count : seen) BOOST_CHECK_EQUAL(count, 1);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(accessors_and_factories) {
  const auto pd = libpipe::PipeDataParallelTopology(4, 2);
  BOOST_TEST(pd.axes() == std::vector<std::string>({"pipe", "data"}),
             boost::test_tools::per_element());
  BOOST_TEST(pd.dims() == Ranks({4, 2}), boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(pd.world_size(), 8);
  BOOST_CHECK_EQUAL(pd.str(), "pipe=4 x data=2");
  // data innermost: a stage's replicas are neighbouring ranks.
  BOOST_TEST(pd.get_axis_list("pipe", 1) == Ranks({2, 3}), boost::test_tools::per_element());

  // Arguments (pp, mp, dp); axes (pipe, data, model).
  const auto pmd = libpipe::PipeModelDataParallelTopology(2, 3, 4);
  BOOST_TEST(pmd.axes() == std::vector<std::string>({"pipe", "data", "model"}),
             boost::test_tools::per_element());
  BOOST_TEST(pmd.dims() == Ranks({2, 4, 3}), boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(pmd.world_size(), 24);
  BOOST_CHECK_EQUAL(pmd.get_dim("model"), 3);
  BOOST_CHECK_EQUAL(pmd.get_dim("data"), 4);
  BOOST_CHECK(pmd.has_axis("model"));
  BOOST_CHECK(!pmd.has_axis("tensor"));
  BOOST_CHECK(!pd.has_axis("model"));
}

BOOST_AUTO_TEST_CASE(constructor_errors) {
  BOOST_CHECK_EQUAL(error_of([] { ProcessTopology({}, {}); }),
                    "a process topology needs at least one axis");
  BOOST_CHECK_EQUAL(error_of([] { ProcessTopology({"pipe", "data"}, {2, 2, 2}); }),
                    "a process topology needs one size per axis, but got 2 axes (pipe, data) and "
                    "3 sizes");
  BOOST_CHECK_EQUAL(error_of([] { ProcessTopology({"pipe", "data"}, {2, 0}); }),
                    "axis \"data\" of the process topology has size 0; every axis needs a size "
                    "of at least 1");
  BOOST_CHECK_EQUAL(error_of([] { ProcessTopology({"pipe", "data", "pipe"}, {2, 2, 2}); }),
                    "axis \"pipe\" appears twice in the process topology (axes: pipe, data, pipe)");
  BOOST_CHECK_EQUAL(error_of([] { ProcessTopology({"pipe", ""}, {2, 2}); }),
                    "axis 1 of the process topology has an empty name");
  BOOST_CHECK_EQUAL(error_of([] { ProcessTopology({"a", "b", "c"}, {2048, 2048, 1024}); }),
                    "the process topology a=2048 x b=2048 x c=1024 needs more than 2147483647 "
                    "ranks");
}

BOOST_AUTO_TEST_CASE(lookup_errors_name_the_value) {
  const auto topo = libpipe::PipeDataParallelTopology(2, 4);
  // Out-of-range coordinate.
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_rank({{"pipe", 1}, {"data", 4}}); }),
                    "coordinate data=4 is out of range for the topology pipe=2 x data=4, where "
                    "data runs from 0 to 3");
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_rank({{"pipe", -1}, {"data", 0}}); }),
                    "coordinate pipe=-1 is out of range for the topology pipe=2 x data=4, where "
                    "pipe runs from 0 to 1");
  // Missing axis.
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_rank({{"pipe", 1}}); }),
                    "get_rank needs a coordinate on every axis of the topology pipe=2 x data=4, "
                    "but \"data\" is missing (use filter_match for a partial one)");
  // Unknown axis, reported even when a known one is also missing (a typo).
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_rank({{"pipe", 1}, {"data_", 0}}); }),
                    "unknown axis \"data_\" in get_rank: the topology pipe=2 x data=4 has the "
                    "axes pipe, data");
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_dim("model"); }),
                    "unknown axis \"model\" in get_dim: the topology pipe=2 x data=4 has the "
                    "axes pipe, data");
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_coord(0, "model"); }),
                    "unknown axis \"model\" in get_coord: the topology pipe=2 x data=4 has the "
                    "axes pipe, data");
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_axis_list("model", 0); }),
                    "unknown axis \"model\" in get_axis_list: the topology pipe=2 x data=4 has "
                    "the axes pipe, data");
  BOOST_CHECK_EQUAL(error_of([&] { topo.filter_match({{"model", 0}}); }),
                    "unknown axis \"model\" in filter_match: the topology pipe=2 x data=4 has "
                    "the axes pipe, data");
  // Out-of-range rank.
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_coord(8); }),
                    "rank 8 is out of range for the topology pipe=2 x data=4, which has ranks 0 "
                    "to 7");
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_coord(-1, "pipe"); }),
                    "rank -1 is out of range for the topology pipe=2 x data=4, which has ranks 0 "
                    "to 7");
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_rank_repr(8); }),
                    "rank 8 is out of range for the topology pipe=2 x data=4, which has ranks 0 "
                    "to 7");
  // Out-of-range values in the list queries.
  BOOST_CHECK_EQUAL(error_of([&] { topo.get_axis_list("pipe", 2); }),
                    "coordinate pipe=2 is out of range for the topology pipe=2 x data=4, where "
                    "pipe runs from 0 to 1");
  BOOST_CHECK_EQUAL(error_of([&] { topo.filter_match({{"data", 7}}); }),
                    "coordinate data=7 is out of range for the topology pipe=2 x data=4, where "
                    "data runs from 0 to 3");
}

BOOST_AUTO_TEST_CASE(parse_valid_specs) {
  const auto a = libpipe::parse_topology("data=2,pipe=4");
  BOOST_TEST(a.axes() == std::vector<std::string>({"data", "pipe"}),
             boost::test_tools::per_element());
  BOOST_TEST(a.dims() == Ranks({2, 4}), boost::test_tools::per_element());
  BOOST_CHECK_EQUAL(a.str(), "data=2 x pipe=4");

  const auto b = libpipe::parse_topology("pipe=2,data=2,model=2");
  BOOST_CHECK_EQUAL(b.str(), "pipe=2 x data=2 x model=2");
  BOOST_CHECK(b.get_axis_comm_lists("pipe") == Lists({{0, 4}, {1, 5}, {2, 6}, {3, 7}}));

  BOOST_CHECK_EQUAL(libpipe::parse_topology("pipe=1").str(), "pipe=1");
  BOOST_CHECK_EQUAL(libpipe::parse_topology(" pipe = 3 , data=2 ").str(), "pipe=3 x data=2");
  BOOST_CHECK_EQUAL(libpipe::parse_topology("model=2,pipe=08").str(), "model=2 x pipe=8");
}

BOOST_AUTO_TEST_CASE(parse_invalid_specs) {
  const auto parse = [](const std::string& spec) {
    return error_of([&] { libpipe::parse_topology(spec); });
  };
  BOOST_CHECK_EQUAL(parse(""),
                    "invalid topology \"\": expected axis=size pairs separated by commas, e.g. "
                    "\"pipe=2,data=2\"");
  BOOST_CHECK_EQUAL(parse("pipe=2,"),
                    "invalid topology \"pipe=2,\": empty entry; expected axis=size pairs "
                    "separated by commas, e.g. \"pipe=2,data=2\"");
  BOOST_CHECK_EQUAL(parse("pipe2"),
                    "invalid topology \"pipe2\": \"pipe2\" is not of the form axis=size (e.g. "
                    "\"pipe=2,data=2\")");
  BOOST_CHECK_EQUAL(parse("pipe=2=3"),
                    "invalid topology \"pipe=2=3\": \"pipe=2=3\" is not of the form axis=size "
                    "(e.g. \"pipe=2,data=2\")");
  BOOST_CHECK_EQUAL(parse("pipe=2,=2"),
                    "invalid topology \"pipe=2,=2\": \"=2\" is not of the form axis=size (e.g. "
                    "\"pipe=2,data=2\")");
  BOOST_CHECK_EQUAL(parse("pipe=2;data=2"),
                    "invalid topology \"pipe=2;data=2\": \"pipe=2;data=2\" is not of the form "
                    "axis=size (e.g. \"pipe=2,data=2\")");
  BOOST_CHECK_EQUAL(parse("pipe=2,tensor=2"),
                    "invalid topology \"pipe=2,tensor=2\": unknown axis \"tensor\" (allowed: "
                    "pipe, data, model)");
  BOOST_CHECK_EQUAL(parse("Pipe=2"),
                    "invalid topology \"Pipe=2\": unknown axis \"Pipe\" (allowed: pipe, data, "
                    "model)");
  BOOST_CHECK_EQUAL(parse("pipe=2,data=2,pipe=4"),
                    "invalid topology \"pipe=2,data=2,pipe=4\": axis \"pipe\" is given twice");
  BOOST_CHECK_EQUAL(parse("pipe=0"),
                    "invalid topology \"pipe=0\": the size of axis \"pipe\" must be an integer "
                    "of at least 1, not \"0\"");
  BOOST_CHECK_EQUAL(parse("pipe=2,data=-1"),
                    "invalid topology \"pipe=2,data=-1\": the size of axis \"data\" must be an "
                    "integer of at least 1, not \"-1\"");
  BOOST_CHECK_EQUAL(parse("pipe=two"),
                    "invalid topology \"pipe=two\": the size of axis \"pipe\" must be an integer "
                    "of at least 1, not \"two\"");
  BOOST_CHECK_EQUAL(parse("pipe=2x"),
                    "invalid topology \"pipe=2x\": the size of axis \"pipe\" must be an integer "
                    "of at least 1, not \"2x\"");
  BOOST_CHECK_EQUAL(parse("pipe=1.5"),
                    "invalid topology \"pipe=1.5\": the size of axis \"pipe\" must be an integer "
                    "of at least 1, not \"1.5\"");
  BOOST_CHECK_EQUAL(parse("pipe=99999999999"),
                    "invalid topology \"pipe=99999999999\": the size of axis \"pipe\" is too "
                    "large: 99999999999");
  BOOST_CHECK_EQUAL(parse("pipe=65536,data=65536"),
                    "invalid topology \"pipe=65536,data=65536\": the process topology pipe=65536 "
                    "x data=65536 needs more than 2147483647 ranks");
  BOOST_CHECK_EQUAL(parse("data=2,model=2"),
                    "invalid topology \"data=2,model=2\": the \"pipe\" axis is required, e.g. "
                    "\"pipe=2,data=2\"");
}
