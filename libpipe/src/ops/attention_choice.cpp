#include "ops/attention_choice.hpp"

#include <cstdlib>
#include <string>

#include "pipe/backend.hpp"
#include "pipe/error.hpp"

namespace libpipe {
namespace {

// Flash attention by default from this many tokens on.
// CPU (ops/cpu/flash_attention.cpp): `pipe-bench attention` (forward + backward of 12 heads of 64, one sample, the
// Ice Lake Xeon of share/doc/PERFORMANCE.md, one core, 2026-12-08), materialised / flash: T = 256 3.8-3.9 ms /
// 5.6; 512 18.7-18.8 / 20.0-20.2; 768 42.9-44.0 / 42.2-42.4; 1024 86.2-89.3 / 71.6-72.2; 2048 559-566 / 201-204.
// Below 768 tokens the materialised path's products (the whole triangle at once, no recomputation) win; at 768
// the two are even; from 1024 its T^2 matrices no longer stay in cache.
constexpr std::int64_t kCpuFlashFromSeq = 1024;
// GPU (ops/cuda/flash_attention.cu): the flash kernels run on the CUDA cores, the materialised path's products on
// the tensor cores; from 2048 tokens its probabilities (B H T^2 values per layer, kept for backward) outgrow that
// advantage. Not measured yet.
constexpr std::int64_t kCudaFlashFromSeq = 2048;

}  // namespace

AttentionChoice attention_choice() {
  static const AttentionChoice choice = [] {
    const char* env = std::getenv("PIPE_ATTENTION");
    if (env == nullptr || *env == '\0' || std::string(env) == "auto") return AttentionChoice::automatic;
    if (std::string(env) == "flash") return AttentionChoice::flash;
    if (std::string(env) == "materialized") return AttentionChoice::materialized;
    throw Error(std::string("PIPE_ATTENTION='") + env + "': expected flash, materialized or auto");
  }();
  return choice;
}

bool flash_attention_runs(Device device, std::int64_t seq, std::int64_t head_dim) {
  if (device == Device::cuda && head_dim > kCudaFlashMaxHeadDim) return false;  // the CPU's takes any head size
  switch (attention_choice()) {
    case AttentionChoice::flash:
      return true;
    case AttentionChoice::materialized:
      return false;
    case AttentionChoice::automatic:
      break;
  }
  return seq >= (device == Device::cpu ? kCpuFlashFromSeq : kCudaFlashFromSeq);
}

}  // namespace libpipe
