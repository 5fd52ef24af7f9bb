// pipe-bench's subcommands: each benchmark is a function taking its own
// arguments (everything after the subcommand name) and the full command line,
// which it prints so that every table says how to reproduce it.
#pragma once

#include "parse_flags.hpp"
#include "pipe/backend.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"
#include "pipe/tensor.hpp"

#include <boost/program_options.hpp>
#include <fstream>
#include <string>
#include <vector>

namespace pipe_bench {

// Parses a subcommand's flags (apps/common/parse_flags.hpp): --help prints and returns false; bad flags throw
// (main prints one line).
using pipe_apps::parse_flags;

// The CPU's model name from /proc/cpuinfo ("unknown CPU" elsewhere): every table names the CPU it came from.
inline std::string cpu_model_name() {
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// The device a benchmark runs on (--device's name, else cuda where a GPU is usable, else cpu), made ready: GPU 0
// bound, or the CPU backend's thread count set. `description` gets the GPU's name, or the CPU's and the threads.
inline libpipe::Device bench_device(const std::string& name, int threads, std::string& description) {
  const libpipe::Device device = name.empty()
                                     ? (libpipe::cuda_device_count() > 0 ? libpipe::Device::cuda : libpipe::Device::cpu)
                                     : libpipe::parse_device(name);
  if (device == libpipe::Device::cuda) {
    if (libpipe::cuda_device_count() == 0)
      throw libpipe::Error("--device cuda: no GPU: " + libpipe::cuda_unavailable_reason());
    libpipe::select_cuda_device(0);
    description = libpipe::cuda_device_description();
  } else {
    libpipe::set_cpu_threads(threads);
    description = cpu_model_name() + ", " + std::to_string(threads) + " thread(s)";
  }
  return device;
}

struct Subcommand {
  const char* name;
  const char* summary;  // one line for `pipe-bench --help`
  int (*run)(const std::vector<std::string>& args, const std::string& command_line);
};

// The partitioner: time and correctness over 10^3..10^6 layers and 2..1024 stages.
int run_partition(const std::vector<std::string>& args, const std::string& command_line);
// One rank's training step over a shipped model: tokens/s, GFLOP/s, share of sgemm.
int run_train(const std::vector<std::string>& args, const std::string& command_line);
// The op layer at a GPT's shapes: GEMMs against raw dnnl_sgemm and cblas_sgemm, and the other ops.
int run_ops(const std::vector<std::string>& args, const std::string& command_line);
// Under mpirun -np 2: libpipe's Comm against raw MPI_Send/Recv, 1 KiB to 64 MiB.
int run_p2p(const std::vector<std::string>& args, const std::string& command_line);
// Under mpirun -np 4: step time and measured bubble for 1, 2, 4 stages and 1..32 micro-batches.
int run_pipeline(const std::vector<std::string>& args, const std::string& command_line);
// Causal attention, materialised against flash, forward and backward at each sequence length.
int run_attention(const std::vector<std::string>& args, const std::string& command_line);
// The backend's GEMMs at a model's training shapes on --device cpu|cuda and --dtype fp32|tf32|bf16: TFLOP/s and % of peak.
int run_gemm(const std::vector<std::string>& args, const std::string& command_line);

}  // namespace pipe_bench
