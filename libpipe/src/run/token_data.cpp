// Training data from token files: llm.c's shards and nanoGPT's raw uint16
// files, memory-mapped (a 10 GB dataset costs no memory until windows of it
// are read), and the choice between them and byte-level text (data.hpp).
#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "pipe/data.hpp"
#include "pipe/error.hpp"
#include "pipe/paths.hpp"
#include "run/data_model.hpp"

namespace libpipe {
namespace {

using namespace data_detail;

constexpr std::int32_t kLlmcMagic = 20240520;
constexpr std::size_t kLlmcHeaderBytes = 256 * sizeof(std::int32_t);

// A read-only map of a whole file, unmapped when the last owner goes.
class MappedFile {
 public:
  MappedFile(const std::string& path, const std::string& what) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(what + ": cannot open the file: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int e = errno;
      ::close(fd);
      throw Error(what + ": cannot read the file's size: " + std::strerror(e));
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int e = errno;
      ::close(fd);
      if (p == MAP_FAILED) throw Error(what + ": cannot map the file: " + std::strerror(e));
      data_ = static_cast<const unsigned char*>(p);
      ::madvise(p, size_, MADV_RANDOM);  // windows are drawn at random offsets
    } else {
      ::close(fd);
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<unsigned char*>(data_), size_);
  }

  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

// The first four bytes of a file, or nothing if it is shorter.
bool first_int32(const std::string& path, std::int32_t* value) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t got = ::pread(fd, value, sizeof *value, 0);
  ::close(fd);
  return got == static_cast<ssize_t>(sizeof *value);
}

// A file name ending in ".bin" (and more than it): how nanoGPT and llm.c name token files.
bool bin_name(const std::string& name) { return name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0; }

DataFormat detect(const std::string& path) {
  std::int32_t magic = 0;
  if (first_int32(path, &magic) && magic == kLlmcMagic) return DataFormat::llmc;
  if (bin_name(std::filesystem::path(path).filename().string())) return DataFormat::nanogpt;
  return DataFormat::bytes;
}

// One token file: its map, where its tokens start and their width.
struct TokenFile {
  std::string path;
  std::shared_ptr<MappedFile> map;
  std::size_t offset = 0;  // bytes before the first token
  int width = 2;           // bytes per token
  std::int64_t count = 0;  // tokens

  std::uint32_t token(std::int64_t i) const {
    const unsigned char* p = map->data() + offset + static_cast<std::size_t>(i) * static_cast<std::size_t>(width);
    if (width == 2) {
      std::uint16_t t;
      std::memcpy(&t, p, sizeof t);
      return t;
    }
    std::uint32_t t;
    std::memcpy(&t, p, sizeof t);
    return t;
  }
};

TokenFile open_token_file(const std::string& path, DataFormat format, const std::string& flag) {
  const std::string what = flag + " " + path;
  require_regular_file(path, what);
  TokenFile f;
  f.path = path;
  f.map = std::make_shared<MappedFile>(path, what);
  const std::size_t size = f.map->size();
  if (format == DataFormat::nanogpt) {
    if (size % 2 != 0)
      throw Error(what + ": " + with_commas(static_cast<std::int64_t>(size)) +
                  " bytes, not a whole number of uint16 tokens (nanoGPT format)");
    f.count = static_cast<std::int64_t>(size / 2);
    return f;
  }
  // llm.c: 256 int32 (magic, version, token count, reserved), then the tokens.
  if (size < kLlmcHeaderBytes)
    throw Error(what + ": " + std::to_string(size) + " bytes, shorter than llm.c's 1024-byte header");
  std::int32_t header[3];
  std::memcpy(header, f.map->data(), sizeof header);
  if (header[0] != kLlmcMagic)
    throw Error(what + ": not an llm.c token shard (magic " + std::to_string(header[0]) + ", expected " +
                std::to_string(kLlmcMagic) + ")");
  if (header[1] != 1 && header[1] != 2)
    throw Error(what + ": llm.c shard version " + std::to_string(header[1]) +
                " is not supported (1: uint16 tokens, 2: uint32 tokens)");
  f.width = header[1] == 1 ? 2 : 4;
  f.offset = kLlmcHeaderBytes;
  if (header[2] < 0) throw Error(what + ": the header gives a negative token count " + std::to_string(header[2]));
  f.count = header[2];
  const std::size_t expected = kLlmcHeaderBytes + static_cast<std::size_t>(f.count) * static_cast<std::size_t>(f.width);
  if (size != expected)
    throw Error(what + ": the header says " + with_commas(f.count) + " tokens (" +
                with_commas(static_cast<std::int64_t>(expected)) + " bytes with the header) but the file has " +
                with_commas(static_cast<std::int64_t>(size)) + " bytes");
  return f;
}

// Windows over the token runs of one split: every start position of every run equally likely.
class Windows {
 public:
  struct Run {
    const TokenFile* file;
    std::int64_t begin, end;  // tokens [begin, end) of the file
  };

  void add(const TokenFile* file, std::int64_t begin, std::int64_t end, std::int64_t window) {
    const std::int64_t starts = end - begin - window + 1;
    if (starts <= 0) return;
    runs_.push_back({file, begin, end});
    total_ += starts;
    ends_.push_back(total_);
  }
  std::int64_t starts() const { return total_; }
  std::int64_t tokens() const {
    std::int64_t n = 0;
    for (const Run& r : runs_) n += r.end - r.begin;
    return n;
  }
  std::size_t files() const { return runs_.size(); }

  // The run and the token offset in its file of start number `k` in [0, starts()).
  std::pair<const TokenFile*, std::int64_t> at(std::int64_t k) const {
    const auto i = static_cast<std::size_t>(std::upper_bound(ends_.begin(), ends_.end(), k) - ends_.begin());
    const std::int64_t before = i == 0 ? 0 : ends_[i - 1];
    return {runs_[i].file, runs_[i].begin + (k - before)};
  }

 private:
  std::vector<Run> runs_;
  std::vector<std::int64_t> ends_;  // cumulative start counts
  std::int64_t total_ = 0;
};

class TokenData : public DataSource {
 public:
  TokenData(const std::vector<std::string>& train, const std::vector<std::string>& val, DataFormat format,
            const ModelDescription& model, std::uint64_t seed, const std::string& val_source)
      : io_(model_io(model)), seed_(seed), format_(format), val_source_(val_source) {
    if (io_.input.dtype != DType::int32 || io_.input.shape.size() != 1 || !io_.cross_entropy ||
        label_shape(io_, 1) != batched(1, io_.input.shape))
      throw Error("--data " + train.front() + ": token files need a token model (int32 input [T], next-token "
                  "labels [T]); " + (model.name.empty() ? std::string("the model") : model.name) + " takes " +
                  type_str(io_.input));
    limit_ = std::min(io_.vocab, io_.classes);
    window_ = io_.input.shape[0] + 1;
    for (const auto& path : train) files_.push_back(open_token_file(path, format, "--data"));
    const std::size_t train_files = files_.size();
    // Validation files named by --val-data, or found in the --data directory.
    const std::string val_flag = val_source.rfind("--val-data", 0) == 0 ? "--val-data" : "--data";
    for (const auto& path : val) files_.push_back(open_token_file(path, format, val_flag));
    if (val.empty()) {
      // The last 10% of each file is held out, as for byte-level text.
      for (std::size_t i = 0; i < train_files; ++i) {
        const TokenFile& f = files_[i];
        if (f.count < 2 * window_)
          throw Error("--data " + f.path + ": " + with_commas(f.count) + " tokens; with the last 10% held out for "
                      "validation it needs at least " + std::to_string(2 * window_) +
                      " (two windows of sequence length + 1), or give --val-data");
        const std::int64_t split =
            std::max(window_, std::min(f.count - window_, static_cast<std::int64_t>(f.count * 0.9)));
        train_.add(&f, 0, split, window_);
        val_.add(&f, split, f.count, window_);
      }
    } else {
      for (std::size_t i = 0; i < files_.size(); ++i)
        (i < train_files ? train_ : val_).add(&files_[i], 0, files_[i].count, window_);
    }
    if (train_.starts() == 0)
      throw Error("--data " + train.front() + ": no file holds a window of " + std::to_string(window_) +
                  " tokens (sequence length + 1)");
    if (val_.starts() == 0)
      throw Error("validation data (" + val_source_ + "): no file holds a window of " + std::to_string(window_) +
                  " tokens (sequence length + 1)");
  }

  std::string describe() const override {
    const std::string kind = format_ == DataFormat::llmc ? "llm.c token shards" : "nanoGPT token files";
    return kind + ": " + with_commas(train_.tokens()) + " tokens in " + std::to_string(train_.files()) +
           (train_.files() == 1 ? " file" : " files") + " for training, " + with_commas(val_.tokens()) +
           " for validation (" + val_source_ + ")";
  }

  Batch samples(Split split, std::int64_t first, std::int64_t count) const override {
    const std::int64_t t_len = window_ - 1;
    const Windows& windows = split == Split::train ? train_ : val_;
    Batch b;
    b.input = Tensor::zeros({count, t_len}, DType::int32);
    b.labels = Tensor::zeros({count, t_len}, DType::int32);
    std::int32_t* x = b.input.host_data<std::int32_t>();
    std::int32_t* y = b.labels.host_data<std::int32_t>();
    for (std::int64_t i = 0; i < count; ++i) {
      Rng rng(sample_seed(seed_, split, first + i));
      const auto k = static_cast<std::int64_t>(rng.next_u64() % static_cast<std::uint64_t>(windows.starts()));
      const auto [file, at] = windows.at(k);
      for (std::int64_t t = 0; t < window_; ++t) {
        const std::uint32_t token = file->token(at + t);
        if (token >= static_cast<std::uint64_t>(limit_))
          throw Error("--data " + file->path + ": token " + std::to_string(token) + " at token offset " +
                      with_commas(at + t) + " (byte " +
                      with_commas(static_cast<std::int64_t>(file->offset) + (at + t) * file->width) +
                      ") is not below the model's vocabulary of " + with_commas(limit_));
        if (t < t_len) x[i * t_len + t] = static_cast<std::int32_t>(token);
        if (t > 0) y[i * t_len + t - 1] = static_cast<std::int32_t>(token);
      }
    }
    return b;
  }

 private:
  ModelIo io_;
  std::uint64_t seed_;
  DataFormat format_;
  std::string val_source_;
  std::int64_t limit_ = 0;
  std::int64_t window_ = 0;
  std::vector<TokenFile> files_;  // never resized after the windows point into it
  Windows train_, val_;
};

bool is_llmc_validation(const std::string& path) {
  return std::filesystem::path(path).filename().string().find("_val_") != std::string::npos;
}

}  // namespace

DataFormat parse_data_format(const std::string& text) {
  if (text == "auto") return DataFormat::automatic;
  if (text == "bytes") return DataFormat::bytes;
  if (text == "llmc") return DataFormat::llmc;
  if (text == "nanogpt") return DataFormat::nanogpt;
  throw Error("--data-format '" + text + "': expected auto, bytes, llmc or nanogpt");
}

const char* data_format_name(DataFormat format) {
  switch (format) {
    case DataFormat::automatic: return "auto";
    case DataFormat::bytes: return "bytes";
    case DataFormat::llmc: return "llmc";
    case DataFormat::nanogpt: return "nanogpt";
  }
  return "?";
}

std::vector<std::string> data_files(const std::string& spec, const std::string& flag) {
  namespace fs = std::filesystem;
  std::error_code error;
  std::vector<std::string> files;
  if (fs::is_directory(spec, error)) {
    for (const auto& entry : fs::directory_iterator(spec, error)) {
      const std::string name = entry.path().filename().string();
      if (bin_name(name) && name[0] != '.' && entry.is_regular_file(error)) files.push_back(entry.path().string());
    }
    if (error) throw Error(flag + " " + spec + ": cannot list the directory: " + error.message());
    if (files.empty()) throw Error(flag + " " + spec + ": the directory holds no .bin file (token shards)");
  } else if (fs::exists(spec, error)) {
    files.push_back(spec);
  } else if (spec.find_first_of("*?[") != std::string::npos) {
    glob_t found{};
    const int rc = ::glob(spec.c_str(), GLOB_ERR, nullptr, &found);
    for (std::size_t i = 0; rc == 0 && i < found.gl_pathc; ++i) files.push_back(found.gl_pathv[i]);
    ::globfree(&found);
    if (files.empty()) throw Error(flag + " " + spec + ": the pattern matches no file");
  } else {
    throw Error(flag + " " + spec + ": no such file or directory");
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::unique_ptr<DataSource> make_file_data(const std::string& spec, const std::string& val_spec, DataFormat format,
                                           const ModelDescription& model, std::uint64_t seed) {
  std::vector<std::string> train = data_files(spec, "--data"), val;
  std::string val_source = "the last 10% of each file";
  if (!val_spec.empty()) {
    val = data_files(val_spec, "--val-data");
    val_source = "--val-data " + val_spec;
  } else if (std::filesystem::is_directory(spec)) {
    // llm.c writes its validation shards beside the training ones (fineweb_val_000000.bin).
    std::vector<std::string> rest;
    for (const auto& f : train) (is_llmc_validation(f) ? val : rest).push_back(f);
    if (!val.empty() && !rest.empty()) {
      train = rest;
      val_source = "the _val_ files of " + spec;
    } else {
      val.clear();
    }
  }
  // One format for every file: forced, or detected from the first and required of the rest.
  std::vector<std::string> all = train;
  all.insert(all.end(), val.begin(), val.end());
  const DataFormat chosen = format == DataFormat::automatic ? detect(all.front()) : format;
  if (format == DataFormat::automatic)
    for (const auto& f : all)
      if (detect(f) != chosen)
        throw Error("--data: " + all.front() + " is " + data_format_name(chosen) + " but " + f + " is " +
                    data_format_name(detect(f)) + "; give files of one format (or force one with --data-format)");
  if (chosen == DataFormat::bytes) {
    if (all.size() != 1)
      throw Error("--data " + spec + ": byte-level text takes one file (the last 10% held out), not " +
                  std::to_string(all.size()) + "; token files (llmc, nanogpt) take several and --val-data");
    return make_byte_text_data(all.front(), model, seed);
  }
  return std::make_unique<TokenData>(train, val, chosen, model, seed, val_source);
}

}  // namespace libpipe
