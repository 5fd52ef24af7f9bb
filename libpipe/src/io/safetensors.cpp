// The safetensors reader and writer (see pipe/safetensors.hpp for the format).
//
// The reader validates the whole header before it allocates a tensor, then
// reads each tensor straight from the file into its own storage, so a
// checkpoint costs its tensors' memory once, not twice. The rules are the
// reference implementation's (huggingface/safetensors): a bounded header
// length, a header that is a JSON object starting with '{', offsets relative
// to the end of the header that tile the data area exactly (contiguous, no
// overlap, no gap, nothing after the last tensor), and byte sizes that match
// dtype and shape. We add what its JSON parser would let pass silently: a
// name given twice (the second would hide the first) and fields we do not know.
#include "pipe/safetensors.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "pipe/error.hpp"

// Tensor bytes are copied as they are: the format is little-endian, and so is
// every machine libpipe builds for. A big-endian port would swap here.
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.cpp assumes a little-endian host"
#endif

namespace libpipe {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& source, const std::string& message) { throw Error(source + ": " + message); }

[[noreturn]] void fail_tensor(const std::string& source, const std::string& name, const std::string& message) {
  fail(source, "tensor '" + name + "': " + message);
}

// The dtypes we read, and what each becomes.
enum class Stored { f32, bf16, i32, f64, i64 };

struct ReadableDType {
  const char* name;
  Stored stored;
  std::uint64_t size;  // bytes per element in the file
  DType dtype;         // what it is read as
};

constexpr ReadableDType kReadable[] = {
    {"F32", Stored::f32, 4, DType::float32}, {"BF16", Stored::bf16, 2, DType::bfloat16},
    {"I32", Stored::i32, 4, DType::int32},   {"F64", Stored::f64, 8, DType::float32},
    {"I64", Stored::i64, 8, DType::int32},
};

// Every other dtype name the format defines: these are refused as
// unsupported, anything else as unknown (most likely a typo or corruption).
const std::set<std::string> kOtherFormatDTypes = {"BOOL",    "U8",  "I8",  "F8_E5M2", "F8_E4M3",
                                                  "F8_E8M0", "I16", "U16", "F16",     "U32",
                                                  "U64",     "C64", "F4",  "F6_E2M3", "F6_E3M2"};

const char* format_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float32:
      return "F32";
    case DType::bfloat16:
      return "BF16";
    case DType::int32:
      return "I32";
  }
  return "?";
}

// One tensor of a validated header.
struct Entry {
  std::string name;
  const ReadableDType* type = nullptr;
  Shape shape;
  std::uint64_t begin = 0;  // relative to the data area
  std::uint64_t end = 0;
};

std::string offsets_str(const Entry& e) { return "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]"; }

std::uint64_t read_u64_le(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Checks the length field against the file size; returns the header length.
std::uint64_t check_length(const std::uint8_t* first8, std::uint64_t file_size, const std::string& source) {
  const std::uint64_t n = read_u64_le(first8);
  if (n > kSafetensorsMaxHeaderBytes)
    fail(source, "header length " + std::to_string(n) + " is larger than the limit of " +
                     std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  if (n > file_size - 8)
    fail(source, "truncated: the header length is " + std::to_string(n) + " bytes but only " +
                     std::to_string(file_size - 8) + " bytes follow the length field");
  if (n < 2) fail(source, "header length " + std::to_string(n) + " is too small to hold a JSON object");
  return n;
}

void check_file_size(std::uint64_t file_size, const std::string& source) {
  if (file_size < 8)
    fail(source, "truncated: " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length field");
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; the
// rest (position and reason) is what a user needs.
std::string json_reason(const std::exception& e) {
  std::string what = e.what();
  if (!what.empty() && what[0] == '[') {
    const auto close = what.find("] ");
    if (close != std::string::npos) what = what.substr(close + 2);
  }
  return what;
}

void read_metadata(const json& value, const std::string& source, SafetensorsMetadata* metadata) {
  if (!value.is_object())
    fail(source, std::string("__metadata__ must be a JSON object of strings, not ") + value.type_name());
  for (const auto& [key, v] : value.items()) {
    if (!v.is_string()) fail(source, "__metadata__ value of '" + key + "' must be a string, not " + v.type_name());
    if (metadata) (*metadata)[key] = v.get<std::string>();
  }
}

const ReadableDType& read_dtype(const json& value, const std::string& source, const std::string& name) {
  if (!value.is_string()) fail_tensor(source, name, std::string("dtype must be a string, not ") + value.type_name());
  const auto& s = value.get_ref<const std::string&>();
  for (const auto& r : kReadable)
    if (s == r.name) return r;
  if (kOtherFormatDTypes.count(s))
    fail_tensor(source, name, "dtype " + s + " is not supported (libpipe reads F32, BF16, I32, F64 and I64)");
  fail_tensor(source, name, "unknown dtype '" + s + "'");
}

// A JSON integer that is >= 0 and fits int64 (shapes and offsets).
bool is_size(const json& v) {
  return v.is_number_unsigned() &&
         v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
}

Entry read_entry(const std::string& name, const json& value, std::uint64_t data_size, const std::string& source) {
  if (!value.is_object())
    fail_tensor(source, name, std::string("header entry must be a JSON object, not ") + value.type_name());
  for (const auto& [key, v] : value.items()) {
    (void)v;
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      fail_tensor(source, name, "unknown field '" + key + "' (expected dtype, shape and data_offsets)");
  }
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!value.contains(key)) fail_tensor(source, name, std::string("missing field '") + key + "'");

  Entry e;
  e.name = name;
  e.type = &read_dtype(value["dtype"], source, name);

  const json& shape = value["shape"];
  if (!shape.is_array() || !std::all_of(shape.begin(), shape.end(), is_size))
    fail_tensor(source, name, "shape must be an array of non-negative integers, not " + shape.dump());
  // numel * element size must not overflow before it is compared with the offsets.
  std::uint64_t bytes = e.type->size;
  bool overflow = false;
  for (const auto& d : shape) {
    e.shape.push_back(d.get<std::int64_t>());
    overflow = overflow || __builtin_mul_overflow(bytes, d.get<std::uint64_t>(), &bytes);
  }
  if (overflow) fail_tensor(source, name, "shape " + shape_str(e.shape) + " is too large");

  const json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !is_size(offsets[0]) || !is_size(offsets[1]))
    fail_tensor(source, name, "data_offsets must be two non-negative integers [begin, end], not " + offsets.dump());
  e.begin = offsets[0].get<std::uint64_t>();
  e.end = offsets[1].get<std::uint64_t>();
  if (e.end < e.begin) fail_tensor(source, name, "data_offsets " + offsets_str(e) + " end before they begin");
  if (e.end > data_size)
    fail_tensor(source, name,
                "data_offsets " + offsets_str(e) + " run past the end of the data area (" + std::to_string(data_size) +
                    " bytes)");
  if (e.end - e.begin != bytes)
    fail_tensor(source, name,
                std::string(e.type->name) + shape_str(e.shape) + " needs " + std::to_string(bytes) +
                    " bytes but data_offsets " + offsets_str(e) + " hold " + std::to_string(e.end - e.begin));
  return e;
}

// Parses and validates the header; returns its tensors in data order.
std::vector<Entry> parse_header(const std::uint8_t* header, std::uint64_t length, std::uint64_t data_size,
                                const std::string& source, SafetensorsMetadata* metadata) {
  // The reference implementation refuses anything but an object up front,
  // which also keeps a stray number or string from parsing as a "header".
  if (header[0] != '{') fail(source, "header does not start with '{' (it must be a JSON object)");

  // nlohmann keeps the last of two equal keys, silently. The callback sees
  // every object start, key and end as they are read, so a key repeated in
  // any object is caught: a tensor named twice, or a field given twice.
  std::vector<std::set<std::string>> open_objects;
  std::string current;    // the top-level key being read
  std::string duplicate;  // the first error found
  const json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == json::parse_event_t::key && !open_objects.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (depth == 1) current = key;
      if (!open_objects.back().insert(key).second && duplicate.empty()) {
        if (depth == 1)
          duplicate = "tensor '" + key + "' appears more than once in the header";
        else if (current == "__metadata__")
          duplicate = "__metadata__ has the key '" + key + "' more than once";
        else
          duplicate = "tensor '" + current + "': field '" + key + "' appears more than once";
      }
    }
    return true;
  };
  json root;
  try {
    const char* text = reinterpret_cast<const char*>(header);
    root = json::parse(text, text + length, on_event);
  } catch (const json::exception& e) {
    fail(source, "header is not valid JSON: " + json_reason(e));
  }
  if (!root.is_object()) fail(source, std::string("header must be a JSON object, not ") + root.type_name());
  if (!duplicate.empty()) fail(source, duplicate);

  std::vector<Entry> entries;
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__")
      read_metadata(value, source, metadata);
    else
      entries.push_back(read_entry(name, value, data_size, source));
  }

  // The tensors must tile the data area: sorted by offsets, each begins
  // where the previous one ended and the last ends at the end of the file.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  std::uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < covered)
      fail(source, "tensors '" + previous->name + "' and '" + e.name + "' overlap (data_offsets " +
                       offsets_str(*previous) + " and " + offsets_str(e) + ")");
    if (e.begin > covered)
      fail(source, "data bytes [" + std::to_string(covered) + ", " + std::to_string(e.begin) +
                       ") belong to no tensor (before tensor '" + e.name + "')");
    covered = e.end;
    previous = &e;
  }
  if (covered != data_size)
    fail(source, "data bytes [" + std::to_string(covered) + ", " + std::to_string(data_size) +
                     ") at the end of the file belong to no tensor");
  return entries;
}

// Converts one tensor's file bytes into the tensor (F64 and I64 narrow).
void convert(const Entry& e, const std::uint8_t* raw, Tensor& out, const std::string& source) {
  const std::int64_t n = out.numel();
  switch (e.type->stored) {
    case Stored::f32:
    case Stored::bf16:
    case Stored::i32:
      std::memcpy(out.data(), raw, out.bytes());
      return;
    case Stored::f64: {
      float* dst = out.f32();
      for (std::int64_t i = 0; i < n; ++i) {
        double v;
        std::memcpy(&v, raw + 8 * i, 8);
        dst[i] = static_cast<float>(v);
      }
      return;
    }
    case Stored::i64: {
      std::int32_t* dst = out.i32();
      for (std::int64_t i = 0; i < n; ++i) {
        std::int64_t v;
        std::memcpy(&v, raw + 8 * i, 8);
        if (v < std::numeric_limits<std::int32_t>::min() || v > std::numeric_limits<std::int32_t>::max())
          fail_tensor(source, e.name,
                      "I64 value " + std::to_string(v) + " at element " + std::to_string(i) + " does not fit int32");
        dst[i] = static_cast<std::int32_t>(v);
      }
      return;
    }
  }
}

bool reads_directly(const Entry& e) { return e.type->stored != Stored::f64 && e.type->stored != Stored::i64; }

// The sorted, checked list of what write/serialize will store.
std::vector<std::pair<std::string, const Tensor*>> sorted_for_writing(
    const std::vector<std::pair<std::string, const Tensor*>>& tensors, const std::string& destination) {
  auto sorted = tensors;
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    const auto& [name, tensor] = sorted[i];
    if (name == "__metadata__") fail(destination, "'__metadata__' is reserved and cannot name a tensor");
    if (i > 0 && sorted[i - 1].first == name) fail(destination, "tensor '" + name + "' is given more than once");
    if (!tensor || !tensor->defined()) fail_tensor(destination, name, "has no storage");
    if (tensor->device() != Device::cpu)
      fail_tensor(
          destination, name,
          std::string("is on device '") + device_name(tensor->device()) + "'; only host tensors can be written");
  }
  return sorted;
}

// {"__metadata__":{...},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},...} plus padding,
// field order as the reference writer's.
std::string build_header(const std::vector<std::pair<std::string, const Tensor*>>& sorted,
                         const SafetensorsMetadata& metadata, const std::string& destination) {
  std::string h = "{";
  try {
    if (!metadata.empty()) h += "\"__metadata__\":" + json(metadata).dump();
    std::uint64_t offset = 0;
    for (const auto& [name, tensor] : sorted) {
      if (h.size() > 1) h += ",";
      json shape = json::array();
      for (auto d : tensor->shape()) shape.push_back(d);
      const std::uint64_t end = offset + tensor->bytes();
      h += json(name).dump() + ":{\"dtype\":\"" + format_dtype_name(tensor->dtype()) + "\",\"shape\":" + shape.dump() +
           ",\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
      offset = end;
    }
  } catch (const json::exception& e) {
    // Only invalid UTF-8 in a name or metadata can make dump() throw.
    fail(destination, "cannot write the header: " + json_reason(e));
  }
  h += "}";
  // Spaces up to a multiple of 8, as the reference writer pads, so that the
  // data area starts 8-byte aligned for readers that map the file.
  h.append((8 - h.size() % 8) % 8, ' ');
  if (h.size() > kSafetensorsMaxHeaderBytes)
    fail(destination, "the header would be " + std::to_string(h.size()) + " bytes, over the limit of " +
                          std::to_string(kSafetensorsMaxHeaderBytes));
  return h;
}

void append_u64_le(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

std::map<std::string, Tensor> parse_safetensors(const void* data, std::size_t size, const std::string& source_name,
                                                SafetensorsMetadata* metadata) {
  const auto* bytes = static_cast<const std::uint8_t*>(data);
  check_file_size(size, source_name);
  const std::uint64_t length = check_length(bytes, size, source_name);
  const std::uint8_t* area = bytes + 8 + length;
  const std::uint64_t data_size = size - 8 - length;
  SafetensorsMetadata meta;
  const auto entries = parse_header(bytes + 8, length, data_size, source_name, &meta);
  std::map<std::string, Tensor> tensors;
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.type->dtype, Device::cpu);
    convert(e, area + e.begin, t, source_name);
    tensors.emplace(e.name, std::move(t));
  }
  if (metadata) *metadata = std::move(meta);
  return tensors;
}

std::map<std::string, Tensor> read_safetensors(const std::string& path, SafetensorsMetadata* metadata) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open safetensors file: ") + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0) fail(path, "cannot determine the file size");
  const auto file_size = static_cast<std::uint64_t>(end);
  in.seekg(0);
  auto read_exactly = [&](void* dst, std::uint64_t offset, std::uint64_t n) {
    in.seekg(static_cast<std::streamoff>(offset));
    in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
    if (!in || static_cast<std::uint64_t>(in.gcount()) != n)
      fail(path, "read error at byte " + std::to_string(offset) + " (" + std::to_string(n) + " bytes)");
  };

  check_file_size(file_size, path);
  std::uint8_t first8[8];
  read_exactly(first8, 0, 8);
  const std::uint64_t length = check_length(first8, file_size, path);
  std::vector<std::uint8_t> header(length);
  read_exactly(header.data(), 8, length);
  const std::uint64_t data_start = 8 + length;
  SafetensorsMetadata meta;
  const auto entries = parse_header(header.data(), length, file_size - data_start, path, &meta);

  std::map<std::string, Tensor> tensors;
  std::vector<std::uint8_t> staging;  // for the dtypes that narrow
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.type->dtype, Device::cpu);
    const std::uint64_t n = e.end - e.begin;
    if (reads_directly(e)) {
      if (n) read_exactly(t.data(), data_start + e.begin, n);
    } else {
      staging.resize(n);
      if (n) read_exactly(staging.data(), data_start + e.begin, n);
      convert(e, staging.data(), t, path);
    }
    tensors.emplace(e.name, std::move(t));
  }
  if (metadata) *metadata = std::move(meta);
  return tensors;
}

std::vector<std::uint8_t> serialize_safetensors(const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                                                const SafetensorsMetadata& metadata, const std::string& destination) {
  const auto sorted = sorted_for_writing(tensors, destination);
  const std::string header = build_header(sorted, metadata, destination);
  std::string prefix;
  append_u64_le(prefix, header.size());
  std::vector<std::uint8_t> out(prefix.begin(), prefix.end());
  out.insert(out.end(), header.begin(), header.end());
  for (const auto& [name, tensor] : sorted) {
    const auto* p = static_cast<const std::uint8_t*>(tensor->data());
    out.insert(out.end(), p, p + tensor->bytes());
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                       const SafetensorsMetadata& metadata) {
  const auto sorted = sorted_for_writing(tensors, path);
  std::string prefix;
  const std::string header = build_header(sorted, metadata, path);
  append_u64_le(prefix, header.size());

  // Written under a temporary name and renamed: readers never see a partial file.
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, std::string("cannot create '") + partial + "': " + std::strerror(errno));
    out.write(prefix.data(), static_cast<std::streamsize>(prefix.size()));
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& [name, tensor] : sorted)
      out.write(static_cast<const char*>(tensor->data()), static_cast<std::streamsize>(tensor->bytes()));
    out.flush();
    if (!out) {
      const std::string reason = std::strerror(errno);
      std::remove(partial.c_str());
      fail(path, "write error on '" + partial + "': " + reason);
    }
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(partial.c_str());
    fail(path, "cannot rename '" + partial + "' to the final name: " + reason);
  }
}

}  // namespace libpipe
