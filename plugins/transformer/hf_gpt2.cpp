// Hugging Face's GPT2LMHeadModel on this plugin's TransformerBlock and the
// core plugin's Embedding, LayerNorm, LMHead and SoftmaxCrossEntropy
// (pipe/hf_architecture.hpp; pipe-convert reads and writes the files).
//
// Names: Hugging Face's wte, wpe, h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2,
// mlp.c_fc, mlp.c_proj}, ln_f and lm_head, with or without the "transformer."
// prefix that save_pretrained writes. GPT-2's Conv1D stores its weights
// [in, out], the transpose of Linear's [out, in] that TransformerBlock keeps
// (nanoGPT's layout), so every block weight is transposed on the way in and
// out. The fused c_attn holds q, k, v side by side, heads contiguous, as
// attn.qkv does.
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/hf_architecture.hpp"
#include "transformer_layers.hpp"

namespace pipe_transformer {
namespace {

using libpipe::Error;
using libpipe::NamedTensors;
using libpipe::Tensor;
using json = nlohmann::json;

// Conv1D [in, out] <-> Linear [out, in].
Tensor transposed(const Tensor& t) {
  const std::int64_t rows = t.shape()[0], cols = t.shape()[1];
  Tensor out = Tensor::empty({cols, rows}, libpipe::DType::float32, libpipe::Device::cpu);
  const float* in = const_cast<Tensor&>(t).host_data<float>();
  float* o = out.host_data<float>();
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) o[c * rows + r] = in[r * cols + c];
  return out;
}

// The block parameters in nanoGPT's names, Hugging Face's names, and whether the weight is a Conv1D's.
struct BlockName {
  const char* ours;
  const char* hf;
  bool conv1d_weight;
};
const BlockName kBlock[] = {
    {"ln1.weight", "ln_1.weight", false},           {"ln1.bias", "ln_1.bias", false},
    {"attn.qkv.weight", "attn.c_attn.weight", true}, {"attn.qkv.bias", "attn.c_attn.bias", false},
    {"attn.proj.weight", "attn.c_proj.weight", true}, {"attn.proj.bias", "attn.c_proj.bias", false},
    {"ln2.weight", "ln_2.weight", false},           {"ln2.bias", "ln_2.bias", false},
    {"mlp.fc.weight", "mlp.c_fc.weight", true},      {"mlp.fc.bias", "mlp.c_fc.bias", false},
    {"mlp.proj.weight", "mlp.c_proj.weight", true},  {"mlp.proj.bias", "mlp.c_proj.bias", false},
};

// What a GPT-2 model is made of, read off a description: the layer of each role.
struct Gpt2Layers {
  int embedding = -1, norm = -1, head = -1, loss = -1;
  std::vector<int> blocks;
  bool tied = false;
};

bool is_gpt2(const libpipe::ModelDescription& d, Gpt2Layers* out) {
  Gpt2Layers g;
  const auto& L = d.layers;
  if (L.size() < 4) return false;
  std::size_t i = 0;
  if (L[i].type != "Embedding" || L[i].description.params.size() != 2) return false;  // wte and wpe
  g.embedding = static_cast<int>(i++);
  while (i < L.size() && L[i].type == "TransformerBlock") g.blocks.push_back(static_cast<int>(i++));
  if (g.blocks.empty() || i + 3 != L.size()) return false;
  if (L[i].type != "LayerNorm" || L[i + 1].type != "LMHead" || L[i + 2].type != "SoftmaxCrossEntropy") return false;
  g.norm = static_cast<int>(i);
  g.head = static_cast<int>(i + 1);
  g.loss = static_cast<int>(i + 2);
  g.tied = !L[g.head].tie.empty() && L[g.head].tie == L[g.embedding].tie;
  if (out) *out = g;
  return true;
}

class Gpt2 : public libpipe::HfArchitecture {
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
    const std::int64_t vocab = integer("vocab_size"), positions = integer("n_positions"), dim = integer("n_embd"),
                       layers = integer("n_layer"), heads = integer("n_head");
    if (dim % heads != 0)
      throw Error("config.json: n_embd " + std::to_string(dim) + " is not a multiple of n_head " +
                  std::to_string(heads));
    std::int64_t ratio = 4;
    if (c.contains("n_inner") && !c["n_inner"].is_null()) {
      const std::int64_t inner = integer("n_inner");
      if (inner % dim != 0)
        throw Error("config.json: n_inner " + std::to_string(inner) + " is not a multiple of n_embd " +
                    std::to_string(dim) + " (TransformerBlock's hidden width is mlp_ratio x dim)");
      ratio = inner / dim;
    }
    const std::string activation = c.value("activation_function", std::string("gelu_new"));
    if (activation != "gelu_new" && activation != "gelu_pytorch_tanh")
      throw Error("config.json: activation_function '" + activation +
                  "' is not GPT-2's tanh GELU (gelu_new), which TransformerBlock computes");
    const double eps = c.value("layer_norm_epsilon", 1e-5);
    if (eps != 1e-5) throw Error("config.json: layer_norm_epsilon " + std::to_string(eps) + " is not 1e-5");
    for (const char* flag : {"scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"})
      if (c.value(flag, false)) throw Error(std::string("config.json: '") + flag + "' is not supported");
    if (!c.value("scale_attn_weights", true)) throw Error("config.json: scale_attn_weights false is not supported");
    const bool tied = c.value("tie_word_embeddings", true);
    const std::int64_t T = seq_len > 0 ? seq_len : positions;
    if (T > positions)
      throw Error("--seq-len " + std::to_string(T) + " exceeds the model's n_positions " + std::to_string(positions));
    const std::string tie = tied ? "tie = \"embedding\"\n" : "";
    std::string s;
    s += "# Imported from a Hugging Face GPT2LMHeadModel by pipe-convert import-hf.\n\n";
    s += "[model]\nname = \"" + name + "\"\n";
    s += "input_shape = [" + std::to_string(T) + "]\ninput_dtype = \"int32\"\n\n";
    s += "[[layer]]\ntype = \"Embedding\"\nvocab = " + std::to_string(vocab) + "\ndim = " + std::to_string(dim) +
         "\npositions = " + std::to_string(positions) + "\n" + tie + "\n";
    s += "[[layer]]\ntype = \"TransformerBlock\"\ndim = " + std::to_string(dim) + "\nheads = " +
         std::to_string(heads) + "\nmlp_ratio = " + std::to_string(ratio) + "\nn_layer = " + std::to_string(layers) +
         "\nrepeat = " + std::to_string(layers) + "\n\n";
    s += "[[layer]]\ntype = \"LayerNorm\"\n\n";
    s += "[[layer]]\ntype = \"LMHead\"\nvocab = " + std::to_string(vocab) + "\ndim = " + std::to_string(dim) + "\n" +
         tie + "\n";
    s += "[[layer]]\ntype = \"SoftmaxCrossEntropy\"\n";
    return s;
  }

  std::map<int, NamedTensors> import_parameters(const libpipe::ModelSpec&, const libpipe::ModelDescription& d,
                                                const NamedTensors& hf) const override {
    Gpt2Layers g;
    if (!is_gpt2(d, &g)) throw Error("the model is not GPT-2's shape (Embedding, TransformerBlocks, LayerNorm, LMHead, "
                                     "SoftmaxCrossEntropy)");
    auto find = [&](const std::string& key) -> const Tensor& {
      for (const std::string& name : {key, "transformer." + key}) {
        auto it = hf.find(name);
        if (it != hf.end()) return it->second;
      }
      throw Error("model.safetensors has no tensor '" + key + "'");
    };
    std::map<int, NamedTensors> out;
    // Each tensor in the layer's own shape; transposed where Hugging Face keeps a Conv1D weight.
    auto take = [&](int layer, const std::string& ours, const std::string& key, bool conv1d) {
      Tensor t = conv1d ? transposed(find(key)) : find(key);
      for (const auto& p : d.layers[static_cast<std::size_t>(layer)].description.params)
        if (p.name == ours && p.shape != t.shape())
          throw Error("model.safetensors: '" + key + "' is " + libpipe::shape_str(find(key).shape()) + ", layer " +
                      std::to_string(layer) + "'s " + ours + " needs " + libpipe::shape_str(p.shape) +
                      (conv1d ? " (transposed)" : ""));
      out[layer][ours] = t;
    };
    take(g.embedding, "wte", "wte.weight", false);
    take(g.embedding, "wpe", "wpe.weight", false);
    for (std::size_t b = 0; b < g.blocks.size(); ++b)
      for (const BlockName& n : kBlock)
        take(g.blocks[b], n.ours, "h." + std::to_string(b) + "." + n.hf, n.conv1d_weight);
    take(g.norm, "weight", "ln_f.weight", false);
    take(g.norm, "bias", "ln_f.bias", false);
    if (!g.tied) take(g.head, "weight", "lm_head.weight", false);
    return out;
  }

  bool exports(const libpipe::ModelSpec&, const libpipe::ModelDescription& d) const override {
    return is_gpt2(d, nullptr);
  }

  std::string config_json(const libpipe::ModelSpec& spec, const libpipe::ModelDescription& d) const override {
    Gpt2Layers g;
    is_gpt2(d, &g);
    const auto& wte = d.layers[static_cast<std::size_t>(g.embedding)].description.params;
    const libpipe::Args& block = spec.layers[static_cast<std::size_t>(g.blocks.front())].args;
    const std::int64_t dim = wte[0].shape[1];
    json c = {{"architectures", {"GPT2LMHeadModel"}},
              {"model_type", "gpt2"},
              {"vocab_size", wte[0].shape[0]},
              {"n_positions", wte[1].shape[0]},
              {"n_ctx", wte[1].shape[0]},
              {"n_embd", dim},
              {"n_layer", g.blocks.size()},
              {"n_head", block.get_int("heads")},
              {"n_inner", block.get_int("mlp_ratio", 4) * dim},
              {"activation_function", "gelu_new"},
              {"layer_norm_epsilon", 1e-5},
              {"resid_pdrop", 0.0},
              {"embd_pdrop", 0.0},
              {"attn_pdrop", 0.0},
              {"tie_word_embeddings", g.tied},
              // GPT-2's <|endoftext|>, or the last id of a smaller vocabulary.
              {"bos_token_id", std::min<std::int64_t>(50256, wte[0].shape[0] - 1)},
              {"eos_token_id", std::min<std::int64_t>(50256, wte[0].shape[0] - 1)}};
    return c.dump(2) + "\n";
  }

  NamedTensors export_tensors(const libpipe::ModelSpec&, const libpipe::ModelDescription& d,
                              const std::map<int, NamedTensors>& params) const override {
    Gpt2Layers g;
    is_gpt2(d, &g);
    auto get = [&](int layer, const std::string& name) -> const Tensor& {
      auto l = params.find(layer);
      if (l == params.end() || !l->second.count(name))
        throw Error("layer " + std::to_string(layer) + " has no parameter '" + name + "'");
      return l->second.at(name);
    };
    NamedTensors hf;
    hf["transformer.wte.weight"] = get(g.embedding, "wte");
    hf["transformer.wpe.weight"] = get(g.embedding, "wpe");
    for (std::size_t b = 0; b < g.blocks.size(); ++b)
      for (const BlockName& n : kBlock) {
        const Tensor& t = get(g.blocks[b], n.ours);
        hf["transformer.h." + std::to_string(b) + "." + n.hf] = n.conv1d_weight ? transposed(t) : t;
      }
    hf["transformer.ln_f.weight"] = get(g.norm, "weight");
    hf["transformer.ln_f.bias"] = get(g.norm, "bias");
    if (!g.tied) hf["lm_head.weight"] = get(g.head, "weight");
    return hf;
  }
};

}  // namespace

std::unique_ptr<libpipe::HfArchitecture> make_hf_gpt2() { return std::make_unique<Gpt2>(); }

}  // namespace pipe_transformer
