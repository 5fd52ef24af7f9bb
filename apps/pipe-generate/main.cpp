// pipe-generate: text from a trained checkpoint, on one rank or over the
// pipeline stages (mpirun -np S: stage s on rank s, activations passed along,
// the next token broadcast from the last stage).
//
// Each new token runs the model forward over the last T tokens (T: the
// model's input length), padded at the end: attention is causal, so the
// padding never reaches the position that predicts the next token. Every
// token is recomputed; no layer keeps a cache between calls.
#include <mpi.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "parse_flags.hpp"
#include "pipe/checkpoint.hpp"
#include "pipe/collective.hpp"
#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/grid.hpp"
#include "pipe/init.hpp"
#include "pipe/layer.hpp"
#include "pipe/model.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/paths.hpp"
#include "pipe/pipeline_module.hpp"
#include "pipe/plugin_loader.hpp"
#include "pipe/registry.hpp"
#include "pipe/topology.hpp"
#include "tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
namespace po = boost::program_options;
using json = nlohmann::json;
constexpr const char* kProgram = "pipe-generate";

struct Options {
  std::string model = "gpt-tiny", load, prompt, prompt_ids, tokenizer, logits, partition = "parameters";
  int max_new_tokens = 32, top_k = 0;
  double temperature = 1.0;
  std::uint64_t seed = 1234;
  bool json = false, builtin_plugins = true;
  std::vector<std::string> plugin_dirs;
};

const char* kUsage =
    "usage: [mpirun -np S] pipe-generate --model M --load CKPT (--prompt TEXT | --prompt-ids I,J,...) [options]\n\n"
    "Continues a prompt with a trained model: greedy with --temperature 0, else sampled (--top-k, --seed).\n"
    "Byte-level models read and write bytes; models with GPT-2's vocabulary use its BPE from --tokenizer\n"
    "(gpt2.tiktoken, which scripts/prepare-data writes beside its shards). Under mpirun -np S the model runs\n"
    "as S pipeline stages.";

bool parse(int argc, char** argv, Options& o) {
  po::options_description flags("Options");
  flags.add_options()
    ("help,h", "show this help")
    ("model", po::value(&o.model)->value_name("FILE|NAME")->default_value(o.model), "the model (file or shipped name)")
    ("load", po::value(&o.load)->value_name("DIR"), "the checkpoint (a --save folder or one step of it); required")
    ("prompt", po::value(&o.prompt)->value_name("TEXT"), "the prompt as text")
    ("prompt-ids", po::value(&o.prompt_ids)->value_name("I,J,..."), "the prompt as token ids")
    ("max-new-tokens", po::value(&o.max_new_tokens)->value_name("N")->default_value(o.max_new_tokens),
     "tokens to generate (0 to 100,000)")
    ("temperature", po::value(&o.temperature)->value_name("T")->default_value(o.temperature),
     "softmax temperature; 0 picks the most likely token (greedy)")
    ("top-k", po::value(&o.top_k)->value_name("K")->default_value(o.top_k), "sample among the K likeliest (0: all)")
    ("seed", po::value(&o.seed)->value_name("S")->default_value(o.seed), "the sampling seed")
    ("tokenizer", po::value(&o.tokenizer)->value_name("FILE"),
     "GPT-2 BPE table (tiktoken format); default: gpt2.tiktoken beside the model file or the checkpoint folder")
    ("json", po::bool_switch(&o.json), "print one JSON object: prompt_ids, ids, text")
    ("logits", po::value(&o.logits)->value_name("FILE"),
     "write each step's next-token logits (float32, little-endian, one row of the vocabulary per new token)")
    ("partition-method", po::value(&o.partition)->value_name("METHOD")->default_value(o.partition),
     "how layers are split over the ranks under mpirun")
    ("plugin-dir", po::value(&o.plugin_dirs)->value_name("DIR")->composing(), "load plugins from DIR (repeatable)")
    ("no-builtin-plugins", po::bool_switch()->default_value(false), "do not load the shipped plugins");
  po::variables_map vm;
  if (!pipe_apps::parse_flags(argc, argv, flags, kUsage, vm)) return false;
  o.builtin_plugins = !vm["no-builtin-plugins"].as<bool>();
  if (o.load.empty()) throw libpipe::Error("--load CKPT is required: generation needs trained weights");
  if (o.prompt.empty() == o.prompt_ids.empty()) throw libpipe::Error("give one of --prompt and --prompt-ids");
  if (o.max_new_tokens < 0 || o.max_new_tokens > 100000)
    throw libpipe::Error("--max-new-tokens must be 0 to 100,000, not " + std::to_string(o.max_new_tokens));
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature))
    throw libpipe::Error("--temperature must be 0 or more");
  if (o.top_k < 0) throw libpipe::Error("--top-k must be 0 or more, not " + std::to_string(o.top_k));
  return true;
}

std::vector<std::int32_t> parse_ids(const std::string& text) {
  std::vector<std::int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long value = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || value < 0 || value > 2147483647L)
      throw libpipe::Error("--prompt-ids: '" + item + "' is not a token id");
    ids.push_back(static_cast<std::int32_t>(value));
  }
  return ids;
}

// The BPE table: --tokenizer, else gpt2.tiktoken beside the model file or the checkpoint folder.
std::string find_table(const Options& o, const std::string& model_path) {
  if (!o.tokenizer.empty()) return o.tokenizer;
  for (const fs::path& dir : {fs::path(model_path).parent_path(), fs::path(o.load).lexically_normal().parent_path(),
                              fs::path(o.load)}) {
    const fs::path candidate = dir / "gpt2.tiktoken";
    if (fs::is_regular_file(candidate)) return candidate.string();
  }
  return "";
}

// The next token from one row of logits.
std::int32_t choose(const float* logits, std::int64_t vocab, const Options& o, libpipe::Rng& rng) {
  if (o.temperature == 0) {
    std::int64_t best = 0;
    for (std::int64_t v = 1; v < vocab; ++v)
      if (logits[v] > logits[best]) best = v;
    return static_cast<std::int32_t>(best);
  }
  std::vector<std::pair<float, std::int32_t>> order;
  for (std::int64_t v = 0; v < vocab; ++v) order.emplace_back(logits[v], static_cast<std::int32_t>(v));
  std::sort(order.begin(), order.end(),
            [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  if (o.top_k > 0 && static_cast<std::int64_t>(order.size()) > o.top_k) order.resize(static_cast<std::size_t>(o.top_k));
  std::vector<double> p(order.size());
  double total = 0;
  for (std::size_t i = 0; i < order.size(); ++i)
    total += p[i] = std::exp((order[i].first - order[0].first) / o.temperature);
  double u = rng.uniform() * total;
  for (std::size_t i = 0; i < order.size(); ++i)
    if ((u -= p[i]) < 0) return order[i].second;
  return order.back().second;
}

int run(const Options& o, int rank, int size) {
  // Set-up in phases that every rank finishes before any goes on: an error all ranks meet (a bad flag, a
  // checkpoint of another model) is printed once, and one that a single rank meets stops the others cleanly.
  libpipe::PhaseResult result;
  auto failed = [&] {
    libpipe::report_phase_failure(MPI_COMM_WORLD, kProgram, result);
    return 1;
  };
  libpipe::LayerRegistry registry;
  std::string model_path;
  libpipe::ModelSpec spec;
  libpipe::ModelDescription d;
  std::int64_t T = 0, vocab = 0;
  int loss_layer = 0;
  libpipe::PartitionPlan plan;
  bool bpe = false;
  std::string table;
  std::optional<pipe_generate::Tokenizer> tokenizer;
  std::vector<std::int32_t> context;
  auto read_inputs = [&] {
    libpipe::load_plugins(registry, libpipe::PluginSearch{o.builtin_plugins, true, o.plugin_dirs});
    model_path = libpipe::resolve_model_path(o.model);
    spec = libpipe::load_model_file(model_path);
    d = libpipe::describe_model(spec, registry);
    const libpipe::LossLabels& labels = libpipe::model_loss(d);
    if (d.input.dtype != libpipe::DType::int32 || d.input.shape.size() != 1 ||
        labels.type.dtype != libpipe::DType::int32)
      throw libpipe::Error("model " + o.model + " is not a token model (int32 input [T], class-id labels)");
    T = d.input.shape[0];
    vocab = labels.classes;
    loss_layer = static_cast<int>(d.layers.size()) - 1;
    plan = libpipe::plan_partition(d, libpipe::PartitionMethod::parse(o.partition), size);
    bpe = vocab > 256;
    table = bpe ? find_table(o, model_path) : "";
    tokenizer.emplace(table.empty() ? pipe_generate::Tokenizer::bytes() : pipe_generate::Tokenizer::bpe(table));
    if (bpe && table.empty() && !o.prompt.empty())
      throw libpipe::Error("--prompt needs GPT-2's BPE table for a vocabulary of " + std::to_string(vocab) +
                           ": give --tokenizer FILE (gpt2.tiktoken) or --prompt-ids");
    context = o.prompt.empty() ? parse_ids(o.prompt_ids) : tokenizer->encode(o.prompt);
    if (context.empty()) throw libpipe::Error("the prompt is empty");
    for (std::int32_t id : context)
      if (id >= vocab)
        throw libpipe::Error("prompt token " + std::to_string(id) + " is not below the vocabulary of " +
                             std::to_string(vocab));
  };
  if (!libpipe::run_phase_on_all(MPI_COMM_WORLD, read_inputs, result, "reading the model and the prompt"))
    return failed();

  std::unique_ptr<libpipe::PipelineParallelGrid> grid;
  std::unique_ptr<libpipe::PipelineModule> module;
  // The grid and the module each in a phase of their own, as pipe-train builds them: both are collective.
  auto build_grid = [&] {
    grid = std::make_unique<libpipe::PipelineParallelGrid>(MPI_COMM_WORLD, libpipe::PipeDataParallelTopology(size, 1));
    if (grid->stage_id() != rank)
      throw libpipe::Error("internal error: stage " + std::to_string(grid->stage_id()) + " on rank " +
                           std::to_string(rank));
  };
  auto build_module = [&] {
    module = std::make_unique<libpipe::PipelineModule>(spec, d, registry, *grid, plan.parts,
                                                       libpipe::ModuleOptions{o.seed});
  };
  if (!libpipe::run_phase_on_all(MPI_COMM_WORLD, build_grid, result, "building the process grid") ||
      !libpipe::run_phase_on_all(MPI_COMM_WORLD, build_module, result, "building this stage's layers"))
    return failed();
  if (!libpipe::run_phase_on_all(MPI_COMM_WORLD, [&] { libpipe::load_checkpoint_weights(o.load, *module, d); },
                                 result, "loading the checkpoint"))
    return failed();
  const int stage = grid->stage_id();
  const std::vector<std::int32_t> prompt = context;

  const bool last = stage == size - 1;
  const bool write_logits = last && !o.logits.empty();
  std::ofstream logits_out;
  if (write_logits) {
    logits_out.open(o.logits, std::ios::binary | std::ios::trunc);
    if (!logits_out) throw libpipe::Error("--logits " + o.logits + ": cannot create the file");
  }
  libpipe::Rng rng(libpipe::mix_seed(o.seed, 0x67656e));
  const auto& chunk = module->chunks().front();
  const auto start = std::chrono::steady_clock::now();
  for (int n = 0; n < o.max_new_tokens; ++n) {
    const std::size_t len = std::min<std::size_t>(context.size(), static_cast<std::size_t>(T));
    libpipe::Tensor x;
    if (stage == 0) {
      x = libpipe::Tensor::zeros({1, T}, libpipe::DType::int32);
      std::copy(context.end() - static_cast<std::ptrdiff_t>(len), context.end(), x.host_data<std::int32_t>());
    } else {
      libpipe::Shape shape{1};
      const auto& in = d.layers[static_cast<std::size_t>(chunk.begin)].input;
      shape.insert(shape.end(), in.shape.begin(), in.shape.end());
      x = libpipe::Tensor::empty(shape, in.dtype);
      MPI_Recv(x.data(), static_cast<int>(x.bytes()), MPI_BYTE, rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    for (auto& l : module->layers()) {
      if (l.index == loss_layer) break;
      libpipe::LayerContext ctx;
      x = l.layer->forward(ctx, x);
    }
    std::int32_t token = 0;
    if (!last) {
      MPI_Send(x.data(), static_cast<int>(x.bytes()), MPI_BYTE, rank + 1, 0, MPI_COMM_WORLD);
    } else {
      const float* row = x.host_data<float>() + static_cast<std::int64_t>(len - 1) * vocab;
      if (write_logits)
        logits_out.write(reinterpret_cast<const char*>(row), static_cast<std::streamsize>(vocab * sizeof(float)));
      token = choose(row, vocab, o, rng);
    }
    MPI_Bcast(&token, 1, MPI_INT32_T, size - 1, MPI_COMM_WORLD);
    context.push_back(token);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (write_logits) {
    logits_out.close();
    if (!logits_out) throw libpipe::Error("--logits " + o.logits + ": cannot write the file");
  }
  if (rank != 0) return 0;
  const std::vector<std::int32_t> generated(context.begin() + static_cast<std::ptrdiff_t>(prompt.size()),
                                            context.end());
  const bool text = !bpe || !table.empty();
  if (o.json) {
    json out = {{"prompt_ids", prompt}, {"ids", generated}, {"seconds", seconds}};
    out["text"] = text ? json(tokenizer->decode(generated)) : json(nullptr);
    std::cout << out.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  } else if (text) {
    std::cout << tokenizer->decode(prompt) << tokenizer->decode(generated) << "\n";
  } else {
    for (std::size_t i = 0; i < generated.size(); ++i) std::cout << (i ? "," : "") << generated[i];
    std::cout << "\n";
  }
  std::fprintf(stderr, "%s: %d tokens in %.2f s (%.1f tokens/s, %d stage%s)\n", kProgram, o.max_new_tokens, seconds,
               seconds > 0 ? o.max_new_tokens / seconds : 0.0, size, size == 1 ? "" : "s");
  return 0;
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
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int rc = 0;
  try {
    rc = run(o, rank, size);
  } catch (const std::exception& e) {
    // After the set-up phases (run prints their errors once): this rank alone failed, so it ends the job.
    const std::string who = size > 1 ? "rank " + std::to_string(rank) + ": error: " : "error: ";
    std::fprintf(stderr, "%s: %s%s\n", kProgram, who.c_str(), e.what());
    std::fflush(stderr);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
