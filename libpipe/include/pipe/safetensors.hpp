// Reading and writing the safetensors format (Hugging Face's tensor file):
//
//   8 bytes   N, the header length, little-endian unsigned 64-bit
//   N bytes   a JSON object: {"__metadata__": {str: str}, "<name>": {"dtype": "F32",
//             "shape": [2, 3], "data_offsets": [begin, end]}, ...}, padded with spaces
//   the rest  the data area; each tensor's row-major little-endian bytes at [begin, end)
//
// Checkpoints are written in it so that they load in PyTorch and Hugging Face
// tools without conversion, and the PyTorch reference fixtures of the tests are
// read with it. The reader is strict, as the reference implementation is: a
// file that it accepts has every byte of its data area in exactly one tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

using SafetensorsMetadata = std::map<std::string, std::string>;

// The largest header the reader accepts (the reference implementation's
// limit): a bound on what a corrupt length field can make us allocate.
constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// Reads every tensor of the file into CPU tensors, keyed by name. F32, BF16
// and I32 are read as float32, bfloat16 and int32; F64 and I64 are narrowed to
// float32 and int32 as PyTorch's copy into a float32/int32 tensor would (an I64
// value outside int32 is an error). Any other dtype is an error naming the
// tensor. When `metadata` is given it receives __metadata__ (empty if absent).
// Every error is a libpipe::Error naming the file and, where one is at fault,
// the tensor.
PIPE_API std::map<std::string, Tensor> read_safetensors(const std::string& path,
                                                        SafetensorsMetadata* metadata = nullptr);

// The same for a file already in memory; `source_name` stands in for the file
// name in messages.
PIPE_API std::map<std::string, Tensor> parse_safetensors(const void* data, std::size_t size,
                                                         const std::string& source_name,
                                                         SafetensorsMetadata* metadata = nullptr);

// Writes float32, bfloat16 and int32 host tensors in name order (the header
// lists them in that order, the data area follows it), with the header padded
// with spaces to a multiple of 8 bytes as the reference writer does, so that
// the data area starts 8-byte aligned in the file. Empty metadata is
// omitted. The file is written beside `path` and renamed over it, so a crash
// never leaves a half-written file under the final name.
PIPE_API void write_safetensors(const std::string& path,
                                const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                                const SafetensorsMetadata& metadata = {});

// The bytes write_safetensors would write; `destination` names the file in messages.
PIPE_API std::vector<std::uint8_t> serialize_safetensors(
    const std::vector<std::pair<std::string, const Tensor*>>& tensors, const SafetensorsMetadata& metadata,
    const std::string& destination);

}  // namespace libpipe
