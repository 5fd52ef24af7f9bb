// Args: typed accessors, defaults, and the keys they record.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE args
#include <boost/test/unit_test.hpp>

#include "pipe/args.hpp"

using libpipe::Args;

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const libpipe::ArgError& e) {
    return e.key() + ": " + e.what();
  }
  return "(no error)";
}
}  // namespace

BOOST_AUTO_TEST_CASE(typed_access_and_defaults) {
  Args a;
  a.set("dim", std::int64_t{128}, 3);
  a.set("eps", 1e-5, 4);
  a.set("bias", false, 5);
  a.set("act", std::string("gelu"), 6);
  a.set("dims", std::vector<std::int64_t>{1, 2}, 7);
  BOOST_TEST(a.get_int("dim") == 128);
  BOOST_TEST(a.get_float("eps") == 1e-5);
  BOOST_TEST(a.get_float("dim") == 128.0);  // an integer is a fine float
  BOOST_TEST(a.get_bool("bias") == false);
  BOOST_TEST(a.get_string("act") == "gelu");
  BOOST_TEST(a.get_int_list("dims").size() == 2u);
  BOOST_TEST(a.get_int("heads", 4) == 4);
  BOOST_TEST(a.get_bool("missing", true) == true);
  BOOST_TEST(a.line_of("eps") == 4);
  BOOST_TEST(a.line_of("nothing") == 0);
}

BOOST_AUTO_TEST_CASE(errors_name_the_key) {
  Args a;
  a.set("dim", std::string("wide"));
  a.set("heads", std::int64_t{0});
  BOOST_TEST(error_of([&] { a.get_int("width"); }) == "width: missing argument 'width' (an integer)");
  BOOST_TEST(error_of([&] { a.get_int("dim"); }) == "dim: argument 'dim' must be an integer, not string");
  BOOST_TEST(error_of([&] { a.get_int("dim", 3); }) == "dim: argument 'dim' must be an integer, not string");
  BOOST_TEST(error_of([&] { a.get_positive_int("heads"); }) == "heads: argument 'heads' must be at least 1, not 0");
  BOOST_TEST(error_of([&] { a.get_float("dim"); }) == "dim: argument 'dim' must be a number, not string");
}

BOOST_AUTO_TEST_CASE(unread_keys_are_the_unknown_ones) {
  Args a;
  a.set("in_features", std::int64_t{4});
  a.set("out_feature", std::int64_t{4});  // misspelt
  a.get_int("in_features");
  a.get_int("out_features", 1);
  BOOST_TEST(a.unread_keys() == std::vector<std::string>{"out_feature"});
  BOOST_TEST(a.requested_keys().count("out_features") == 1u);
}
