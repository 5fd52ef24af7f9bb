// Partition methods: the table of methods, parsing a method's text once,
// turning the model description into per-layer weights, and the one-line
// errors users see when a method does not fit their model (bad regex, no
// matching layer, bad boundaries).
#include "pipe/partition_method.hpp"

#include <algorithm>
#include <boost/regex.hpp>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "pipe/error.hpp"

namespace libpipe {
namespace {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::vector<std::string> split(const std::string& s, char separator) {
  std::vector<std::string> out;
  std::size_t begin = 0;
  for (;;) {
    std::size_t end = s.find(separator, begin);
    out.push_back(s.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return out;
    begin = end + 1;
  }
}

std::string trim(const std::string& s) {
  std::size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::string layers_str(std::size_t n) { return std::to_string(n) + (n == 1 ? " layer" : " layers"); }

std::string stages_str(int s) { return s == 1 ? "there is 1 stage" : "there are " + std::to_string(s) + " stages"; }

// The model's layer types, in order of first appearance.
std::string distinct_types(const ModelDescription& model) {
  std::vector<std::string> types;
  for (const auto& layer : model.layers)
    if (std::find(types.begin(), types.end(), layer.type) == types.end()) types.push_back(layer.type);
  std::string out;
  for (const auto& t : types) out += (out.empty() ? "" : ", ") + t;
  return out;
}

// How messages name the model: its name, or "the model" when the file gives none.
std::string model_name(const ModelDescription& model) { return model.name.empty() ? "the model" : model.name; }

std::size_t count_positive(const std::vector<double>& weights) {
  return static_cast<std::size_t>(std::count_if(weights.begin(), weights.end(), [](double w) { return w > 0; }));
}

// partition_balanced, after checking the one failure a method can explain
// better than the partitioner: too few layers with weight. `subject(count)`
// says how many layers have weight in the method's own words, e.g.
// "only 3 layers have trainable parameters" or "type:Block matches 3 layers".
template <class Subject>
Parts balanced(const std::vector<double>& weights, int num_stages, const Subject& subject) {
  std::size_t count = count_positive(weights);
  if (count < static_cast<std::size_t>(num_stages))
    throw Error(subject(count) + " but " + stages_str(num_stages) + ": every stage needs at least one");
  return partition_balanced(weights, num_stages);
}

// "no layer has X" / "only 1 layer has X" / "only 3 layers have X".
auto only_layers(const std::string& prefix, const std::string& what) {
  return [prefix, what](std::size_t count) {
    if (count == 0) return prefix + "no layer has " + what;
    if (count == 1) return prefix + "only 1 layer has " + what;
    return prefix + "only " + std::to_string(count) + " layers have " + what;
  };
}

std::vector<double> parameter_weights(const ModelDescription& model) {
  std::vector<double> w;
  // param_count, not unique_params: a tied weight lives on every stage that uses it.
  for (const auto& layer : model.layers) w.push_back(static_cast<double>(layer.description.param_count()));
  return w;
}

// Splits "REGEX:NUMBER" at its last ':' when what follows is a number
// (sign, digits, point, exponent: strtod's decimal form, not inf or hex).
bool weighted_suffix(const std::string& alternative, std::string* pattern, std::string* number) {
  std::size_t colon = alternative.rfind(':');
  if (colon == std::string::npos) return false;
  std::string tail = alternative.substr(colon + 1);
  if (tail.empty() || tail.find_first_not_of("0123456789.eE+-") != std::string::npos ||
      tail.find_first_of("0123456789") == std::string::npos)
    return false;
  char* end = nullptr;
  std::strtod(tail.c_str(), &end);
  if (end != tail.c_str() + tail.size()) return false;
  *pattern = alternative.substr(0, colon);
  *number = tail;
  return true;
}

// Boost's reason with the position as a number instead of its ">>>HERE>>>"
// copy of the pattern, which would repeat the regex the message already
// quotes: "Unmatched [ or [^ in character class declaration at position 2".
std::string regex_reason(const boost::regex_error& e) {
  std::string what = e.what();
  std::size_t cut = what.find("  The error occurred");
  if (cut == std::string::npos) {
    std::replace(what.begin(), what.end(), '\n', ' ');
    return what;
  }
  std::string reason = what.substr(0, cut);
  if (!reason.empty() && reason.back() == '.') reason.pop_back();
  return reason + " at position " + std::to_string(e.position());
}

struct Alternative {
  std::string pattern;
  double weight = 1;
  boost::regex regex;
};

struct MethodEntry;

}  // namespace

// What a method's text says beyond its keyword.
struct PartitionMethod::Parsed {
  const MethodEntry* entry = nullptr;
  std::string name;                       // the entry's name
  std::vector<Alternative> alternatives;  // type:
  bool weighted = false;                  // type:RE1:W1|RE2:W2 rather than one regex
  std::vector<int> boundaries;            // manual:, as given
};

namespace {

using Parsed = PartitionMethod::Parsed;

// type:REGEX or type:RE1:W1|RE2:W2|...: the regexes compiled, the weights read.
void parse_types(const std::string& method, const std::string& body, Parsed& parsed) {
  const std::string prefix = "partition method '" + method + "': ";
  std::vector<std::string> pieces = split(body, '|');
  // The weighted form needs every alternative to end in ':NUMBER'; otherwise
  // the whole text is one regex, '|' and all.
  std::vector<Alternative>& alternatives = parsed.alternatives;
  alternatives.resize(pieces.size());
  std::vector<std::string> numbers(pieces.size());
  bool weighted = true;
  for (std::size_t i = 0; i < pieces.size() && weighted; ++i)
    weighted = weighted_suffix(pieces[i], &alternatives[i].pattern, &numbers[i]);
  if (weighted) {
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      Alternative& alt = alternatives[i];
      alt.weight = std::strtod(numbers[i].c_str(), nullptr);
      if (!std::isfinite(alt.weight) || alt.weight < 0)
        throw Error(prefix + "weight '" + numbers[i] + "' of '" + alt.pattern + "' must be a finite number >= 0");
    }
  } else {
    alternatives.resize(1);
    alternatives[0].pattern = body;
  }

  for (auto& alt : alternatives) {
    if (alt.pattern.empty())
      throw Error(prefix + (weighted ? "an alternative has an empty regex" : "the regex is empty") +
                  " (type:REGEX matches layer type names, e.g. type:TransformerBlock)");
    try {
      alt.regex.assign(alt.pattern, boost::regex::perl | boost::regex::icase);
    } catch (const boost::regex_error& e) {
      throw Error(prefix + "invalid regex '" + alt.pattern + "': " + regex_reason(e));
    }
  }
  parsed.weighted = weighted;
}

// Each layer takes the weight of the first alternative whose regex finds its type.
std::vector<double> type_weights(const ModelDescription& model, const std::string& method, const Parsed& parsed) {
  const std::string prefix = "partition method '" + method + "': ";
  std::vector<double> weights(model.layers.size(), 0.0);
  std::vector<bool> assigned(model.layers.size(), false);
  for (const auto& alt : parsed.alternatives) {
    bool any = false;
    for (std::size_t i = 0; i < model.layers.size(); ++i) {
      bool found = false;
      try {
        found = boost::regex_search(model.layers[i].type, alt.regex);
      } catch (const std::exception& e) {  // Boost gives up on a pattern too costly to match, mid-search
        throw Error(prefix + "regex '" + alt.pattern + "' is too complex to match against layer type '" +
                    model.layers[i].type + "' (" + e.what() + ")");
      }
      if (!found) continue;
      any = true;
      if (!assigned[i]) weights[i] = alt.weight, assigned[i] = true;
    }
    if (!any)
      throw Error(prefix + "regex '" + alt.pattern + "' matches no layer (layer types in " + model_name(model) + ": " +
                  distinct_types(model) + ")");
  }
  return weights;
}

// manual:B1,B2,...: the numbers, read.
void parse_boundaries(const std::string& method, const std::string& argument, Parsed& parsed) {
  const std::string prefix = "partition method '" + method + "': ";
  const std::string body = trim(argument);
  if (body.empty()) return;
  for (const auto& raw : split(body, ',')) {
    std::string item = trim(raw);
    char* end = nullptr;
    long value = item.empty() ? 0 : std::strtol(item.c_str(), &end, 10);
    bool digits = !item.empty() && item.find_first_not_of("0123456789-+") == std::string::npos;
    if (!digits || end != item.c_str() + item.size() || value < -1000000000L || value > 1000000000L)
      throw Error(prefix + "'" + item + "' is not a layer index");
    parsed.boundaries.push_back(static_cast<int>(value));
  }
}

// manual:B1,B2,... -> the full S+1 boundary list, checked with messages that
// speak of the user's own numbers.
Parts manual_parts(const std::string& method, const std::vector<int>& given, std::size_t num_layers,
                   int num_stages) {
  const std::string prefix = "partition method '" + method + "': ";

  const auto n = static_cast<int>(num_layers);
  const auto S = static_cast<std::size_t>(num_stages);
  Parts parts;
  if (given.size() == S - 1) {
    parts.push_back(0);
    parts.insert(parts.end(), given.begin(), given.end());
    parts.push_back(n);
  } else if (given.size() == S + 1) {
    if (given.front() != 0)
      throw Error(prefix + "a full boundary list must start at 0, but it starts at " + std::to_string(given.front()));
    if (given.back() != n)
      throw Error(prefix + "a full boundary list must end at " + std::to_string(n) +
                  " (the number of layers), but it ends at " + std::to_string(given.back()));
    parts = given;
  } else {
    const std::string interior =
        S == 1   ? "none"
        : S == 2 ? "1 (the first layer of stage 1)"
                 : std::to_string(S - 1) + " (the first layers of stages 1.." + std::to_string(S - 1) + ")";
    throw Error(prefix + std::to_string(given.size()) + (given.size() == 1 ? " boundary does" : " boundaries do") +
                " not fit " + std::to_string(num_stages) + (num_stages == 1 ? " stage" : " stages") + ": give " +
                interior + " or " + std::to_string(S + 1) + " (0, ..., " + std::to_string(n) + ")");
  }
  for (std::size_t s = 1; s < S; ++s)
    if (parts[s] < 1 || parts[s] > n - 1)
      throw Error(prefix + "boundary " + std::to_string(parts[s]) + " is out of range: the first layer of stage " +
                  std::to_string(s) + " must be between 1 and " + std::to_string(n - 1) + " (the model has " +
                  layers_str(num_layers) + ")");
  for (std::size_t s = 0; s < S; ++s) {
    if (parts[s + 1] == parts[s])
      throw Error(prefix + "boundary " + std::to_string(parts[s]) + " appears twice, which would leave stage " +
                  std::to_string(s) + " empty");
    if (parts[s + 1] < parts[s])
      throw Error(prefix + "boundaries must increase, but " + std::to_string(parts[s]) + " is followed by " +
                  std::to_string(parts[s + 1]));
  }
  validate_parts(parts, n);  // cannot fail after the checks above; kept as the last word
  return parts;
}

// One partition method: its keyword (or prefix, ending in ':'), its syntax
// for --help, whether its weights are measured, how it reads its argument and
// how it plans. Adding a method is one entry here.
struct MethodEntry {
  const char* name;
  const char* syntax;
  bool needs_measurement;
  bool balances;  // cuts by partition_balanced (not uniform or manual): a V-shaped placement rebalances it
  void (*parse)(const std::string& method, const std::string& argument, Parsed& parsed);  // prefix methods
  void (*plan)(const ModelDescription& model, const std::string& method, const Parsed& parsed, int num_stages,
               const std::vector<double>* measured, PartitionPlan& plan);
};

std::string prefix_of(const std::string& method) { return "partition method '" + method + "': "; }

const MethodEntry kMethodTable[] = {
    {"uniform", "uniform", false, false, nullptr,
     [](const ModelDescription& model, const std::string&, const Parsed&, int S, const std::vector<double>*,
        PartitionPlan& plan) {
       plan.weights.assign(model.layers.size(), 1.0);
       plan.parts = partition_uniform(static_cast<std::int64_t>(model.layers.size()), S);
     }},
    {"parameters", "parameters", false, true, nullptr,
     [](const ModelDescription& model, const std::string& method, const Parsed&, int S, const std::vector<double>*,
        PartitionPlan& plan) {
       plan.weights = parameter_weights(model);
       plan.parts = balanced(plan.weights, S, only_layers(prefix_of(method), "trainable parameters"));
     }},
    {"flops", "flops", false, true, nullptr,
     [](const ModelDescription& model, const std::string& method, const Parsed&, int S, const std::vector<double>*,
        PartitionPlan& plan) {
       for (const auto& layer : model.layers) plan.weights.push_back(static_cast<double>(layer.description.flops));
       plan.parts = balanced(plan.weights, S, only_layers(prefix_of(method), "FLOPs"));
     }},
    {"type:", "type:REGEX, type:REGEX:WEIGHT|...", false, true, parse_types,
     [](const ModelDescription& model, const std::string& method, const Parsed& parsed, int S,
        const std::vector<double>*, PartitionPlan& plan) {
       plan.weights = type_weights(model, method, parsed);
       plan.parts = balanced(plan.weights, S, [&](std::size_t count) {
         if (parsed.weighted)
           return method + " gives weight to " + (count == 0 ? std::string("no layer") : layers_str(count));
         return method + " matches " + layers_str(count);
       });
     }},
    {"manual:", "manual:B1,B2,...", false, false, parse_boundaries,
     [](const ModelDescription& model, const std::string& method, const Parsed& parsed, int S,
        const std::vector<double>*, PartitionPlan& plan) {
       plan.weights = parameter_weights(model);
       plan.parts = manual_parts(method, parsed.boundaries, model.layers.size(), S);
     }},
    {"profile", "profile", true, true, nullptr,
     [](const ModelDescription&, const std::string& method, const Parsed&, int S, const std::vector<double>* measured,
        PartitionPlan& plan) {
       plan.weights = *measured;
       plan.parts = balanced(plan.weights, S, only_layers(prefix_of(method), "measured time"));
     }},
};

std::string methods_list() {
  std::string out;
  for (const MethodEntry& m : kMethodTable) out += (out.empty() ? "" : ", ") + std::string(m.syntax);
  return out;
}

}  // namespace

std::string partition_methods_help() { return methods_list(); }

PartitionMethod::PartitionMethod() : PartitionMethod(parse("parameters")) {}

PartitionMethod PartitionMethod::parse(const std::string& text) {
  const std::string key = lower(text);
  auto parsed = std::make_shared<Parsed>();
  for (const MethodEntry& m : kMethodTable) {
    const std::string name = m.name;
    const bool prefix = name.back() == ':';
    if (prefix ? !starts_with(key, name) : key != name) continue;
    parsed->entry = &m;
    parsed->name = name;
    if (m.parse) m.parse(text, text.substr(name.size()), *parsed);
    break;
  }
  if (!parsed->entry) throw Error("unknown partition method '" + text + "' (methods: " + methods_list() + ")");
  return PartitionMethod(text, std::move(parsed));
}

const std::string& PartitionMethod::name() const { return parsed_->name; }

bool PartitionMethod::needs_measurement() const { return parsed_->entry->needs_measurement; }
bool PartitionMethod::balances() const { return parsed_->entry->balances; }

std::vector<double> PartitionPlan::stage_weights() const { return libpipe::stage_weights(weights, parts); }

double PartitionPlan::bottleneck() const { return libpipe::bottleneck(weights, parts); }

double PartitionPlan::imbalance() const {
  auto w = stage_weights();
  double mean = 0;  // summed as w / S, so that huge weights cannot overflow the total
  for (double x : w) mean += x / static_cast<double>(w.size());
  if (mean <= 0) return 0;
  return *std::max_element(w.begin(), w.end()) / mean - 1;
}

PartitionPlan plan_partition(const ModelDescription& model, const PartitionMethod& method, int num_stages,
                             const std::vector<double>* measured_times) {
  if (num_stages < 1)
    throw Error("the number of pipeline stages must be at least 1, got " + std::to_string(num_stages));
  const std::size_t n = model.layers.size();
  if (method.needs_measurement() && (!measured_times || measured_times->size() != n))
    throw Error("partition method '" + method.name() +
                "' needs measured per-layer times (pipe-train measures them; pipe-plan cannot: "
                "use parameters, flops or type:REGEX there)");
  if (n < static_cast<std::size_t>(num_stages))
    throw Error("cannot split " + model_name(model) + "'s " + layers_str(n) + " into " + std::to_string(num_stages) +
                " stages: every stage needs at least one layer");
  PartitionPlan plan;
  plan.method = method.text();
  method.parsed().entry->plan(model, method.text(), method.parsed(), num_stages, measured_times, plan);
  return plan;
}

PartitionPlan plan_partition(const ModelDescription& model, const std::string& method, int num_stages,
                             const std::vector<double>* measured_times) {
  return plan_partition(model, PartitionMethod::parse(method), num_stages, measured_times);
}

PartitionPlan plan_partition_v_shape(const ModelDescription& model, const PartitionMethod& method, int num_stages,
                                     const std::vector<double>* measured_times) {
  if (num_stages < 1)
    throw Error("the number of pipeline stages must be at least 1, got " + std::to_string(num_stages));
  PartitionPlan plan = plan_partition(model, method, 2 * num_stages, measured_times);
  if (method.balances()) plan.parts = partition_balanced_v_shape(plan.weights, num_stages);
  return plan;
}

PartitionPlan plan_chunk_partition(const ModelDescription& model, const PartitionMethod& method, int num_stages,
                                   int virtual_stages, ChunkPlacement placement,
                                   const std::vector<double>* measured_times) {
  if (placement == ChunkPlacement::v_shape && virtual_stages == 2)
    return plan_partition_v_shape(model, method, num_stages, measured_times);
  return plan_partition(model, method, num_stages * virtual_stages, measured_times);
}

}  // namespace libpipe
