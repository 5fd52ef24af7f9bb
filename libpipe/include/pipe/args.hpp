// The arguments of one layer, as written in the model file. Factories read
// them through typed accessors; every accessor records the key it was asked
// for, so that after describe() the model loader can report keys nobody read
// ("unknown argument") and suggest the closest known one.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/export.hpp"

namespace libpipe {

using ArgValue = std::variant<bool, std::int64_t, double, std::string, std::vector<std::int64_t>>;

// Raised by the accessors; the loader prefixes file:line, layer index and type.
class PIPE_API ArgError : public Error {
 public:
  ArgError(const std::string& key, const std::string& message) : Error(message), key_(key) {}
  const std::string& key() const { return key_; }

 private:
  std::string key_;
};

// Name of the type held by an ArgValue: "boolean", "integer", "float", "string", "integer list".
PIPE_API const char* arg_type_name(const ArgValue& value);

class PIPE_API Args {
 public:
  Args() = default;
  void set(const std::string& key, ArgValue value, int line = 0);

  bool has(const std::string& key) const;
  // Required accessors: a missing key or a value of another type is an ArgError.
  std::int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  // integers are accepted too
  bool get_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::vector<std::int64_t> get_int_list(const std::string& key) const;
  // Optional accessors: the default when the key is absent.
  std::int64_t get_int(const std::string& key, std::int64_t fallback) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

  // An integer argument that must be >= 1 (a width, a count of heads, ...).
  std::int64_t get_positive_int(const std::string& key) const;

  // Keys present in the file that no accessor asked for.
  std::vector<std::string> unread_keys() const;
  // Keys some accessor asked for (present or not): the layer's known arguments.
  const std::set<std::string>& requested_keys() const { return requested_; }
  // Line of a key in the model file, 0 when unknown.
  int line_of(const std::string& key) const;
  const std::map<std::string, ArgValue>& values() const { return values_; }

 private:
  const ArgValue* lookup(const std::string& key) const;
  std::map<std::string, ArgValue> values_;
  std::map<std::string, int> lines_;
  mutable std::set<std::string> requested_;
};

}  // namespace libpipe
