// What the device-neutral code (tensor.cpp, backend.cpp) needs from a device
// other than the CPU: its memory and its backend. src/ops/cuda implements these
// in a CUDA build; src/ops/cuda/no_cuda.cpp throws naming the device otherwise.
#pragma once

#include <cstddef>
#include <memory>

#include "pipe/backend.hpp"
#include "pipe/tensor.hpp"

namespace libpipe::detail {

// Zero-filled when `zero`; the deleter returns the block to the device's allocator.
std::shared_ptr<void> allocate_device_memory(Device device, std::size_t bytes, bool zero);
// Bytes handed out and not yet returned (not counting blocks cached for reuse).
std::size_t device_allocated_bytes(Device device);
std::size_t device_peak_allocated_bytes(Device device);
// The process's CUDA backend (bound to the GPU select_cuda_device chose, device 0 by default).
Backend& cuda_backend();
// The cudaStream_t the CUDA backend runs every op on, as void* (this header stays free of CUDA's):
// NCCL transfers are ordered against it with events.
void* cuda_compute_stream();

}  // namespace libpipe::detail
