// What a CUDA kernel launcher needs from the backend: the stream it runs on,
// GEMMs (the backend's own, row-major like the CPU's) and scratch memory.
// Launchers live in the .cu files; the backend (cuda_backend.cpp) owns the
// context and passes it to every call.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "pipe/backend.hpp"

namespace libpipe::cuda {

struct CudaContext {
  Backend* backend = nullptr;    // GEMMs with the CPU backend's semantics (row-major), on `stream`
  cudaStream_t stream = nullptr;  // every kernel runs here, in order
  int sm_count = 1;               // streaming multiprocessors of the device, for grid sizes
  // Device scratch memory from the caching allocator, stream-ordered on `stream`: it may be dropped as soon
  // as the last kernel using it has been launched.
  std::shared_ptr<void> (*scratch)(std::size_t bytes) = nullptr;
};

}  // namespace libpipe::cuda
