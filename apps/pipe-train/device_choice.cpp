// Choosing the device, the comm and the GEMM math (see device_choice.hpp).
#include "device_choice.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "pipe/collective.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"

namespace pipe_train {
namespace {

using libpipe::Device;
using libpipe::Error;

// This rank's device from the flags and what it sees.
Device requested_device(const Options& o) {
  const bool has_gpu = libpipe::cuda_device_count() > 0;
  const Device device = planned_device(o);
  if (device == Device::cuda && !has_gpu) throw Error("--device cuda: " + libpipe::cuda_unavailable_reason());
  if (device == Device::cpu) {
    // When the CPU is the default, it is for want of a GPU: say why there is none.
    auto needs_gpu = [&](const std::string& flag, const char* why) {
      return Error(flag + (o.device.empty() ? " needs a GPU and there is none: " + libpipe::cuda_unavailable_reason()
                                            : " needs --device cuda (" + std::string(why) + ")"));
    };
    if (o.comm == "nccl") throw needs_gpu("--comm nccl", "NCCL moves GPU memory; on the CPU use --comm mpi");
    // bf16 storage runs on the CPU too (its rounding is the GPU's); TF32 is a tensor-core format.
    if (o.dtype == "tf32") throw needs_gpu("--dtype tf32", "TF32 is the tensor cores' format; the CPU has fp32 and bf16");
  }
  return device;
}

// The launcher's word when it gives one (Open MPI does), else the ranks
// sharing this node's memory (collective).
int local_rank(MPI_Comm world) {
  if (const char* env = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK")) {
    char* end = nullptr;
    const long rank = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && rank >= 0) return static_cast<int>(rank);
  }
  return libpipe::node_local_rank(world);
}

}  // namespace

Device planned_device(const Options& o) {
  if (!o.device.empty()) return libpipe::parse_device(o.device);
  return libpipe::cuda_device_count() > 0 ? Device::cuda : Device::cpu;
}

DeviceChoice choose_device(MPI_Comm world, const Options& o) {
  // Errors wait until every rank is past the collectives, so none is left in one.
  std::string problem;
  Device device = Device::cpu;
  try {
    device = requested_device(o);
  } catch (const Error& e) {
    problem = e.what();
  }
  int mine[3] = {!problem.empty(), device == Device::cuda, device == Device::cpu};
  int any[3] = {0, 0, 0};
  std::copy(mine, mine + 3, any);
  libpipe::allreduce(world, any, 3, MPI_INT, MPI_MAX, "its device choice");
  if (!problem.empty()) throw Error(problem);
  if (any[0]) return {};  // the ranks that failed say why
  if (any[1] && any[2])
    throw Error(
        "some ranks see a GPU and some do not, so they would compute on different devices; pass --device "
        "cpu, or --device cuda on nodes that all have GPUs");

  DeviceChoice choice;
  if (device == Device::cpu) return choice;
  // Local rank r takes GPU r mod GPUs (select_cuda_device): ranks beyond a
  // node's GPU count share one, which NCCL refuses.
  const int local = local_rank(world);
  const bool shared = libpipe::ranks_share_a_gpu(world, local % libpipe::cuda_device_count());
  if (o.comm == "nccl" && shared)
    throw Error(
        "--comm nccl needs one GPU per rank, but some ranks on a node share a GPU (more ranks than GPUs); use "
        "--comm mpi (or auto), or fewer ranks per node");
  choice.device = Device::cuda;
  choice.comm = o.comm == "mpi" || shared ? libpipe::CommKind::mpi : libpipe::CommKind::nccl;
  libpipe::select_cuda_device(local);
  libpipe::set_cuda_gemm_math(libpipe::parse_gemm_math(o.dtype));
  choice.description = "cuda " + libpipe::cuda_device_description();
  return choice;
}

}  // namespace pipe_train
