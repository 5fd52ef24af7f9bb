// pipe-convert: Hugging Face checkpoints in and out.
//
//   pipe-convert import-hf HF_DIR OUT_DIR   config.json + model.safetensors -> OUT_DIR/model.toml and a
//                                           pipe-train checkpoint in OUT_DIR/checkpoint (fresh optimizer state)
//   pipe-convert export-hf CHECKPOINT OUT_DIR   a pipe-train checkpoint -> config.json + model.safetensors
//
// The architecture (GPT2LMHeadModel, ...) maps onto layers through the plugin
// that registered it (pipe/hf_architecture.hpp); this program only moves
// files. Both directions build the model on one rank, in the process itself
// (MPI without mpirun), and go through pipe-train's own checkpoint code, so
// an imported checkpoint is exactly what --load reads and an export starts
// from a checkpoint --load accepts (checksums, model fingerprint, shapes).
#include <mpi.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "parse_flags.hpp"
#include "text_file.hpp"
#include "pipe/checkpoint.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/grid.hpp"
#include "pipe/hf_architecture.hpp"
#include "pipe/layer.hpp"
#include "pipe/model.hpp"
#include "pipe/ops.hpp"
#include "pipe/optimizer.hpp"
#include "pipe/paths.hpp"
#include "pipe/pipeline_module.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"
#include "pipe/safetensors.hpp"
#include "pipe/topology.hpp"

namespace {

namespace fs = std::filesystem;
namespace po = boost::program_options;
using json = nlohmann::json;
constexpr const char* kProgram = "pipe-convert";

struct Options {
  std::string command, input, output;
  std::string name;       // import: the model's name (default: OUT_DIR's last component)
  std::int64_t seq_len = 0;
  std::string optimizer = "adamw";
  std::string model;      // export: the model file or shipped name
  bool builtin_plugins = true;
  std::vector<std::string> plugin_dirs;
};

const char* kUsage =
    "usage: pipe-convert import-hf HF_DIR OUT_DIR [--name NAME] [--seq-len T] [--optimizer adamw|sgd]\n"
    "       pipe-convert export-hf CHECKPOINT OUT_DIR [--model M]\n\n"
    "Hugging Face checkpoints in and out. import-hf reads HF_DIR/config.json and HF_DIR/model.safetensors and\n"
    "writes OUT_DIR/model.toml and a pipe-train checkpoint in OUT_DIR/checkpoint with fresh optimizer state:\n"
    "  mpirun -np 4 pipe-train --model OUT_DIR/model.toml --stages 4 --load OUT_DIR/checkpoint ...\n"
    "export-hf reads a checkpoint (a --save folder or one step of it) and writes OUT_DIR/config.json and\n"
    "OUT_DIR/model.safetensors, which transformers' from_pretrained loads. Architectures come from plugins\n"
    "(the transformer plugin ships GPT2LMHeadModel). Nothing is downloaded: bring the weights.";

std::string architectures_list(const libpipe::LayerRegistry& registry) {
  std::string out;
  for (const auto& n : registry.hf_architecture_names()) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "none: no plugin registers one" : out;
}

// The model built on this one rank: every layer, gradients allocated, and an optimizer over them.
struct OneRank {
  std::unique_ptr<libpipe::PipelineParallelGrid> grid;
  std::unique_ptr<libpipe::PipelineModule> module;
  std::unique_ptr<libpipe::Optimizer> optimizer;

  OneRank(const libpipe::ModelSpec& spec, const libpipe::ModelDescription& d, const libpipe::LayerRegistry& registry,
          const std::string& optimizer_kind) {
    grid = std::make_unique<libpipe::PipelineParallelGrid>(MPI_COMM_WORLD, libpipe::PipeDataParallelTopology(1, 1));
    const libpipe::Parts parts{0, static_cast<int>(d.layers.size())};
    module = std::make_unique<libpipe::PipelineModule>(spec, d, registry, *grid, parts);
    std::vector<libpipe::Layer*> layers;
    for (auto& l : module->layers()) {
      libpipe::allocate_grads(*l.layer);
      layers.push_back(l.layer.get());
    }
    libpipe::OptimizerConfig config;
    config.kind = optimizer_kind;
    optimizer = std::make_unique<libpipe::Optimizer>(config, libpipe::parameters_of(layers));
  }
};

int import_hf(const Options& o, const libpipe::LayerRegistry& registry) {
  const std::string config_path = (fs::path(o.input) / "config.json").string();
  const std::string config_text = pipe_apps::read_text_file(config_path, config_path);
  json config;
  try {
    config = json::parse(config_text);
  } catch (const json::exception& e) {
    throw libpipe::Error(config_path + ": not JSON (" + e.what() + ")");
  }
  if (!config.contains("architectures") || !config["architectures"].is_array() || config["architectures"].empty() ||
      !config["architectures"][0].is_string())
    throw libpipe::Error(config_path + ": no \"architectures\" list naming the model's class");
  const std::string arch_name = config["architectures"][0].get<std::string>();
  const libpipe::HfArchitecture* arch = registry.find_hf_architecture(arch_name);
  if (!arch)
    throw libpipe::Error(config_path + ": architecture '" + arch_name + "' is not registered by any plugin (known: " +
                         architectures_list(registry) + ")");
  const std::string weights = (fs::path(o.input) / "model.safetensors").string();
  if (!fs::exists(weights) && fs::exists(fs::path(o.input) / "model.safetensors.index.json"))
    throw libpipe::Error(o.input + ": the weights are sharded (model.safetensors.index.json); join them into one "
                         "model.safetensors first");

  const std::string name = o.name.empty() ? fs::path(o.output).lexically_normal().filename().string() : o.name;
  std::string toml;
  try {
    toml = arch->model_file(config_text, name.empty() ? "imported" : name, o.seq_len);
  } catch (const libpipe::Error& e) {
    throw libpipe::Error(config_path + ": " + e.what());
  }
  std::error_code error;
  fs::create_directories(o.output, error);
  if (error) throw libpipe::Error(o.output + ": cannot create the directory (" + error.message() + ")");
  const std::string model_path = (fs::path(o.output) / "model.toml").string();
  pipe_apps::write_text_file(model_path, toml);
  const libpipe::ModelSpec spec = libpipe::load_model_file(model_path);
  const libpipe::ModelDescription d = libpipe::describe_model(spec, registry);

  libpipe::NamedTensors hf = libpipe::read_safetensors(weights);
  for (auto& [key, t] : hf) {
    if (t.dtype() == libpipe::DType::bfloat16) t = libpipe::ops::to_dtype(t, libpipe::DType::float32);
    if (t.dtype() != libpipe::DType::float32)
      throw libpipe::Error(weights + ": tensor '" + key + "' is " + libpipe::dtype_name(t.dtype()) +
                           ", not a float tensor");
  }
  std::map<int, libpipe::NamedTensors> params;
  try {
    params = arch->import_parameters(spec, d, hf);
  } catch (const libpipe::Error& e) {
    throw libpipe::Error(weights + ": " + e.what());
  }

  OneRank model(spec, d, registry, o.optimizer);
  std::size_t assigned = 0, total = 0;
  for (auto& local : model.module->layers())
    for (auto& p : local.layer->parameters()) {
      ++total;
      auto layer = params.find(local.index);
      const bool given = layer != params.end() && layer->second.count(p.spec.name);
      // A tied weight is given once, by its group's first layer; on one rank the others share its storage.
      if (!given && p.spec.tieable && !d.layers[static_cast<std::size_t>(local.index)].tie.empty()) continue;
      if (!given)
        throw libpipe::Error(weights + ": nothing for layer " + std::to_string(local.index) + " (" + local.type +
                             ")'s parameter '" + p.spec.name + "'");
      const libpipe::Tensor& from = layer->second.at(p.spec.name);
      libpipe::Tensor& into = libpipe::master_of(p);
      std::memcpy(into.data(), from.data(), into.bytes());
      libpipe::refresh_from_master(p);
      ++assigned;
    }
  json settings = {{"imported_from", o.input}, {"architecture", arch_name}};
  const std::string saved = libpipe::save_checkpoint((fs::path(o.output) / "checkpoint").string(), 0, *model.module,
                                                     *model.optimizer, *model.grid, d, settings.dump());
  std::printf("%s: %s (%s, %s parameters) -> %s and %s (%zu of %zu parameter tensors from %s)\n", kProgram,
              o.input.c_str(), arch_name.c_str(), libpipe::with_commas(d.params).c_str(), model_path.c_str(),
              saved.c_str(), assigned, total, weights.c_str());
  return 0;
}

int export_hf(const Options& o, const libpipe::LayerRegistry& registry) {
  const std::string step = libpipe::checkpoint_step_dir(o.input, "checkpoint " + o.input);
  const std::string manifest_path = (fs::path(step) / "manifest.json").string();
  const libpipe::CheckpointManifest manifest =
      libpipe::parse_checkpoint_manifest(pipe_apps::read_text_file(manifest_path, manifest_path), manifest_path);
  // The model: --model, else the model.toml that import-hf wrote beside the checkpoint folder, else the
  // manifest's model name as a shipped model.
  std::string model = o.model;
  const fs::path beside = fs::path(o.input).lexically_normal().parent_path() / "model.toml";
  if (model.empty()) model = fs::exists(beside) ? beside.string() : manifest.model;
  const libpipe::ModelSpec spec = libpipe::load_model_file(libpipe::resolve_model_path(model));
  const libpipe::ModelDescription d = libpipe::describe_model(spec, registry);
  const libpipe::HfArchitecture* arch = nullptr;
  std::string arch_name;
  for (const auto& name : registry.hf_architecture_names())
    if (registry.find_hf_architecture(name)->exports(spec, d)) {
      arch = registry.find_hf_architecture(name);
      arch_name = name;
      break;
    }
  if (!arch)
    throw libpipe::Error("model " + model + " has the shape of no registered Hugging Face architecture (known: " +
                         architectures_list(registry) + ")");

  libpipe::PipelineParallelGrid grid(MPI_COMM_WORLD, libpipe::PipeDataParallelTopology(1, 1));
  libpipe::PipelineModule module(spec, d, registry, grid, libpipe::Parts{0, static_cast<int>(d.layers.size())});
  libpipe::load_checkpoint_weights(o.input, module, d);
  std::map<int, libpipe::NamedTensors> params;
  for (auto& local : module.layers())
    for (auto& p : local.layer->parameters())
      params[local.index][p.spec.name] = libpipe::ops::to_device(libpipe::master_of(p), libpipe::Device::cpu);
  const libpipe::NamedTensors hf = arch->export_tensors(spec, d, params);

  std::error_code error;
  fs::create_directories(o.output, error);
  if (error) throw libpipe::Error(o.output + ": cannot create the directory (" + error.message() + ")");
  pipe_apps::write_text_file((fs::path(o.output) / "config.json").string(), arch->config_json(spec, d));
  std::vector<std::pair<std::string, const libpipe::Tensor*>> tensors;
  for (const auto& [key, t] : hf) tensors.emplace_back(key, &t);
  // transformers reads safetensors files whose metadata says they hold PyTorch tensors.
  libpipe::write_safetensors((fs::path(o.output) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  std::printf("%s: %s (model %s, step %lld) -> %s/config.json and %s/model.safetensors (%s, %zu tensors)\n",
              kProgram, step.c_str(), spec.name.c_str(), static_cast<long long>(manifest.step), o.output.c_str(),
              o.output.c_str(), arch_name.c_str(), tensors.size());
  return 0;
}

bool parse(int argc, char** argv, Options& o) {
  po::options_description flags("Options");
  flags.add_options()
    ("help,h", "show this help")
    ("name", po::value(&o.name)->value_name("NAME"), "import: the model's name (default: OUT_DIR's name)")
    ("seq-len", po::value(&o.seq_len)->value_name("T")->default_value(0),
     "import: tokens per sample in model.toml (default 0: the model's context length)")
    ("optimizer", po::value(&o.optimizer)->value_name("adamw|sgd")->default_value(o.optimizer),
     "import: the optimizer whose fresh state the checkpoint holds (pipe-train --optimizer must match)")
    ("model", po::value(&o.model)->value_name("FILE|NAME"),
     "export: the checkpoint's model (default: model.toml beside the checkpoint folder, else the manifest's model)")
    ("plugin-dir", po::value(&o.plugin_dirs)->value_name("DIR")->composing(), "load plugins from DIR (repeatable)")
    ("no-builtin-plugins", po::bool_switch()->default_value(false), "do not load the shipped plugins");
  po::options_description hidden;
  hidden.add_options()("command", po::value(&o.command))("input", po::value(&o.input))("output", po::value(&o.output));
  po::options_description all;
  all.add(flags).add(hidden);
  po::positional_options_description positional;
  positional.add("command", 1).add("input", 1).add("output", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw libpipe::Error(std::string(e.what()) + " (see --help)");
  }
  pipe_apps::refuse_empty_paths(flags, vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n\n" << flags;
    return false;
  }
  o.builtin_plugins = !vm["no-builtin-plugins"].as<bool>();
  if (o.command != "import-hf" && o.command != "export-hf")
    throw libpipe::Error(o.command.empty() ? "no command: import-hf or export-hf (see --help)"
                                           : "unknown command '" + o.command + "': import-hf or export-hf");
  if (o.input.empty() || o.output.empty())
    throw libpipe::Error(o.command + " needs " + (o.command == "import-hf" ? "HF_DIR" : "CHECKPOINT") +
                         " and OUT_DIR (see --help)");
  if (o.optimizer != "adamw" && o.optimizer != "sgd")
    throw libpipe::Error("--optimizer '" + o.optimizer + "': expected adamw or sgd");
  if (o.seq_len < 0) throw libpipe::Error("--seq-len must be 0 or more, not " + std::to_string(o.seq_len));
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    if (!parse(argc, argv, o)) return 0;
  } catch (const libpipe::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", kProgram, e.what());
    return 2;
  }
  // One rank, in this process: the module and checkpoint code are MPI code.
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rc = 1;
  try {
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 1) throw libpipe::Error("run pipe-convert as one process, without mpirun -np " + std::to_string(size));
    libpipe::LayerRegistry registry;
    libpipe::load_plugins(registry, libpipe::PluginSearch{o.builtin_plugins, true, o.plugin_dirs});
    rc = o.command == "import-hf" ? import_hf(o, registry) : export_hf(o, registry);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", kProgram, e.what());
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
