// Fuzz target: the safetensors reader. Any bytes go through parse_safetensors
// (the in-memory twin of read_safetensors: the same header checks, the same
// conversions) with the metadata requested, so that __metadata__ is read too.
// What it accepts must then survive the writer: serialize_safetensors of the
// tensors read, parsed again, gives the same names, types, bytes and metadata
// (the checkpoint path writes what it read).
//
// A libpipe::Error from the reader is the documented answer to a bad file;
// anything else escaping, an error or a difference in the round trip, a
// crash, a leak or a sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/safetensors.hpp"

namespace {

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what.c_str());
  std::abort();
}

bool same(const libpipe::Tensor& a, const libpipe::Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.bytes() == b.bytes() &&
         (a.bytes() == 0 || std::memcmp(a.data(), b.data(), a.bytes()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  libpipe::SafetensorsMetadata metadata;
  std::map<std::string, libpipe::Tensor> tensors;
  try {
    tensors = libpipe::parse_safetensors(data, size, "fuzz.safetensors", &metadata);
  } catch (const libpipe::Error&) {
    return 0;  // the documented outcome for a bad file
  }

  std::vector<std::pair<std::string, const libpipe::Tensor*>> list;
  for (const auto& [name, tensor] : tensors) list.emplace_back(name, &tensor);
  std::vector<std::uint8_t> bytes;
  try {
    bytes = libpipe::serialize_safetensors(list, metadata, "rewrite.safetensors");
  } catch (const libpipe::Error& e) {
    finding(std::string("a file the reader accepted cannot be written back: ") + e.what());
  }
  libpipe::SafetensorsMetadata metadata2;
  std::map<std::string, libpipe::Tensor> again;
  try {
    again = libpipe::parse_safetensors(bytes.data(), bytes.size(), "rewrite.safetensors", &metadata2);
  } catch (const libpipe::Error& e) {
    finding(std::string("the writer's output is refused by the reader: ") + e.what());
  }
  if (metadata2 != metadata) finding("__metadata__ changed in the round trip");
  if (again.size() != tensors.size()) finding("the number of tensors changed in the round trip");
  for (const auto& [name, tensor] : tensors) {
    auto it = again.find(name);
    if (it == again.end()) finding("tensor '" + name + "' lost in the round trip");
    if (!same(tensor, it->second)) finding("tensor '" + name + "' changed in the round trip");
  }
  return 0;
}
