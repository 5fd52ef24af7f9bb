// Whole-model description and the end-to-end shape check.
#include "pipe/describe.hpp"

#include <algorithm>
#include <iomanip>
#include <map>
#include <sstream>

#include "model/suggest.hpp"
#include "pipe/backend.hpp"
#include "pipe/error.hpp"

namespace libpipe {
namespace {

std::string layer_name(const LayerInfo& info) { return "layer " + std::to_string(info.index) + " (" + info.type + ")"; }

[[noreturn]] void fail(const SourceLocation& where, const std::string& message) {
  throw Error(where.str() + ": " + message);
}

// Runs the factory's describe and turns its exceptions into located messages.
LayerDescription describe_one(const LayerFactory& factory, const LayerSpec& spec, const LayerInfo& info,
                              const LayerInfo* previous) {
  try {
    LayerDescription d = factory.describe(spec.args, info.input);
    auto unread = spec.args.unread_keys();
    if (!unread.empty()) {
      const std::string& key = unread.front();
      std::vector<std::string> known(spec.args.requested_keys().begin(), spec.args.requested_keys().end());
      fail(SourceLocation{spec.where.file, spec.args.line_of(key)},
           layer_name(info) + ": unknown argument '" + key + "'" + did_you_mean(key, known));
    }
    return d;
  } catch (const ShapeError& e) {
    std::string from = previous ? layer_name(*previous) + " outputs " : std::string("the model input is ");
    fail(spec.where, layer_name(info) + " expects input " + e.expected() + " but " + from + type_str(info.input));
  } catch (const ArgError& e) {
    int line = spec.args.line_of(e.key());
    std::string hint;  // a missing argument beside a misspelling of it: name the misspelling
    if (line == 0)
      for (const std::string& key : spec.args.unread_keys())
        if (!did_you_mean(key, {e.key()}).empty()) {
          hint = " (line " + std::to_string(spec.args.line_of(key)) + " sets '" + key + "': a misspelling of it?)";
          break;
        }
    fail(SourceLocation{spec.where.file, line ? line : spec.where.line}, layer_name(info) + ": " + e.what() + hint);
  } catch (const Error& e) {
    if (std::string(e.what()).rfind(spec.where.file + ":", 0) == 0) throw;  // already located
    fail(spec.where, layer_name(info) + ": " + e.what());
  }
}

}  // namespace

ModelDescription describe_model(const ModelSpec& model, const LayerRegistry& registry) {
  ModelDescription out;
  out.name = model.name;
  out.input = model.input;
  if (model.layers.empty()) throw Error(model.source + ": the model has no layers");

  std::map<std::string, std::size_t> tie_index;  // key -> index in out.ties
  TensorType current = model.input;
  for (std::size_t i = 0; i < model.layers.size(); ++i) {
    const LayerSpec& spec = model.layers[i];
    LayerInfo info;
    info.index = static_cast<int>(i);
    info.type = spec.type;
    info.tie = spec.tie;
    info.where = spec.where;
    info.input = current;

    const LayerFactory* factory = registry.find(spec.type);
    if (!factory) {
      std::string message = "layer " + std::to_string(i) + ": unknown layer type '" + spec.type + "'" +
                            did_you_mean(spec.type, registry.names());
      if (registry.empty()) message += "; no layer types are registered (no plugins were loaded)";
      fail(spec.where, message);
    }
    // The engine feeds labels to the last layer only, and a loss's per-sample output is no activation to train on.
    if (i > 0 && out.layers.back().description.loss)
      fail(spec.where, layer_name(info) + " follows " + layer_name(out.layers.back()) +
                           ", a loss: a loss must be the model's last layer");
    info.description = describe_one(*factory, spec, info, i ? &out.layers.back() : nullptr);
    try {
      info.unique_params = info.description.param_count();
      numel(info.description.output.shape);  // absurd sizes are errors here, not wraps later
    } catch (const Error& e) {
      fail(spec.where, layer_name(info) + ": " + e.what());
    }

    if (!spec.tie.empty()) {
      const ParamSpec* shared = nullptr;
      for (const auto& p : info.description.params)
        if (p.tieable) {
          if (shared)
            fail(spec.where, layer_name(info) + " marks two parameters tieable ('" + shared->name + "' and '" + p.name +
                                 "'); a layer can share one (a bug in the plugin)");
          shared = &p;
        }
      if (!shared)
        fail(spec.where, layer_name(info) + " has tie = '" + spec.tie + "' but no parameter it can share");
      auto [it, first] = tie_index.emplace(spec.tie, out.ties.size());
      if (first) {
        out.ties.push_back(TieGroup{spec.tie, {}, shared->shape});
      } else {
        TieGroup& group = out.ties[it->second];
        if (group.shape != shared->shape) {
          const LayerInfo& owner = out.layers[group.layers.front()];
          fail(spec.where, layer_name(info) + " shares '" + spec.tie + "' with shape " + shape_str(shared->shape) +
                               " but " + layer_name(owner) + " shares it with shape " + shape_str(group.shape));
        }
        info.unique_params -= numel(shared->shape);
      }
      out.ties[it->second].layers.push_back(info.index);
    }

    current = info.description.output;
    // Up to 10^5 layers of up to 2^50 elements each: the totals are counted
    // with overflow checks too (found by fuzzing).
    try {
      out.params = (Count(out.params) + info.unique_params).value();
      out.flops = (Count(out.flops) + info.description.flops).value();
      out.activation_bytes = (Count(out.activation_bytes) + info.description.activation_bytes).value();
    } catch (const Error&) {
      fail(spec.where, "the model's total parameters, FLOPs or activation bytes up to " + layer_name(info) +
                           " overflow 64 bits: the model is too large");
    }
    out.layers.push_back(std::move(info));
  }
  out.output = current;
  return out;
}

void account_attention(ModelDescription& description, Device device) {
  constexpr std::int64_t kFloat = 4;  // materialised probabilities are counted in float32 (as describe does)
  std::int64_t total = 0;
  for (LayerInfo& info : description.layers) {
    LayerDescription& d = info.description;
    if (d.attention_heads > 0 && flash_attention_runs(device, d.attention_seq, d.attention_head_dim)) {
      const std::int64_t probabilities = d.attention_heads * d.attention_seq * d.attention_seq * kFloat;
      const std::int64_t state = d.attention_heads * d.attention_seq * (d.attention_head_dim + 1) * kFloat;
      d.activation_bytes = std::max<std::int64_t>(0, d.activation_bytes - probabilities) + state;
    }
    total += d.activation_bytes;
  }
  description.activation_bytes = total;
}

const LossLabels& model_loss(const ModelDescription& description) {
  if (description.layers.empty()) throw Error("the model has no layers, so no loss to train");
  const LayerInfo& last = description.layers.back();
  if (!last.description.loss)
    throw Error("training needs a model that ends in a loss layer; its last layer, " + std::to_string(last.index) +
                " (" + last.type + "), is not one (a loss declares its labels in LayerDescription::loss)");
  return *last.description.loss;
}

std::uint64_t model_fingerprint(const ModelDescription& d) {
  std::string text;
  for (const auto& l : d.layers)
    text += l.type + "|" + type_str(l.input) + "|" + type_str(l.description.output) + "|" +
            std::to_string(l.description.param_count()) + "|" + l.tie + ";";
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
  return h;
}

std::string with_commas(std::int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

std::string format_description(const ModelDescription& d) {
  std::ostringstream s;
  s << "model " << (d.name.empty() ? "(unnamed)" : d.name) << ": input " << type_str(d.input) << ", "
    << d.layers.size() << " layers, " << with_commas(d.params) << " parameters\n";
  s << std::left << std::setw(6) << "layer" << std::setw(22) << "type" << std::setw(24) << "output" << std::right
    << std::setw(14) << "params" << std::setw(18) << "flops/sample" << std::setw(16) << "act.bytes" << "  tie\n";
  // Each column ends (or starts) with a space, so that a value wider than its column still stands apart.
  for (const auto& l : d.layers) {
    s << std::left << std::setw(5) << l.index << " " << std::setw(21) << l.type << " " << std::setw(23)
      << type_str(l.description.output) << " " << std::right << std::setw(14) << with_commas(l.unique_params) << " "
      << std::setw(17) << with_commas(l.description.flops) << " " << std::setw(15)
      << with_commas(l.description.activation_bytes) << "  " << l.tie << "\n";
  }
  s << std::left << std::setw(52) << "total" << std::right << std::setw(14) << with_commas(d.params) << " "
    << std::setw(17) << with_commas(d.flops) << " " << std::setw(15) << with_commas(d.activation_bytes) << "\n";
  return s.str();
}

}  // namespace libpipe
