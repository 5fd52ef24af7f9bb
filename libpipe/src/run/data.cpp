// Built-in datasets (see data.hpp).
#include "pipe/data.hpp"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "pipe/cpu_info.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/paths.hpp"
#include "pipe/init.hpp"
#include "pipe/memory_partition.hpp"
#include "run/data_model.hpp"

namespace libpipe {

DataSource::~DataSource() = default;

namespace {

using namespace data_detail;

// The synthetic teacher's weights at most: 2^28 floats (1 GiB).
constexpr double kMaxTeacherFloats = 268435456.0;

class SyntheticData : public DataSource {
 public:
  SyntheticData(const ModelDescription& model, std::uint64_t seed) : io_(model_io(model)), seed_(seed) {
    if (io_.input.dtype == DType::int32) {
      if (!io_.cross_entropy) throw Error("synthetic data for a token model needs a loss that takes class ids");
      if (io_.input.shape.size() != 1 || label_shape(io_, 1) != batched(1, io_.input.shape))
        throw Error("synthetic token data needs input [T] and logits [T, V]; the model has input " +
                    type_str(io_.input) + " and logits " + type_str(io_.loss_input));
    } else {
      if (io_.cross_entropy && !io_.labels.shape.empty())
        throw Error("synthetic data for a float model with class labels needs one class per sample; the model's "
                    "loss takes labels " + type_str(io_.labels) + " (use --data or a regression loss)");
      // The teacher: a fixed random map from the input features to the targets.
      in_features_ = numel(io_.input.shape);
      out_features_ = io_.cross_entropy ? io_.classes : numel(io_.labels.shape);
      // Refused before it is allocated (in double: the product may pass 2^63), as the memory check does not count it.
      const double teacher_floats = static_cast<double>(in_features_) * static_cast<double>(out_features_);
      if (teacher_floats > kMaxTeacherFloats)
        throw Error("the synthetic data's teacher maps " + with_commas(in_features_) + " input features to " +
                    with_commas(out_features_) + " targets: " + byte_size_str(4 * teacher_floats) +
                    " of weights, over its limit of " + byte_size_str(4 * kMaxTeacherFloats) + "; give --data");
      teacher_.resize(static_cast<std::size_t>(in_features_ * out_features_));
      Rng rng(mix_seed(seed, 0x7465616368ULL));
      for (auto& w : teacher_) w = static_cast<float>(rng.normal() / std::sqrt(static_cast<double>(in_features_)));
    }
  }

  std::string describe() const override {
    if (io_.input.dtype == DType::int32)
      return "synthetic arithmetic sequences (vocabulary " + std::to_string(io_.vocab) + ", strides 1,2,3,5,7)";
    return std::string("synthetic teacher ") + (io_.cross_entropy ? "classification" : "regression");
  }

  Batch samples(Split split, std::int64_t first, std::int64_t count) const override {
    Batch b;
    b.input = Tensor::zeros(batched(count, io_.input.shape), io_.input.dtype);
    b.labels = Tensor::zeros(label_shape(io_, count), io_.labels.dtype);
    for (std::int64_t i = 0; i < count; ++i) {
      Rng rng(sample_seed(seed_, split, first + i));
      if (io_.input.dtype == DType::int32)
        token_sample(rng, i, b);
      else
        teacher_sample(rng, i, b);
    }
    return b;
  }

 private:
  void token_sample(Rng& rng, std::int64_t i, Batch& b) const {
    static const std::int64_t kStrides[] = {1, 2, 3, 5, 7};
    const std::int64_t t_len = io_.input.shape[0];
    const std::int64_t v = std::min(io_.vocab, io_.classes);
    const std::int64_t a = static_cast<std::int64_t>(rng.next_u64() % static_cast<std::uint64_t>(v));
    const std::int64_t k = kStrides[rng.next_u64() % 5];
    std::int32_t* x = b.input.host_data<std::int32_t>() + i * t_len;
    std::int32_t* y = b.labels.host_data<std::int32_t>() + i * t_len;
    for (std::int64_t t = 0; t < t_len; ++t) {
      x[t] = static_cast<std::int32_t>((a + k * t) % v);
      y[t] = static_cast<std::int32_t>((a + k * (t + 1)) % v);
    }
  }

  void teacher_sample(Rng& rng, std::int64_t i, Batch& b) const {
    float* x = b.input.host_data<float>() + i * in_features_;
    for (std::int64_t f = 0; f < in_features_; ++f) x[f] = static_cast<float>(rng.normal());
    std::int64_t best = 0;
    float best_value = -INFINITY;
    for (std::int64_t o = 0; o < out_features_; ++o) {
      double acc = 0;
      for (std::int64_t f = 0; f < in_features_; ++f) acc += teacher_[o * in_features_ + f] * x[f];
      if (io_.cross_entropy) {
        if (acc > best_value) best_value = static_cast<float>(acc), best = o;
      } else {
        b.labels.host_data<float>()[i * out_features_ + o] = static_cast<float>(std::tanh(acc));
      }
    }
    if (io_.cross_entropy) b.labels.host_data<std::int32_t>()[i] = static_cast<std::int32_t>(best);
  }

  ModelIo io_;
  std::uint64_t seed_;
  std::int64_t in_features_ = 0, out_features_ = 0;
  std::vector<float> teacher_;
};

// Byte-level text is read whole into every rank's memory: a file beyond half the machine's memory would end in
// std::bad_alloc or the kernel's OOM killer, so it is refused up front, naming both sizes.
void refuse_larger_than_half_the_memory(const std::string& path) {
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  const double memory = machine_memory_bytes();
  if (error || memory <= 0) return;
  if (static_cast<double>(size) <= memory / 2) return;
  char text[160];
  std::snprintf(text, sizeof text, "%.1f GB, more than half of this machine's memory (%.1f GB)",
                static_cast<double>(size) / 1e9, memory / 1e9);
  throw Error("--data " + path + ": " + text + "; byte-level text is read whole into every rank");
}

class ByteTextData : public DataSource {
 public:
  ByteTextData(const std::string& path, const ModelDescription& model, std::uint64_t seed, double validation)
      : path_(path), io_(model_io(model)), seed_(seed) {
    if (io_.input.dtype != DType::int32 || io_.input.shape.size() != 1 || !io_.cross_entropy)
      throw Error("--data " + path + ": byte-level text needs a token model (int32 input [T], cross-entropy); " +
                  (model.name.empty() ? std::string("the model") : model.name) + " takes " + type_str(io_.input));
    if (io_.vocab < 256 || io_.classes < 256)
      throw Error("--data " + path + ": byte-level text needs a vocabulary of at least 256, the model has " +
                  std::to_string(std::min(io_.vocab, io_.classes)));
    require_regular_file(path, "--data " + path);
    refuse_larger_than_half_the_memory(path);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("--data " + path + ": cannot open the file");
    bytes_.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    window_ = io_.input.shape[0] + 1;
    const auto n = static_cast<std::int64_t>(bytes_.size());
    if (n < 2 * window_)
      throw Error("--data " + path + ": the file has " + std::to_string(n) + " bytes; it needs at least " +
                  std::to_string(2 * window_) + " (two windows of sequence length + 1)");
    split_ = std::max(window_, std::min(n - window_, static_cast<std::int64_t>(n * (1.0 - validation))));
  }

  std::string describe() const override {
    return "bytes of " + path_ + " (" + std::to_string(bytes_.size()) + " bytes, " +
           std::to_string(bytes_.size() - split_) + " held out)";
  }

  Batch samples(Split split, std::int64_t first, std::int64_t count) const override {
    const std::int64_t t_len = window_ - 1;
    Batch b;
    b.input = Tensor::zeros({count, t_len}, DType::int32);
    b.labels = Tensor::zeros({count, t_len}, DType::int32);
    const std::int64_t begin = split == Split::train ? 0 : split_;
    const std::int64_t end = split == Split::train ? split_ : static_cast<std::int64_t>(bytes_.size());
    const std::int64_t starts = std::max<std::int64_t>(1, end - begin - window_ + 1);
    for (std::int64_t i = 0; i < count; ++i) {
      Rng rng(sample_seed(seed_, split, first + i));
      const std::int64_t at = begin + static_cast<std::int64_t>(rng.next_u64() % static_cast<std::uint64_t>(starts));
      for (std::int64_t t = 0; t < t_len; ++t) {
        b.input.host_data<std::int32_t>()[i * t_len + t] = bytes_[at + t];
        b.labels.host_data<std::int32_t>()[i * t_len + t] = bytes_[at + t + 1];
      }
    }
    return b;
  }

 private:
  std::string path_;
  ModelIo io_;
  std::uint64_t seed_;
  std::vector<unsigned char> bytes_;
  std::int64_t window_ = 0;
  std::int64_t split_ = 0;  // first validation byte
};

}  // namespace

std::unique_ptr<DataSource> make_synthetic_data(const ModelDescription& model, std::uint64_t seed) {
  return std::make_unique<SyntheticData>(model, seed);
}

std::unique_ptr<DataSource> make_byte_text_data(const std::string& path, const ModelDescription& model,
                                                std::uint64_t seed, double validation_fraction) {
  return std::make_unique<ByteTextData>(path, model, seed, validation_fraction);
}

}  // namespace libpipe
