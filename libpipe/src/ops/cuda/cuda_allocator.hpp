// The caching device allocator behind every CUDA tensor and scratch buffer.
//
// cudaMalloc and cudaFree are slow and may synchronise the whole device, and a
// training step frees and re-allocates the same sizes every time. So freed
// blocks are kept in free lists by size and handed out again; after the first
// step no CUDA allocation call is made at all.
//
// Stream ordering: all device work runs on one compute stream (the backend's).
// A block freed on the host while kernels using it are still queued can be
// handed out at once, because whatever uses it next is queued behind them on
// the same stream. Work on any other stream (NCCL) must not outlive the tensors
// it reads or writes, or must be made to wait on the compute stream first.
//
// Sizes are rounded up to 512 B (up to 1 MiB) or 2 MiB (above), so that
// nearly equal requests share blocks. When cudaMalloc runs out of memory, the
// cached blocks are released (after the stream has drained) and the
// allocation is tried once more. Never managed memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace libpipe::cuda {

// Makes `device` current on the calling thread (a no-op when it is already): CUDA's current device is per thread.
void use_device(int device);

class CudaAllocator {
 public:
  // `where` names the device in messages, e.g. "GPU 0 (NVIDIA H200)".
  CudaAllocator(int device, cudaStream_t stream, std::string where);
  CudaAllocator(const CudaAllocator&) = delete;
  CudaAllocator& operator=(const CudaAllocator&) = delete;

  // A block of at least `bytes` (16-byte aligned or better, never null, also for 0 bytes), zero-filled on the
  // stream when `zero`. The deleter returns it to the cache: it makes no CUDA call, so it may run on any
  // thread and after main has returned.
  std::shared_ptr<void> allocate(std::size_t bytes, bool zero);
  // Memory for the life of the process outside the cache and the byte counts (the cuBLAS workspace).
  void* allocate_permanent(std::size_t bytes);
  // Waits for the stream, then frees every cached block.
  void release_cached();

  struct Stats {
    std::size_t in_use = 0;    // bytes requested by live allocations
    std::size_t peak = 0;      // the most in_use has been
    std::size_t cached = 0;    // bytes in free blocks kept for reuse
    std::size_t reserved = 0;  // bytes obtained from cudaMalloc, live or cached (not the permanent ones)
  };
  Stats stats() const;
  std::size_t in_use_bytes() const;

 private:
  void free_block(void* ptr, std::size_t block_size, std::size_t bytes);
  // cudaMalloc, retried once after release_cached_locked() when the GPU is out of memory.
  void* device_malloc_locked(std::size_t size, std::size_t requested);
  void release_cached_locked();

  const int device_;
  const cudaStream_t stream_;
  const std::string where_;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;  // cached blocks by (rounded) size
  Stats stats_;
};

}  // namespace libpipe::cuda
