// Token files as training data (make_file_data): llm.c shards and nanoGPT
// .bin files written here, read back as windows of consecutive tokens; the
// validation split, directories, globs, format detection and the exact text of
// the errors (a token beyond the vocabulary names the file and its offset).
#define BOOST_TEST_MODULE data
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "pipe/data.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "shipped_model.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using pipe_test::error_of;

namespace {

// gpt-tiny: vocabulary 256, sequences of 64.
const libpipe::ModelDescription& gpt_tiny() { return pipe_test::shipped_model("gpt-tiny"); }

// A fresh directory per test case, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    char name[] = "/tmp/pipe-test-data-XXXXXX";
    path = ::mkdtemp(name);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

template <class T>
void append(std::ofstream& out, const std::vector<T>& values) {
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(T)));
}

// An llm.c shard: 256 int32 of header (magic, version, count), then the tokens.
void write_llmc(const std::string& path, const std::vector<std::uint16_t>& tokens, std::int32_t magic = 20240520,
                std::int32_t version = 1, std::int64_t count = -1) {
  std::vector<std::int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = static_cast<std::int32_t>(count < 0 ? static_cast<std::int64_t>(tokens.size()) : count);
  std::ofstream out(path, std::ios::binary);
  append(out, header);
  append(out, tokens);
}

void write_raw(const std::string& path, const std::vector<std::uint16_t>& tokens) {
  std::ofstream out(path, std::ios::binary);
  append(out, tokens);
}

// Tokens t, t+1, ... mod 256 starting at `from`: every window shows where it was cut from.
std::vector<std::uint16_t> ramp(std::size_t n, std::uint16_t from) {
  std::vector<std::uint16_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::uint16_t>((from + i) % 256);
  return t;
}

// Every sample is T+1 consecutive ramp tokens: input t..t+T-1, labels t+1..t+T.
void check_windows(libpipe::Batch b) {
  const std::int64_t count = b.input.shape()[0], t_len = b.input.shape()[1];
  const auto* x = b.input.host_data<std::int32_t>();
  const auto* y = b.labels.host_data<std::int32_t>();
  for (std::int64_t i = 0; i < count; ++i)
    for (std::int64_t t = 0; t < t_len; ++t) {
      BOOST_REQUIRE_EQUAL(y[i * t_len + t], (x[i * t_len + t] + 1) % 256);
      if (t > 0) BOOST_REQUIRE_EQUAL(x[i * t_len + t], (x[i * t_len + t - 1] + 1) % 256);
    }
}

std::vector<std::int32_t> first_tokens(libpipe::Batch b) {
  std::vector<std::int32_t> out;
  for (std::int64_t i = 0; i < b.input.shape()[0]; ++i) out.push_back(b.input.host_data<std::int32_t>()[i * 64]);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(llmc_shards_give_windows_of_consecutive_tokens) {
  TempDir dir;
  write_llmc(dir / "a.bin", ramp(1000, 0));
  auto data = libpipe::make_file_data(dir / "a.bin", "", libpipe::DataFormat::automatic, gpt_tiny(), 1);
  BOOST_CHECK_EQUAL(data->describe(),
                    "llm.c token shards: 900 tokens in 1 file for training, 100 for validation (the last 10% of "
                    "each file)");
  const libpipe::Batch b = data->samples(libpipe::Split::train, 0, 32);
  BOOST_REQUIRE(b.input.shape() == libpipe::Shape({32, 64}));
  BOOST_REQUIRE(b.labels.shape() == libpipe::Shape({32, 64}));
  check_windows(b);
  // Deterministic in (seed, index): the same samples again, others under another seed.
  BOOST_CHECK(first_tokens(data->samples(libpipe::Split::train, 0, 32)) == first_tokens(b));
  auto other = libpipe::make_file_data(dir / "a.bin", "", libpipe::DataFormat::automatic, gpt_tiny(), 2);
  BOOST_CHECK(first_tokens(other->samples(libpipe::Split::train, 0, 32)) != first_tokens(b));
  // Validation windows start in the last 100 tokens, [900, 935]: first tokens 900 mod 256 = 132 to 167.
  const libpipe::Batch v = data->samples(libpipe::Split::validation, 0, 50);
  check_windows(v);
  for (std::int32_t t : first_tokens(v)) {
    BOOST_CHECK_GE(t, 132);
    BOOST_CHECK_LE(t, 167);
  }
}

BOOST_AUTO_TEST_CASE(nanogpt_files_and_val_data) {
  TempDir dir;
  write_raw(dir / "train.bin", ramp(300, 10));
  write_raw(dir / "val.bin", ramp(65, 200));  // exactly one window
  auto data = libpipe::make_file_data(dir / "train.bin", dir / "val.bin", libpipe::DataFormat::automatic,
                                      gpt_tiny(), 1);
  BOOST_CHECK_EQUAL(data->describe(), "nanoGPT token files: 300 tokens in 1 file for training, 65 for validation "
                                      "(--val-data " + (dir / "val.bin") + ")");
  check_windows(data->samples(libpipe::Split::train, 0, 16));
  // The one validation window, every time.
  for (std::int32_t t : first_tokens(data->samples(libpipe::Split::validation, 0, 8))) BOOST_CHECK_EQUAL(t, 200);
  write_raw(dir / "short.bin", ramp(64, 0));  // one token short of a window
  BOOST_CHECK_EQUAL(error_of([&] {
                      libpipe::make_file_data(dir / "train.bin", dir / "short.bin", libpipe::DataFormat::automatic,
                                              gpt_tiny(), 1);
                    }),
                    "validation data (--val-data " + (dir / "short.bin") +
                        "): no file holds a window of 65 tokens (sequence length + 1)");
}

BOOST_AUTO_TEST_CASE(directories_globs_and_llmc_validation_shards) {
  TempDir dir;
  write_llmc(dir / "fineweb_train_000001.bin", ramp(100, 0));
  write_llmc(dir / "fineweb_train_000002.bin", ramp(100, 100));
  write_llmc(dir / "fineweb_val_000000.bin", ramp(70, 250));
  std::ofstream(dir / "README") << "not data";  // a directory's .bin files only
  std::ofstream(dir / ".x.bin") << "hidden";
  auto data = libpipe::make_file_data(dir.path.string(), "", libpipe::DataFormat::automatic, gpt_tiny(), 1);
  BOOST_CHECK_EQUAL(data->describe(), "llm.c token shards: 200 tokens in 2 files for training, 70 for validation "
                                      "(the _val_ files of " + dir.path.string() + ")");
  // Both training shards are drawn from; windows never cross from one file into the next.
  std::set<bool> from_second;
  for (std::int32_t t : first_tokens(data->samples(libpipe::Split::train, 0, 200))) from_second.insert(t >= 100);
  BOOST_CHECK_EQUAL(from_second.size(), 2u);
  check_windows(data->samples(libpipe::Split::train, 0, 200));
  for (std::int32_t t : first_tokens(data->samples(libpipe::Split::validation, 0, 20)))
    BOOST_CHECK(t == 250 || t == 251 || t == 252 || t == 253 || t == 254 || t == 255 || t == 0);

  const auto files = libpipe::data_files(dir / "fineweb_train_*.bin", "--data");
  BOOST_REQUIRE_EQUAL(files.size(), 2u);
  BOOST_CHECK_EQUAL(files[0], dir / "fineweb_train_000001.bin");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::data_files(dir / "nothing_*.bin", "--data"); }),
                    "--data " + (dir / "nothing_*.bin") + ": the pattern matches no file");
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::data_files(dir / "missing.bin", "--val-data"); }),
                    "--val-data " + (dir / "missing.bin") + ": no such file or directory");
}

BOOST_AUTO_TEST_CASE(formats_are_detected_or_forced) {
  TempDir dir;
  write_raw(dir / "tokens.dat", ramp(300, 0));
  // Neither an llm.c header nor a .bin name: byte-level text, 600 bytes of it.
  auto bytes = libpipe::make_file_data(dir / "tokens.dat", "", libpipe::DataFormat::automatic, gpt_tiny(), 1);
  BOOST_CHECK_EQUAL(bytes->describe().rfind("bytes of ", 0), 0u);
  auto forced = libpipe::make_file_data(dir / "tokens.dat", "", libpipe::DataFormat::nanogpt, gpt_tiny(), 1);
  check_windows(forced->samples(libpipe::Split::train, 0, 8));
  BOOST_CHECK(libpipe::parse_data_format("llmc") == libpipe::DataFormat::llmc);
  BOOST_CHECK_EQUAL(error_of([] { libpipe::parse_data_format("parquet"); }),
                    "--data-format 'parquet': expected auto, bytes, llmc or nanogpt");
  write_llmc(dir / "a.bin", ramp(200, 0));
  write_raw(dir / "b.bin", ramp(200, 0));
  BOOST_CHECK_EQUAL(error_of([&] {
                      libpipe::make_file_data(dir / "*.bin", "", libpipe::DataFormat::automatic, gpt_tiny(), 1);
                    }),
                    "--data: " + (dir / "a.bin") + " is llmc but " + (dir / "b.bin") +
                        " is nanogpt; give files of one format (or force one with --data-format)");
}

BOOST_AUTO_TEST_CASE(errors_name_the_file_and_what_is_wrong) {
  TempDir dir;
  auto make = [&](const std::string& path) {
    libpipe::make_file_data(path, "", libpipe::DataFormat::automatic, gpt_tiny(), 1);
  };
  write_llmc(dir / "version.bin", ramp(200, 0), 20240520, 3);
  BOOST_CHECK_EQUAL(error_of([&] { make(dir / "version.bin"); }),
                    "--data " + (dir / "version.bin") +
                        ": llm.c shard version 3 is not supported (1: uint16 tokens, 2: uint32 tokens)");
  write_llmc(dir / "count.bin", ramp(200, 0), 20240520, 1, 300);
  BOOST_CHECK_EQUAL(error_of([&] { make(dir / "count.bin"); }),
                    "--data " + (dir / "count.bin") +
                        ": the header says 300 tokens (1,624 bytes with the header) but the file has 1,424 bytes");
  {
    std::ofstream odd(dir / "odd.bin", std::ios::binary);
    odd << "abc";
  }
  BOOST_CHECK_EQUAL(error_of([&] {
                      libpipe::make_file_data(dir / "odd.bin", "", libpipe::DataFormat::nanogpt, gpt_tiny(), 1);
                    }),
                    "--data " + (dir / "odd.bin") + ": 3 bytes, not a whole number of uint16 tokens (nanoGPT format)");
  write_llmc(dir / "short.bin", ramp(100, 0));
  BOOST_CHECK_EQUAL(error_of([&] { make(dir / "short.bin"); }),
                    "--data " + (dir / "short.bin") +
                        ": 100 tokens; with the last 10% held out for validation it needs at least 130 (two windows "
                        "of sequence length + 1), or give --val-data");
  // A token beyond gpt-tiny's 256 names the file, the token offset and the byte.
  std::vector<std::uint16_t> bad(200, 7);
  for (std::size_t i = 0; i < bad.size(); ++i) bad[i] = 300;
  write_llmc(dir / "vocab.bin", bad);
  auto data = libpipe::make_file_data(dir / "vocab.bin", "", libpipe::DataFormat::automatic, gpt_tiny(), 1);
  const std::string e = error_of([&] { data->samples(libpipe::Split::train, 0, 1); });
  BOOST_CHECK_MESSAGE(e.rfind("--data " + (dir / "vocab.bin") + ": token 300 at token offset ", 0) == 0, e);
  BOOST_CHECK_MESSAGE(e.find(") is not below the model's vocabulary of 256") != std::string::npos, e);
}
