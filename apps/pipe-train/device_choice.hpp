// Where pipe-train computes and how its ranks talk: --device, --comm and
// --dtype resolved against the machine, agreed by every rank, and applied
// (each rank binds its GPU before the first tensor is made on it).
#pragma once

#include <mpi.h>

#include <string>

#include "options.hpp"
#include "pipe/comm.hpp"
#include "pipe/tensor.hpp"

namespace pipe_train {

struct DeviceChoice {
  libpipe::Device device = libpipe::Device::cpu;
  libpipe::CommKind comm = libpipe::CommKind::mpi;
  std::string description = "cpu";  // or "cuda 0: NVIDIA H200 (sm_90, 141 GB)"
};

// Collective over `world`. Throws libpipe::Error, one line naming the flag,
// on each rank that cannot honour the flags; the others return and the phase
// fails on every rank (pipe/collective.hpp).
DeviceChoice choose_device(MPI_Comm world, const Options& options);

// The device choose_device will pick from the flags and this machine (--device, else cuda where a GPU is seen),
// without its checks or binding a GPU: for --plan auto, which plans before that.
libpipe::Device planned_device(const Options& options);

}  // namespace pipe_train
