// Hugging Face's LlamaForCausalLM on this plugin's LlamaBlock and RMSNorm and
// the core plugin's Embedding (no position table), LMHead and
// SoftmaxCrossEntropy (pipe/hf_architecture.hpp; pipe-convert reads and writes
// the files).
//
// Names: Hugging Face's model.embed_tokens, model.layers.N.{input_layernorm,
// self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj},
// model.norm and lm_head (absent under tie_word_embeddings), with or without
// the "model." prefix. Hugging Face's Linear weights are [out, in] as ours;
// q_proj, k_proj and v_proj are stacked by rows into attn.qkv.weight, and
// gate_proj and up_proj into mlp.gate_up.weight. Rotary embeddings pair
// channels as Hugging Face's rotate_half does, so q and k need no permutation.
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "llama_layers.hpp"
#include "pipe/error.hpp"

namespace pipe_llama {
namespace {

using libpipe::Error;
using libpipe::NamedTensors;
using libpipe::Tensor;
using json = nlohmann::json;

// The rows of `parts` one after another ([r0 + r1 + ..., cols]).
Tensor stacked(const std::vector<const Tensor*>& parts) {
  const std::int64_t cols = parts.front()->shape()[1];
  std::int64_t rows = 0;
  for (const Tensor* p : parts) rows += p->shape()[0];
  Tensor out = Tensor::empty({rows, cols}, libpipe::DType::float32, libpipe::Device::cpu);
  float* o = out.host_data<float>();
  for (const Tensor* p : parts) {
    const std::int64_t n = p->shape()[0] * cols;
    std::memcpy(o, const_cast<Tensor*>(p)->host_data<float>(), static_cast<std::size_t>(n) * sizeof(float));
    o += n;
  }
  return out;
}

// Rows [first, first + count) of a [rows, cols] tensor.
Tensor rows_of(const Tensor& t, std::int64_t first, std::int64_t count) {
  const std::int64_t cols = t.shape()[1];
  Tensor out = Tensor::empty({count, cols}, libpipe::DType::float32, libpipe::Device::cpu);
  std::memcpy(out.host_data<float>(), const_cast<Tensor&>(t).host_data<float>() + first * cols,
              static_cast<std::size_t>(count * cols) * sizeof(float));
  return out;
}

// The shortest decimal text that reads back as `v` (a TOML float).
std::string float_text(double v) {
  for (int digits = 1; digits <= 17; ++digits) {
    std::ostringstream s;
    s.precision(digits);
    s << v;
    if (std::stod(s.str()) == v) {
      std::string text = s.str();
      if (text.find_first_of(".e") == std::string::npos) text += ".0";
      return text;
    }
  }
  return std::to_string(v);
}

// What a Llama model is made of, read off a description: the layer of each role.
struct LlamaLayers {
  int embedding = -1, norm = -1, head = -1, loss = -1;
  std::vector<int> blocks;
  bool tied = false;
};

bool is_llama(const libpipe::ModelDescription& d, LlamaLayers* out) {
  LlamaLayers g;
  const auto& L = d.layers;
  if (L.size() < 4) return false;
  std::size_t i = 0;
  // The token table alone: Llama has no position table.
  if (L[i].type != "Embedding" || L[i].description.params.size() != 1) return false;
  g.embedding = static_cast<int>(i++);
  while (i < L.size() && L[i].type == "LlamaBlock") g.blocks.push_back(static_cast<int>(i++));
  if (g.blocks.empty() || i + 3 != L.size()) return false;
  if (L[i].type != "RMSNorm" || L[i + 1].type != "LMHead" || L[i + 2].type != "SoftmaxCrossEntropy") return false;
  g.norm = static_cast<int>(i);
  g.head = static_cast<int>(i + 1);
  g.loss = static_cast<int>(i + 2);
  g.tied = !L[g.head].tie.empty() && L[g.head].tie == L[g.embedding].tie;
  if (out) *out = g;
  return true;
}

// A block's parameter, Hugging Face's tensors stacked into it by rows.
struct BlockName {
  const char* ours;
  std::vector<const char*> hf;
};
const BlockName kBlock[] = {
    {"norm1.weight", {"input_layernorm.weight"}},
    {"attn.qkv.weight", {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}},
    {"attn.proj.weight", {"self_attn.o_proj.weight"}},
    {"norm2.weight", {"post_attention_layernorm.weight"}},
    {"mlp.gate_up.weight", {"mlp.gate_proj.weight", "mlp.up_proj.weight"}},
    {"mlp.down.weight", {"mlp.down_proj.weight"}},
};

// Rows of each Hugging Face tensor in a stacked parameter: q, k, v of attention, or gate and up of the MLP.
std::vector<std::int64_t> part_rows(const std::string& ours, const AttentionConfig& a, const MlpConfig& m) {
  if (ours == "attn.qkv.weight") return {a.heads * a.head_dim, a.kv_heads * a.head_dim, a.kv_heads * a.head_dim};
  return {m.hidden, m.hidden};  // mlp.gate_up.weight
}

class Llama : public libpipe::HfArchitecture {
 public:
  std::string model_file(const std::string& config_text, const std::string& name,
                         std::int64_t seq_len) const override {
    json c;
    try {
      c = json::parse(config_text);
    } catch (const json::exception& e) {
      throw Error(std::string("config.json: not JSON (") + e.what() + ")");
    }
    auto integer = [&](const char* key) -> std::int64_t {
      if (!c.contains(key) || !c[key].is_number_integer() || c[key].get<std::int64_t>() < 1)
        throw Error(std::string("config.json: '") + key + "' must be a positive integer");
      return c[key].get<std::int64_t>();
    };
    const std::int64_t vocab = integer("vocab_size"), dim = integer("hidden_size"),
                       hidden = integer("intermediate_size"), layers = integer("num_hidden_layers"),
                       heads = integer("num_attention_heads"), positions = integer("max_position_embeddings");
    const std::int64_t kv_heads =
        c.contains("num_key_value_heads") && !c["num_key_value_heads"].is_null() ? integer("num_key_value_heads")
                                                                                 : heads;
    if (dim % heads != 0)
      throw Error("config.json: hidden_size " + std::to_string(dim) + " is not a multiple of num_attention_heads " +
                  std::to_string(heads));
    if (heads % kv_heads != 0)
      throw Error("config.json: num_attention_heads " + std::to_string(heads) +
                  " is not a multiple of num_key_value_heads " + std::to_string(kv_heads));
    if (c.contains("head_dim") && !c["head_dim"].is_null() && c["head_dim"] != dim / heads)
      throw Error("config.json: head_dim " + c["head_dim"].dump() + " is not hidden_size / num_attention_heads (" +
                  std::to_string(dim / heads) + "), which LlamaAttention assumes");
    const std::string activation = c.value("hidden_act", std::string("silu"));
    if (activation != "silu")
      throw Error("config.json: hidden_act '" + activation + "' is not SiLU, which SwiGLU computes");
    for (const char* flag : {"attention_bias", "mlp_bias"})
      if (c.value(flag, false)) throw Error(std::string("config.json: '") + flag + "' is not supported (no biases)");
    // rope_theta at the top level (transformers 4) or in rope_parameters (transformers 5); only the default,
    // unscaled rotary embedding is computed.
    double theta = 10000.0;
    if (c.contains("rope_theta") && c["rope_theta"].is_number()) theta = c["rope_theta"].get<double>();
    for (const char* key : {"rope_parameters", "rope_scaling"}) {
      if (!c.contains(key) || c[key].is_null()) continue;
      const json& r = c[key];
      if (!r.is_object()) throw Error(std::string("config.json: '") + key + "' is not an object");
      const std::string type = r.value("rope_type", r.value("type", std::string("default")));
      if (type != "default")
        throw Error(std::string("config.json: ") + key + ".rope_type '" + type +
                    "' is not supported (only the default, unscaled rotary embedding)");
      if (r.contains("rope_theta") && r["rope_theta"].is_number()) theta = r["rope_theta"].get<double>();
    }
    const double eps = c.value("rms_norm_eps", 1e-6);
    const bool tied = c.value("tie_word_embeddings", false);
    const std::int64_t T = seq_len > 0 ? seq_len : positions;
    if (T > positions)
      throw Error("--seq-len " + std::to_string(T) + " exceeds the model's max_position_embeddings " +
                  std::to_string(positions));
    const std::string tie = tied ? "tie = \"embedding\"\n" : "";
    std::string s;
    s += "# Imported from a Hugging Face LlamaForCausalLM by pipe-convert import-hf (max_position_embeddings " +
         std::to_string(positions) + ").\n\n";
    s += "[model]\nname = \"" + name + "\"\n";
    s += "input_shape = [" + std::to_string(T) + "]\ninput_dtype = \"int32\"\n\n";
    s += "[[layer]]\ntype = \"Embedding\"\nvocab = " + std::to_string(vocab) + "\ndim = " + std::to_string(dim) +
         "\n" + tie + "\n";
    s += "[[layer]]\ntype = \"LlamaBlock\"\ndim = " + std::to_string(dim) + "\nheads = " + std::to_string(heads) +
         "\nkv_heads = " + std::to_string(kv_heads) + "\nhidden = " + std::to_string(hidden) +
         "\nrope_theta = " + float_text(theta) + "\neps = " + float_text(eps) +
         "\nn_layer = " + std::to_string(layers) + "\nrepeat = " + std::to_string(layers) + "\n\n";
    s += "[[layer]]\ntype = \"RMSNorm\"\neps = " + float_text(eps) + "\n\n";
    s += "[[layer]]\ntype = \"LMHead\"\nvocab = " + std::to_string(vocab) + "\ndim = " + std::to_string(dim) + "\n" +
         tie + "\n";
    s += "[[layer]]\ntype = \"SoftmaxCrossEntropy\"\n";
    return s;
  }

  std::map<int, NamedTensors> import_parameters(const libpipe::ModelSpec&, const libpipe::ModelDescription& d,
                                                const NamedTensors& hf) const override {
    LlamaLayers g;
    if (!is_llama(d, &g))
      throw Error("the model is not Llama's shape (Embedding without positions, LlamaBlocks, RMSNorm, LMHead, "
                  "SoftmaxCrossEntropy)");
    auto find = [&](const std::string& key) -> const Tensor& {
      for (const std::string& name : {"model." + key, key}) {
        auto it = hf.find(name);
        if (it != hf.end()) return it->second;
      }
      throw Error("model.safetensors has no tensor '" + key + "'");
    };
    std::map<int, NamedTensors> out;
    auto take = [&](int layer, const std::string& ours, const std::vector<std::string>& keys) {
      std::vector<const Tensor*> parts;
      for (const std::string& key : keys) parts.push_back(&find(key));
      // Stacked parts must be matrices of one width.
      bool fits = true;
      if (keys.size() > 1)
        for (const Tensor* p : parts) fits = fits && p->shape().size() == 2 && p->shape()[1] == parts[0]->shape()[1];
      const Tensor t = keys.size() == 1 ? *parts[0] : fits ? stacked(parts) : Tensor();
      for (const auto& p : d.layers[static_cast<std::size_t>(layer)].description.params)
        if (p.name == ours && (!fits || p.shape != t.shape())) {
          std::string have;
          for (std::size_t k = 0; k < keys.size(); ++k)
            have += (k ? ", '" : "'") + keys[k] + "' " + libpipe::shape_str(parts[k]->shape());
          throw Error("model.safetensors: " + have + (keys.size() > 1 ? " stacked by rows" : "") + ": layer " +
                      std::to_string(layer) + "'s " + ours + " needs " + libpipe::shape_str(p.shape));
        }
      out[layer][ours] = t;
    };
    take(g.embedding, "wte", {"embed_tokens.weight"});
    for (std::size_t b = 0; b < g.blocks.size(); ++b)
      for (const BlockName& n : kBlock) {
        std::vector<std::string> keys;
        for (const char* k : n.hf) keys.push_back("layers." + std::to_string(b) + "." + k);
        take(g.blocks[b], n.ours, keys);
      }
    take(g.norm, "weight", {"norm.weight"});
    if (!g.tied) {
      auto it = hf.find("lm_head.weight");
      if (it == hf.end()) throw Error("model.safetensors has no tensor 'lm_head.weight' (the model's head is untied)");
      take(g.head, "weight", {"lm_head.weight"});
    }
    return out;
  }

  bool exports(const libpipe::ModelSpec&, const libpipe::ModelDescription& d) const override {
    return is_llama(d, nullptr);
  }

  std::string config_json(const libpipe::ModelSpec& spec, const libpipe::ModelDescription& d) const override {
    LlamaLayers g;
    is_llama(d, &g);
    const auto& wte = d.layers[static_cast<std::size_t>(g.embedding)].description.params;
    const libpipe::Args& block = spec.layers[static_cast<std::size_t>(g.blocks.front())].args;
    const AttentionConfig a = read_attention_config(block);
    const MlpConfig m = read_mlp_config(block);
    const std::int64_t vocab = wte[0].shape[0];
    json c = {{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"vocab_size", vocab},
              {"hidden_size", a.dim},
              {"intermediate_size", m.hidden},
              {"num_hidden_layers", g.blocks.size()},
              {"num_attention_heads", a.heads},
              {"num_key_value_heads", a.kv_heads},
              {"head_dim", a.head_dim},
              {"hidden_act", "silu"},
              {"max_position_embeddings", spec.input.shape.at(0)},
              {"rms_norm_eps", static_cast<double>(read_eps(block))},
              {"rope_theta", static_cast<double>(a.rope_theta)},
              {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", static_cast<double>(a.rope_theta)}}},
              {"attention_bias", false},
              {"mlp_bias", false},
              {"attention_dropout", 0.0},
              {"tie_word_embeddings", g.tied},
              {"bos_token_id", 0},
              {"eos_token_id", vocab - 1}};
    return c.dump(2) + "\n";
  }

  NamedTensors export_tensors(const libpipe::ModelSpec& spec, const libpipe::ModelDescription& d,
                              const std::map<int, NamedTensors>& params) const override {
    LlamaLayers g;
    is_llama(d, &g);
    auto get = [&](int layer, const std::string& name) -> const Tensor& {
      auto l = params.find(layer);
      if (l == params.end() || !l->second.count(name))
        throw Error("layer " + std::to_string(layer) + " has no parameter '" + name + "'");
      return l->second.at(name);
    };
    const libpipe::Args& block = spec.layers[static_cast<std::size_t>(g.blocks.front())].args;
    const AttentionConfig a = read_attention_config(block);
    const MlpConfig m = read_mlp_config(block);
    NamedTensors hf;
    hf["model.embed_tokens.weight"] = get(g.embedding, "wte");
    for (std::size_t b = 0; b < g.blocks.size(); ++b)
      for (const BlockName& n : kBlock) {
        const Tensor& t = get(g.blocks[b], n.ours);
        const std::string prefix = "model.layers." + std::to_string(b) + ".";
        if (n.hf.size() == 1) {
          hf[prefix + n.hf[0]] = t;
          continue;
        }
        const std::vector<std::int64_t> rows = part_rows(n.ours, a, m);
        std::int64_t first = 0;
        for (std::size_t k = 0; k < n.hf.size(); ++k) {
          hf[prefix + n.hf[k]] = rows_of(t, first, rows[k]);
          first += rows[k];
        }
      }
    hf["model.norm.weight"] = get(g.norm, "weight");
    if (!g.tied) hf["lm_head.weight"] = get(g.head, "weight");
    return hf;
  }
};

}  // namespace

std::unique_ptr<libpipe::HfArchitecture> make_hf_llama() { return std::make_unique<Llama>(); }

}  // namespace pipe_llama
