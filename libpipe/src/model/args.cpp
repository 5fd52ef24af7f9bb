// Typed access to a layer's arguments, recording which keys were asked for.
#include "pipe/args.hpp"

namespace libpipe {

const char* arg_type_name(const ArgValue& value) {
  switch (value.index()) {
    case 0: return "boolean";
    case 1: return "integer";
    case 2: return "float";
    case 3: return "string";
    default: return "integer list";
  }
}

namespace {

template <typename T>
const char* type_name_of() {
  if constexpr (std::is_same_v<T, bool>) return "a boolean";
  if constexpr (std::is_same_v<T, std::int64_t>) return "an integer";
  if constexpr (std::is_same_v<T, double>) return "a number";
  if constexpr (std::is_same_v<T, std::string>) return "a string";
  return "a list of integers";
}

template <typename T>
T typed(const std::string& key, const ArgValue* value) {
  if constexpr (std::is_same_v<T, double>) {
    if (auto i = std::get_if<std::int64_t>(value)) return static_cast<double>(*i);
  }
  if (auto v = std::get_if<T>(value)) return *v;
  throw ArgError(key, "argument '" + key + "' must be " + type_name_of<T>() + ", not " + arg_type_name(*value));
}

template <typename T>
T required(const ArgValue* value, const std::string& key) {
  if (!value) throw ArgError(key, std::string("missing argument '") + key + "' (" + type_name_of<T>() + ")");
  return typed<T>(key, value);
}

}  // namespace

void Args::set(const std::string& key, ArgValue value, int line) {
  values_[key] = std::move(value);
  lines_[key] = line;
}

bool Args::has(const std::string& key) const {
  requested_.insert(key);
  return values_.count(key) != 0;
}

const ArgValue* Args::lookup(const std::string& key) const {
  requested_.insert(key);
  auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

std::int64_t Args::get_int(const std::string& key) const { return required<std::int64_t>(lookup(key), key); }
double Args::get_float(const std::string& key) const { return required<double>(lookup(key), key); }
bool Args::get_bool(const std::string& key) const { return required<bool>(lookup(key), key); }
std::string Args::get_string(const std::string& key) const { return required<std::string>(lookup(key), key); }
std::vector<std::int64_t> Args::get_int_list(const std::string& key) const {
  return required<std::vector<std::int64_t>>(lookup(key), key);
}

std::int64_t Args::get_int(const std::string& key, std::int64_t fallback) const {
  auto v = lookup(key);
  return v ? typed<std::int64_t>(key, v) : fallback;
}
double Args::get_float(const std::string& key, double fallback) const {
  auto v = lookup(key);
  return v ? typed<double>(key, v) : fallback;
}
bool Args::get_bool(const std::string& key, bool fallback) const {
  auto v = lookup(key);
  return v ? typed<bool>(key, v) : fallback;
}
std::string Args::get_string(const std::string& key, const std::string& fallback) const {
  auto v = lookup(key);
  return v ? typed<std::string>(key, v) : fallback;
}

std::int64_t Args::get_positive_int(const std::string& key) const {
  std::int64_t v = get_int(key);
  if (v < 1) throw ArgError(key, "argument '" + key + "' must be at least 1, not " + std::to_string(v));
  return v;
}

std::vector<std::string> Args::unread_keys() const {
  std::vector<std::string> out;
  for (const auto& [key, value] : values_)
    if (!requested_.count(key)) out.push_back(key);
  return out;
}

int Args::line_of(const std::string& key) const {
  auto it = lines_.find(key);
  return it == lines_.end() ? 0 : it->second;
}

}  // namespace libpipe
