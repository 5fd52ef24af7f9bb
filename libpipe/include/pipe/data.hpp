// Training data: where each micro-batch's inputs (first stage) and labels
// (last stage) come from. Every source is deterministic in (seed, sample
// index), so any rank can produce any sample without communication and a run
// is the same computation whatever the stage count or data-parallel degree.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

// Host tensors, whatever the device trained on: the engine copies them there.
struct Batch {
  Tensor input;   // [B, input shape...] of the model's input dtype
  Tensor labels;  // int32 [B, ...] class ids, or float32 targets for MSE
};

enum class Split { train, validation };

class PIPE_API DataSource {
 public:
  virtual ~DataSource();
  virtual std::string describe() const = 0;
  // Samples [first, first + count) of a split; sample indices grow without
  // bound (sources wrap or generate as needed).
  virtual Batch samples(Split split, std::int64_t first, std::int64_t count) const = 0;
};

// The built-in synthetic dataset, chosen by the model's input and loss:
//  - token models (int32 input, cross-entropy over V): sequences x_t = (a + k t) mod V
//    with a random start a and a stride k drawn from {1, 2, 3, 5, 7}; labels are the next
//    token. A model can learn it (the stride is visible in any two tokens), so the loss
//    falls well below ln V;
//  - float models with cross-entropy over C classes: x ~ N(0, 1), label = argmax of a fixed
//    random linear "teacher" W x (W seeded by `seed`);
//  - float models with MSE: target = tanh of the teacher's output, shaped like the loss input.
// Validation samples come from another stream of the same generator.
PIPE_API std::unique_ptr<DataSource> make_synthetic_data(const ModelDescription& model, std::uint64_t seed);

// Byte-level language modelling on a file: sample i is a window of T + 1 bytes
// at an offset drawn from (seed, i); input = first T bytes, labels = last T.
// The last `validation_fraction` of the file is held out for validation.
// Needs a token model whose vocabulary is at least 256; the file must hold at
// least 2 (T + 1) bytes. Errors name the file.
PIPE_API std::unique_ptr<DataSource> make_byte_text_data(const std::string& path, const ModelDescription& model,
                                                         std::uint64_t seed, double validation_fraction = 0.1);

// Training data from files (--data, --val-data, --data-format):
//  - bytes:   byte-level text, as make_byte_text_data (one file, the last 10% held out);
//  - llmc:    llm.c's token shards: a header of 256 little-endian int32 (magic 20240520, version 1 for uint16
//             tokens or 2 for uint32, the token count), then the tokens;
//  - nanogpt: nanoGPT's raw little-endian uint16 tokens (train.bin, val.bin), no header.
// `automatic` detects each file: the llm.c magic makes it llmc, else a name ending in ".bin" nanogpt, else bytes.
enum class DataFormat { automatic, bytes, llmc, nanogpt };
// "auto", "bytes", "llmc" or "nanogpt"; anything else is an error naming --data-format.
PIPE_API DataFormat parse_data_format(const std::string& text);
PIPE_API const char* data_format_name(DataFormat format);

// The files a --data or --val-data value names: a file, a directory (its regular .bin files, by name; names
// starting with '.' skipped) or a glob pattern (by name). Nothing found is an error naming `flag` and the value.
PIPE_API std::vector<std::string> data_files(const std::string& spec, const std::string& flag);

// The data source for --data SPEC [--val-data VAL_SPEC] in `format`. Token files (llmc, nanogpt) are
// memory-mapped, never read whole; sample i is a window of T + 1 consecutive tokens of one file at a position
// drawn from (seed, i), input the first T and labels the last T, every window of the train files equally
// likely. Validation windows come from VAL_SPEC, or else from the llm.c validation shards of a --data directory
// (names containing "_val_"), or else from the last 10% of each train file. A token id at or above the model's
// vocabulary is an error naming the file and the token's offset. Needs a token model (int32 input [T]).
PIPE_API std::unique_ptr<DataSource> make_file_data(const std::string& spec, const std::string& val_spec,
                                                    DataFormat format, const ModelDescription& model,
                                                    std::uint64_t seed);

}  // namespace libpipe
