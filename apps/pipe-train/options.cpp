// pipe-train's flags, parsed with Boost.Program_options.
#include "options.hpp"

#include <boost/program_options.hpp>
#include <sstream>

#include "pipe/error.hpp"
#include "pipe/partition_method.hpp"

namespace po = boost::program_options;

namespace pipe_train {
namespace {

po::options_description describe_flags(Options& o) {
  po::options_description model("Model");
  model.add_options()
    ("model", po::value(&o.model)->value_name("FILE|NAME")->default_value(o.model),
     "model file (TOML), or the name of a shipped model: mlp, gpt-tiny, gpt-small, gpt2-124m")
    ("plugin-dir", po::value(&o.plugin_dirs)->value_name("DIR")->composing(),
     "load every *.so in DIR as a layer plugin (repeatable; PIPE_PLUGIN_PATH adds more, colon-separated)")
    ("no-builtin-plugins", po::bool_switch(), "do not load the project's own layer plugins")
    ("seed", po::value(&o.seed)->value_name("N")->default_value(o.seed), "seed for the initial weights (each layer is seeded by its index)");

  po::options_description parallel("Parallelism (world size = product of the axes)");
  parallel.add_options()
    ("stages", po::value<int>()->value_name("S"), "pipeline stages (default 1)")
    ("data-parallel", po::value<int>()->value_name("D"),
     "data-parallel replicas (default: world size / stages); data is the innermost axis, as in DeepSpeed")
    ("topology", po::value(&o.topology)->value_name("AXES"),
     "custom axis order and sizes instead of --stages/--data-parallel, outermost first, "
     "e.g. data=2,pipe=4 or pipe=2,data=2,model=2 (axes: pipe, data, model)")
    ("partition-method", po::value(&o.partition_method)->value_name("METHOD")->default_value(o.partition_method),
     libpipe::partition_methods_help().c_str());

  po::options_description actions("Actions");
  actions.add_options()
    ("describe", po::bool_switch(&o.describe), "print every layer's output, parameters, FLOPs and activation bytes, then exit")
    ("list-layers", po::bool_switch(&o.list_layers), "list the registered layer types and the plugins they came from, then exit")
    ("dry-run", po::bool_switch(&o.dry_run),
     "check the model, build the process grid and this rank's layers, print one JSON line per rank, then exit")
    ("help,h", po::bool_switch(&o.help), "show this help")
    ("version", po::bool_switch(&o.version), "print the version");

  po::options_description all;
  all.add(model).add(parallel).add(actions);
  return all;
}

}  // namespace

std::string help_text() {
  Options o;
  std::ostringstream s;
  s << "usage: mpirun -np N pipe-train [--model M] [--stages S] [--data-parallel D | --topology AXES] [options]\n\n"
       "Pipeline-parallel training: each rank builds only its stage's layers.\n"
       "Training itself lands with the engine; today pipe-train checks a model end to end\n"
       "(--describe), lists layer types (--list-layers) and builds the MPI grid and each\n"
       "rank's layers (--dry-run).\n"
    << describe_flags(o) << "\nExample:\n  mpirun -np 4 pipe-train --model gpt-tiny --stages 2 --data-parallel 2 --dry-run\n"
       "  pipe-plan --model gpt-tiny --stages 2      (the same partition, without MPI)\n";
  return s.str();
}

Options parse_options(int argc, char** argv) {
  Options o;
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(describe_flags(o)).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw libpipe::Error(std::string(e.what()) + " (see --help)");
  }
  if (vm.count("stages")) o.stages = vm["stages"].as<int>();
  if (vm.count("data-parallel")) o.data_parallel = vm["data-parallel"].as<int>();
  o.builtin_plugins = !vm["no-builtin-plugins"].as<bool>();

  if (!o.topology.empty() && (o.stages || o.data_parallel))
    throw libpipe::Error("--topology cannot be combined with --stages or --data-parallel (the topology names every axis)");
  if (o.stages && *o.stages < 1) throw libpipe::Error("--stages must be at least 1, not " + std::to_string(*o.stages));
  if (o.data_parallel && *o.data_parallel < 1)
    throw libpipe::Error("--data-parallel must be at least 1, not " + std::to_string(*o.data_parallel));
  int actions = int(o.describe) + int(o.list_layers) + int(o.dry_run);
  if (actions > 1) throw libpipe::Error("choose one of --describe, --list-layers and --dry-run");
  return o;
}

}  // namespace pipe_train
