// pipe-bench: benchmarks of libpipe, one subcommand per part (partition now;
// p2p, pipeline and training as they land). Each prints a table in the style
// of nccl-tests, the command that reproduces it, and checks what it times.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "bench.hpp"

namespace {

// Add a benchmark here: name, one-line summary, entry point.
const pipe_bench::Subcommand kSubcommands[] = {
    {"partition", "partitioner time and optimality, 10^3..10^6 layers on 2..1024 stages", pipe_bench::run_partition},
    {"train",
     "one rank's forward + backward + AdamW step over a model: tokens/s, GFLOP/s, sgemm share, and the GEMMs' own "
     "rate and part of the step",
     pipe_bench::run_train},
    {"ops",
     "the op layer at gpt-tiny/gpt-small shapes: GEMMs against raw dnnl_sgemm and cblas_sgemm, other ops' time and "
     "GB/s",
     pipe_bench::run_ops},
    {"p2p", "under mpirun -np 2: activation transfers through libpipe's Comm vs raw MPI, 1 KiB..64 MiB",
     pipe_bench::run_p2p},
    {"pipeline", "under mpirun -np 4: step time and measured bubble, 1/2/4 stages x 1..32 micro-batches",
     pipe_bench::run_pipeline},
    {"attention", "causal attention, materialised against flash, forward and backward at each sequence length: "
     "time, GFLOP/s, memory kept, the default path",
     pipe_bench::run_attention},
    {"gemm", "backend GEMMs at a model's training shapes on cpu or cuda (fp32/tf32/bf16): TFLOP/s, % of peak",
     pipe_bench::run_gemm},
};

std::string names() {
  std::string out;
  for (const auto& sub : kSubcommands) out += (out.empty() ? "" : ", ") + std::string(sub.name);
  return out;
}

void print_help() {
  std::printf("usage: pipe-bench BENCHMARK [options]   (pipe-bench BENCHMARK --help for its options)\n\nbenchmarks:\n");
  for (const auto& sub : kSubcommands) std::printf("  %-12s %s\n", sub.name, sub.summary);
}

}  // namespace

int main(int argc, char** argv) {
  std::string command_line;
  for (int i = 0; i < argc; ++i) command_line += (i ? " " : "") + std::string(argv[i]);
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const auto& sub : kSubcommands) {
    if (name != sub.name) continue;
    try {
      return sub.run(std::vector<std::string>(argv + 2, argv + argc), command_line);
    } catch (const std::exception& e) {  // libpipe::Error, bad flags, ...: all one line
      std::fprintf(stderr, "pipe-bench %s: error: %s\n", sub.name, e.what());
    }
    return 1;
  }
  std::fprintf(stderr, "pipe-bench: error: unknown benchmark '%s' (benchmarks: %s)\n", name.c_str(), names().c_str());
  return 2;
}
