// TOML model files -> ModelSpec. Only the file's structure is checked here;
// layer types, arguments and shapes are checked by describe_model.
#include "pipe/model.hpp"

#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "pipe/error.hpp"
#include "pipe/paths.hpp"
#include "model/suggest.hpp"

namespace libpipe {

std::string SourceLocation::str() const { return line > 0 ? file + ":" + std::to_string(line) : file; }

namespace {

// A generous bound (the largest published models have a few hundred layers) that still stops a typo like
// repeat = 1000000000 from exhausting memory before anything else is checked. 10^6 was too many: describing
// 10^6 layers took 10 s under the fuzzers' sanitizers (a timeout finding).
constexpr std::int64_t kMaxLayers = 100'000;

const std::vector<std::string> kModelKeys = {"name", "description", "input_shape", "input_dtype"};

int line_of(const toml::node& node) { return static_cast<int>(node.source().begin.line); }

[[noreturn]] void fail(const std::string& file, int line, const std::string& message) {
  throw Error(SourceLocation{file, line}.str() + ": " + message);
}

const char* toml_type_name(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    default: return "a date or time";
  }
}

// Converts one layer argument; tables, mixed arrays and dates are refused.
ArgValue to_arg(const toml::node& node, const std::string& file, const std::string& where, const std::string& key) {
  if (auto v = node.as_boolean()) return v->get();
  if (auto v = node.as_integer()) return v->get();
  if (auto v = node.as_floating_point()) return v->get();
  if (auto v = node.as_string()) return v->get();
  if (auto array = node.as_array()) {
    std::vector<std::int64_t> values;
    for (const auto& element : *array) {
      auto i = element.as_integer();
      if (!i) fail(file, line_of(node), where + ": argument '" + key + "' must be a list of integers");
      values.push_back(i->get());
    }
    return values;
  }
  fail(file, line_of(node), where + ": argument '" + key + "' cannot be " + toml_type_name(node));
}

void parse_model_table(const toml::table& root, const std::string& file, ModelSpec& model) {
  const toml::node* node = root.get("model");
  if (!node || !node->is_table())
    fail(file, 0, "missing [model] table (it needs input_shape and input_dtype)");
  const toml::table& table = *node->as_table();
  const int table_line = line_of(table);

  for (const auto& [key, value] : table) {
    std::string k(key.str());
    bool known = false;
    for (const auto& m : kModelKeys) known = known || m == k;
    if (!known) fail(file, line_of(value), "[model]: unknown key '" + k + "'" + did_you_mean(k, kModelKeys));
  }
  model.name = table["name"].value_or(std::string());
  model.description = table["description"].value_or(std::string());

  const toml::node* shape = table.get("input_shape");
  if (!shape) fail(file, table_line, "[model]: missing input_shape (the per-sample input shape, e.g. [64])");
  const toml::array* dims = shape->as_array();
  if (!dims || dims->empty())
    fail(file, line_of(*shape), "[model]: input_shape must be a non-empty list of positive integers");
  for (const auto& d : *dims) {
    auto i = d.as_integer();
    if (!i || i->get() < 1)
      fail(file, line_of(*shape), "[model]: input_shape must be a non-empty list of positive integers");
    model.input.shape.push_back(i->get());
  }

  const toml::node* dtype = table.get("input_dtype");
  if (!dtype) fail(file, table_line, "[model]: missing input_dtype (float32 or int32)");
  if (!dtype->is_string()) fail(file, line_of(*dtype), "[model]: input_dtype must be a string");
  try {
    model.input.dtype = parse_dtype(dtype->as_string()->get());
  } catch (const Error& e) {
    fail(file, line_of(*dtype), std::string("[model]: ") + e.what());
  }
}

void parse_layers(const toml::table& root, const std::string& file, ModelSpec& model) {
  const toml::node* node = root.get("layer");
  if (!node) fail(file, 0, "the model has no layers (add [[layer]] tables)");
  const toml::array* layers = node->as_array();
  if (!layers || !layers->is_array_of_tables())
    fail(file, line_of(*node), "'layer' must be an array of tables, written [[layer]]");

  for (const auto& element : *layers) {
    const toml::table& table = *element.as_table();
    const int line = line_of(table);
    const std::string where = "layer " + std::to_string(model.layers.size());

    LayerSpec spec;
    spec.where = SourceLocation{file, line};
    const toml::node* type = table.get("type");
    if (!type) fail(file, line, where + ": missing 'type'");
    if (!type->is_string()) fail(file, line_of(*type), where + ": 'type' must be a string");
    spec.type = type->as_string()->get();
    const std::string named = where + " (" + spec.type + ")";

    std::int64_t repeat = 1;
    for (const auto& [key, value] : table) {
      std::string k(key.str());
      if (k == "type") continue;
      if (k == "repeat") {
        auto r = value.as_integer();
        if (!r || r->get() < 1) fail(file, line_of(value), named + ": 'repeat' must be an integer of at least 1");
        repeat = r->get();
      } else if (k == "tie") {
        auto t = value.as_string();
        if (!t || t->get().empty()) fail(file, line_of(value), named + ": 'tie' must be a non-empty string");
        spec.tie = t->get();
      } else {
        spec.args.set(k, to_arg(value, file, named, k), line_of(value));
      }
    }
    if (static_cast<std::int64_t>(model.layers.size()) + repeat > kMaxLayers)
      fail(file, line, named + ": the model would have more than " + std::to_string(kMaxLayers) + " layers");
    for (std::int64_t r = 0; r < repeat; ++r) model.layers.push_back(spec);
  }
}

}  // namespace

ModelSpec parse_model(const std::string& text, const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    throw Error(source_name + ":" + std::to_string(begin.line) + ":" + std::to_string(begin.column) +
                ": TOML syntax error: " + std::string(e.description()));
  }
  for (const auto& [key, value] : root) {
    std::string k(key.str());
    if (k != "model" && k != "layer")
      fail(source_name, line_of(value), "unknown top-level key '" + k + "' (a model file has [model] and [[layer]])");
  }
  ModelSpec model;
  model.source = source_name;
  parse_model_table(root, source_name, model);
  parse_layers(root, source_name, model);
  return model;
}

ModelSpec load_model_file(const std::string& path) {
  require_regular_file(path, "model file '" + path + "'");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open model file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_model(text.str(), path);
}

}  // namespace libpipe
