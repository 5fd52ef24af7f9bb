// Hugging Face checkpoints in and out (pipe-convert import-hf / export-hf).
// A plugin whose layers make up a published architecture (GPT2LMHeadModel,
// LlamaForCausalLM, ...) registers how that architecture's config.json and
// tensors map onto a model file and its layers' parameters:
//
//   registry.add_hf_architecture("GPT2LMHeadModel", std::make_unique<MyGpt2>());
//
// The host reads and writes the files (config.json, model.safetensors,
// pipe-train checkpoints) and never names a layer type.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/model.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

// Tensors by name (float32, on the host): Hugging Face's names, or one layer's own parameter names.
using NamedTensors = std::map<std::string, Tensor>;

class PIPE_API HfArchitecture {
 public:
  virtual ~HfArchitecture();

  // The model file (TOML text) for a config.json (its text): `name` names the model, `seq_len` is the input
  // length per sample (0: the config's context length). A config this architecture cannot represent exactly is a
  // libpipe::Error naming the field.
  virtual std::string model_file(const std::string& config_json, const std::string& name,
                                 std::int64_t seq_len) const = 0;
  // Every layer's parameters (global layer index -> parameter name -> tensor of the described shape) from the
  // checkpoint's tensors. A tied parameter is given once, by the first layer of its tie group. A missing or
  // misshapen tensor is an error naming it.
  virtual std::map<int, NamedTensors> import_parameters(const ModelSpec& spec, const ModelDescription& model,
                                                        const NamedTensors& hf) const = 0;

  // Whether `model` has this architecture's shape (export-hf takes the first architecture that does).
  virtual bool exports(const ModelSpec& spec, const ModelDescription& model) const = 0;
  // config.json's text, and the tensors under Hugging Face's names, from every layer's parameters (as
  // import_parameters gives them).
  virtual std::string config_json(const ModelSpec& spec, const ModelDescription& model) const = 0;
  virtual NamedTensors export_tensors(const ModelSpec& spec, const ModelDescription& model,
                                      const std::map<int, NamedTensors>& params) const = 0;
};

}  // namespace libpipe
