// Unit tests of the safetensors reader and writer: a round trip through a
// file, the writer's exact layout (name order, space padding to 8 bytes,
// metadata first), a file written by the real `safetensors` package
// (tests/data/safetensors/torch-written.safetensors, made by
// scripts/make-reference-fixtures --torch-written) read value for value, and
// the exact one-line error of every kind of malformed file.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE safetensors
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/safetensors.hpp"
#include "pipe/tensor.hpp"
#include "test_util.hpp"

namespace {

namespace fs = std::filesystem;
using libpipe::DType;
using libpipe::Shape;
using libpipe::Tensor;

using pipe_test::error_of;

// A private directory per test process, removed at exit.
struct TempDir {
  fs::path dir;
  TempDir() {
    dir = fs::temp_directory_path() / ("pipe_test_safetensors_" + std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
};

TempDir& temp() {
  static TempDir instance;
  return instance;
}

std::string write_bytes(const std::string& name, const std::string& bytes) {
  const std::string path = temp().path(name);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string u64_le(std::uint64_t v) {
  std::string s;
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}

// A file made by hand: length field, header text as given (no padding), data.
std::string file_of(const std::string& header, const std::string& data = "") {
  return u64_le(header.size()) + header + data;
}

// The error reading `bytes` from a file gives, with the file's path replaced by "F".
std::string read_error(const std::string& bytes) {
  static int counter = 0;
  const std::string path = write_bytes("bad" + std::to_string(counter++) + ".safetensors", bytes);
  std::string message = error_of([&] { libpipe::read_safetensors(path); });
  if (message.compare(0, path.size(), path) == 0) message = "F" + message.substr(path.size());
  // The in-memory parser must agree, word for word.
  std::string parsed = error_of([&] { libpipe::parse_safetensors(bytes.data(), bytes.size(), "F"); });
  BOOST_TEST(parsed == message);
  return message;
}

Tensor f32_tensor(const Shape& shape, std::vector<float> values) {
  Tensor t = Tensor::empty(shape, DType::float32);
  BOOST_REQUIRE(static_cast<std::int64_t>(values.size()) == t.numel());
  if (!values.empty()) std::memcpy(t.data(), values.data(), t.bytes());
  return t;
}

Tensor i32_tensor(const Shape& shape, std::vector<std::int32_t> values) {
  Tensor t = Tensor::empty(shape, DType::int32);
  BOOST_REQUIRE(static_cast<std::int64_t>(values.size()) == t.numel());
  if (!values.empty()) std::memcpy(t.data(), values.data(), t.bytes());
  return t;
}

Tensor bf16_tensor(const Shape& shape, std::vector<std::uint16_t> bits) {
  Tensor t = Tensor::empty(shape, DType::bfloat16);
  BOOST_REQUIRE(static_cast<std::int64_t>(bits.size()) == t.numel());
  if (!bits.empty()) std::memcpy(t.data(), bits.data(), t.bytes());
  return t;
}

template <typename T>
std::vector<T> values_of(const Tensor& t) {
  BOOST_REQUIRE(libpipe::dtype_size(t.dtype()) == sizeof(T));
  std::vector<T> v(static_cast<std::size_t>(t.numel()));
  if (!v.empty()) std::memcpy(v.data(), t.data(), t.bytes());
  return v;
}

// bfloat16 is the top half of a float32.
float bf16_to_float(std::uint16_t bits) {
  const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

const std::string kF32a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
const std::string kEightBytes(8, '\x01');

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_keeps_names_dtypes_shapes_values_and_metadata) {
  const Tensor w = f32_tensor({2, 3}, {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f, -7.0f});
  const Tensor ids = i32_tensor({4}, {0, -1, 2147483647, -2147483647 - 1});
  const Tensor half = bf16_tensor({3}, {0x3f80, 0xc000, 0x7f80});  // 1, -2, +inf
  const Tensor scalar = f32_tensor({}, {42.0f});
  const Tensor empty = Tensor::empty({0, 5}, DType::float32);
  const libpipe::SafetensorsMetadata metadata = {{"format", "pt"}, {"step", "100"}, {"note", "\"quoted\" \xc3\xa9"}};
  const std::string path = temp().path("round_trip.safetensors");
  libpipe::write_safetensors(path, {{"w", &w}, {"ids", &ids}, {"half", &half}, {"scalar", &scalar}, {"e", &empty}},
                             metadata);

  libpipe::SafetensorsMetadata read_metadata;
  const auto tensors = libpipe::read_safetensors(path, &read_metadata);
  BOOST_TEST(read_metadata == metadata);
  BOOST_TEST(tensors.size() == 5u);
  BOOST_TEST(tensors.at("w").dtype() == DType::float32);
  BOOST_TEST(tensors.at("w").shape() == Shape({2, 3}));
  BOOST_TEST(values_of<float>(tensors.at("w")) == values_of<float>(w));
  BOOST_TEST(tensors.at("ids").dtype() == DType::int32);
  BOOST_TEST(values_of<std::int32_t>(tensors.at("ids")) == values_of<std::int32_t>(ids));
  BOOST_TEST(tensors.at("half").dtype() == DType::bfloat16);
  BOOST_TEST(values_of<std::uint16_t>(tensors.at("half")) == values_of<std::uint16_t>(half));
  BOOST_TEST(tensors.at("scalar").shape() == Shape{});
  BOOST_TEST(values_of<float>(tensors.at("scalar")) == std::vector<float>{42.0f});
  BOOST_TEST(tensors.at("e").shape() == Shape({0, 5}));
  BOOST_TEST(tensors.at("e").numel() == 0);
  BOOST_TEST((tensors.at("w").device() == libpipe::Device::cpu));

  // serialize_safetensors gives the same bytes, and the in-memory parser reads them.
  const auto bytes = libpipe::serialize_safetensors(
      {{"w", &w}, {"ids", &ids}, {"half", &half}, {"scalar", &scalar}, {"e", &empty}}, metadata, path);
  BOOST_TEST(std::string(bytes.begin(), bytes.end()) == read_bytes(path));
  BOOST_TEST(libpipe::parse_safetensors(bytes.data(), bytes.size(), "mem").size() == 5u);
  BOOST_TEST(!fs::exists(path + ".partial"));
}

BOOST_AUTO_TEST_CASE(writer_layout_is_name_order_with_space_padding) {
  const Tensor b = f32_tensor({1}, {2.0f});
  const Tensor a = i32_tensor({2}, {7, 8});
  const std::string path = temp().path("layout.safetensors");
  libpipe::write_safetensors(path, {{"b", &b}, {"a", &a}}, {{"k", "v"}});
  const std::string header = R"({"__metadata__":{"k":"v"},"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  const std::string padded = header + std::string((8 - header.size() % 8) % 8, ' ');
  BOOST_TEST(padded.size() % 8 == 0u);
  const std::string data = std::string("\x07\0\0\0\x08\0\0\0", 8) + std::string("\0\0\0\x40", 4);
  BOOST_TEST(read_bytes(path) == u64_le(padded.size()) + padded + data);

  // No metadata: no __metadata__ key, and the reader reports none.
  libpipe::write_safetensors(path, {{"b", &b}});
  const std::string bare = R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  BOOST_TEST(bare.size() == 54u);  // padded with two spaces to 56
  BOOST_TEST(read_bytes(path) == u64_le(56) + bare + "  " + std::string("\0\0\0\x40", 4));
  libpipe::SafetensorsMetadata metadata = {{"stale", "x"}};
  libpipe::read_safetensors(path, &metadata);
  BOOST_TEST(metadata.empty());
}

BOOST_AUTO_TEST_CASE(reads_a_file_written_by_the_safetensors_package) {
  // Written by safetensors 0.8.0's save_file from torch tensors: it orders
  // the data by dtype alignment, not by name, and its header is not sorted.
  const std::string path = std::string(PIPE_TEST_DATA_DIR) + "/safetensors/torch-written.safetensors";
  libpipe::SafetensorsMetadata metadata;
  const auto t = libpipe::read_safetensors(path, &metadata);
  BOOST_TEST(metadata.size() == 2u);
  BOOST_TEST(metadata.at("format") == "pt");
  BOOST_TEST(metadata.at("written_by") == "safetensors 0.8.0");
  BOOST_TEST(t.size() == 7u);

  BOOST_TEST(t.at("f32").dtype() == DType::float32);
  BOOST_TEST(t.at("f32").shape() == Shape({2, 3}));
  BOOST_TEST(values_of<float>(t.at("f32")) == std::vector<float>({1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -1e6f}));

  BOOST_TEST(t.at("bf16").dtype() == DType::bfloat16);
  std::vector<float> bf16;
  for (auto bits : values_of<std::uint16_t>(t.at("bf16"))) bf16.push_back(bf16_to_float(bits));
  // 0.1 rounds to the nearest bfloat16, 0.10009765625.
  BOOST_TEST(bf16 == std::vector<float>({1.0f, -0.5f, 3.0f, 256.0f, 0.10009765625f}));

  BOOST_TEST(t.at("i32").dtype() == DType::int32);
  BOOST_TEST(values_of<std::int32_t>(t.at("i32")) == std::vector<std::int32_t>({7, -8, 2147483647}));

  // F64 narrows to float32 and I64 to int32.
  BOOST_TEST(t.at("f64").dtype() == DType::float32);
  BOOST_TEST(values_of<float>(t.at("f64")) == std::vector<float>({0.25f, static_cast<float>(-1.0 / 3.0)}));
  BOOST_TEST(t.at("i64").dtype() == DType::int32);
  BOOST_TEST(t.at("i64").shape() == Shape({2, 2}));
  BOOST_TEST(values_of<std::int32_t>(t.at("i64")) == std::vector<std::int32_t>({1, -2, 3, -2147483647 - 1}));

  BOOST_TEST(t.at("scalar").shape() == Shape{});
  BOOST_TEST(values_of<float>(t.at("scalar")) == std::vector<float>{42.0f});
  BOOST_TEST(t.at("empty").shape() == Shape({0, 3}));
}

BOOST_AUTO_TEST_CASE(hand_made_files_with_unsorted_offsets_and_padding_are_read) {
  // Data order b then a, header order a then b, trailing spaces: all legal.
  const std::string header = R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[4,8]},)"
                             R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}   )";
  const std::string data = std::string("\x02\0\0\0\x01\0\0\0", 8);
  const std::string bytes = file_of(header, data);
  const auto t = libpipe::parse_safetensors(bytes.data(), bytes.size(), "m");
  BOOST_TEST(values_of<std::int32_t>(t.at("a")) == std::vector<std::int32_t>{1});
  BOOST_TEST(values_of<std::int32_t>(t.at("b")) == std::vector<std::int32_t>{2});
}

BOOST_AUTO_TEST_CASE(truncated_files) {
  BOOST_TEST(read_error("") == "F: truncated: 0 bytes, shorter than the 8-byte header length field");
  BOOST_TEST(read_error(std::string("\x10\0\0", 3)) ==
             "F: truncated: 3 bytes, shorter than the 8-byte header length field");
  BOOST_TEST(read_error(u64_le(100) + std::string(50, ' ')) ==
             "F: truncated: the header length is 100 bytes but only 50 bytes follow the length field");

  // A good file cut short in its data area.
  const Tensor w = f32_tensor({2, 3}, {1, 2, 3, 4, 5, 6});
  const auto whole = libpipe::serialize_safetensors({{"w", &w}}, {}, "x");
  const std::string cut(whole.begin(), whole.end() - 4);
  BOOST_TEST(read_error(cut) == "F: tensor 'w': data_offsets [0, 24] run past the end of the data area (20 bytes)");
}

BOOST_AUTO_TEST_CASE(header_length_out_of_bounds) {
  BOOST_TEST(read_error(u64_le(1ull << 40) + "{}") ==
             "F: header length 1099511627776 is larger than the limit of 100000000 bytes");
  BOOST_TEST(read_error(u64_le(~0ull)) ==
             "F: header length 18446744073709551615 is larger than the limit of 100000000 bytes");
  BOOST_TEST(read_error(u64_le(100'000'001) + "{}") ==
             "F: header length 100000001 is larger than the limit of 100000000 bytes");
  BOOST_TEST(read_error(u64_le(0)) == "F: header length 0 is too small to hold a JSON object");
  BOOST_TEST(read_error(file_of("{")) == "F: header length 1 is too small to hold a JSON object");
}

BOOST_AUTO_TEST_CASE(header_not_json_or_not_an_object) {
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32",)")) ==
             "F: header is not valid JSON: parse error at line 1, column 21: syntax error while parsing object key "
             "- unexpected end of input; expected string literal");
  BOOST_TEST(read_error(file_of(R"({"a" 1})")) ==
             "F: header is not valid JSON: parse error at line 1, column 6: syntax error while parsing object "
             "separator - unexpected number literal; expected ':'");
  BOOST_TEST(read_error(file_of("{} x")) ==
             "F: header is not valid JSON: parse error at line 1, column 4: syntax error while parsing value - "
             "invalid literal; last read: '{} x'; expected end of input");
  BOOST_TEST(read_error(file_of("[1, 2]")) == "F: header does not start with '{' (it must be a JSON object)");
  BOOST_TEST(read_error(file_of(" {}")) == "F: header does not start with '{' (it must be a JSON object)");
  // The smallest valid file: no tensors, no data.
  BOOST_TEST(libpipe::parse_safetensors(file_of("{}").data(), 10, "m").empty());
}

BOOST_AUTO_TEST_CASE(offsets_out_of_range_overlapping_or_leaving_gaps) {
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234")) ==
             "F: tensor 'a': data_offsets [0, 8] run past the end of the data area (4 bytes)");
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", kEightBytes)) ==
             "F: tensor 'a': data_offsets [8, 0] end before they begin");
  BOOST_TEST(read_error(file_of("{" + kF32a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                std::string(12, 'x'))) ==
             "F: tensors 'a' and 'b' overlap (data_offsets [0, 8] and [4, 12])");
  // The same bytes under two names is an overlap too.
  BOOST_TEST(read_error(file_of("{" + kF32a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                kEightBytes)) == "F: tensors 'a' and 'b' overlap (data_offsets [0, 8] and [0, 8])");
  BOOST_TEST(read_error(file_of("{" + kF32a + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
                                std::string(20, 'x'))) ==
             "F: data bytes [8, 12) belong to no tensor (before tensor 'b')");
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", std::string(12, 'x'))) ==
             "F: data bytes [0, 4) belong to no tensor (before tensor 'a')");
  BOOST_TEST(read_error(file_of("{" + kF32a + "}", std::string(16, 'x'))) ==
             "F: data bytes [8, 16) at the end of the file belong to no tensor");
  BOOST_TEST(read_error(file_of("{}", "x")) == "F: data bytes [0, 1) at the end of the file belong to no tensor");
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", kEightBytes)) ==
             "F: tensor 'a': data_offsets must be two non-negative integers [begin, end], not [0,8,9]");
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-1,7]}})", kEightBytes)) ==
             "F: tensor 'a': data_offsets must be two non-negative integers [begin, end], not [-1,7]");
}

BOOST_AUTO_TEST_CASE(byte_size_must_match_dtype_and_shape) {
  BOOST_TEST(
      read_error(file_of(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", std::string(20, 'x'))) ==
      "F: tensor 'w': F32[2, 3] needs 24 bytes but data_offsets [0, 20] hold 20");
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,8]}})", kEightBytes)) ==
             "F: tensor 'w': BF16[3] needs 6 bytes but data_offsets [0, 8] hold 8");
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":"F64","shape":[],"data_offsets":[0,4]}})", "1234")) ==
             "F: tensor 'w': F64[] needs 8 bytes but data_offsets [0, 4] hold 4");
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                                kEightBytes)) == "F: tensor 'w': shape [4294967296, 4294967296] is too large");
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,8]}})", kEightBytes)) ==
             "F: tensor 'w': shape must be an array of non-negative integers, not [2,-3]");
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", kEightBytes)) ==
             "F: tensor 'w': shape must be an array of non-negative integers, not [2.0]");
}

BOOST_AUTO_TEST_CASE(unknown_and_unsupported_dtypes_name_the_tensor) {
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", kEightBytes)) ==
             "F: tensor 'w': unknown dtype 'F33'");
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", kEightBytes)) ==
             "F: tensor 'w': unknown dtype 'f32'");
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", kEightBytes)) ==
             "F: tensor 'w': dtype F16 is not supported (libpipe reads F32, BF16, I32, F64 and I64)");
  BOOST_TEST(read_error(file_of(R"({"w":{"dtype":32,"shape":[2],"data_offsets":[0,8]}})", kEightBytes)) ==
             "F: tensor 'w': dtype must be a string, not number");
  // I64 narrows to int32 only when every value fits.
  std::string big(8, '\0');
  big[4] = 1;  // 2^32
  BOOST_TEST(read_error(file_of(R"({"n":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", big)) ==
             "F: tensor 'n': I64 value 4294967296 at element 0 does not fit int32");
}

BOOST_AUTO_TEST_CASE(duplicates_and_malformed_entries) {
  BOOST_TEST(read_error(file_of("{" + kF32a + "," + kF32a + "}", kEightBytes)) ==
             "F: tensor 'a' appears more than once in the header");
  BOOST_TEST(read_error(file_of(R"({"__metadata__":{},"__metadata__":{}})")) ==
             "F: tensor '__metadata__' appears more than once in the header");
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}})",
                                kEightBytes)) == "F: tensor 'a': field 'dtype' appears more than once");
  BOOST_TEST(read_error(file_of(R"({"__metadata__":{"k":"1","k":"2"}})")) ==
             "F: __metadata__ has the key 'k' more than once");
  BOOST_TEST(read_error(file_of(R"({"a":[0,8]})")) == "F: tensor 'a': header entry must be a JSON object, not array");
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32","shape":[2]}})", kEightBytes)) ==
             "F: tensor 'a': missing field 'data_offsets'");
  BOOST_TEST(read_error(file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", kEightBytes)) ==
             "F: tensor 'a': unknown field 'x' (expected dtype, shape and data_offsets)");
  BOOST_TEST(read_error(file_of(R"({"__metadata__":{"step":100}})")) ==
             "F: __metadata__ value of 'step' must be a string, not number");
  BOOST_TEST(read_error(file_of(R"({"__metadata__":["a"]})")) ==
             "F: __metadata__ must be a JSON object of strings, not array");
}

BOOST_AUTO_TEST_CASE(file_and_writer_errors) {
  const std::string missing = temp().path("missing.safetensors");
  BOOST_TEST(error_of([&] { libpipe::read_safetensors(missing); }) ==
             missing + ": cannot open safetensors file: No such file or directory");

  const Tensor a = f32_tensor({1}, {1.0f});
  const Tensor undefined;
  const std::string out = temp().path("out.safetensors");
  BOOST_TEST(error_of([&] {
               libpipe::write_safetensors(out, {{"a", &a}, {"a", &a}});
             }) == out + ": tensor 'a' is given more than once");
  BOOST_TEST(error_of([&] {
               libpipe::write_safetensors(out, {{"__metadata__", &a}});
             }) == out + ": '__metadata__' is reserved and cannot name a tensor");
  BOOST_TEST(error_of([&] {
               libpipe::write_safetensors(out, {{"u", &undefined}});
             }) == out + ": tensor 'u': has no storage");
  BOOST_TEST(error_of([&] {
               libpipe::write_safetensors(out, {{"u", nullptr}});
             }) == out + ": tensor 'u': has no storage");
  BOOST_TEST(error_of([&] {
               libpipe::write_safetensors(out, {{"bad\xff", &a}});
             }).rfind(out + ": cannot write the header: invalid UTF-8 byte", 0) == 0u);
  BOOST_TEST(!fs::exists(out));
  const std::string no_dir = temp().path("no/such/dir.safetensors");
  BOOST_TEST(error_of([&] {
               libpipe::write_safetensors(no_dir, {{"a", &a}});
             }) == no_dir + ": cannot create '" + no_dir + ".partial': No such file or directory");
}
