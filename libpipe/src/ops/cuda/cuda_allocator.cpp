// The caching device allocator (see cuda_allocator.hpp for the policy).
#include "ops/cuda/cuda_allocator.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <utility>

#include "ops/cuda/cuda_check.hpp"
#include "pipe/error.hpp"

namespace libpipe::cuda {
namespace {

constexpr std::size_t kSmallLimit = std::size_t{1} << 20;  // up to here, 512-byte granules
constexpr std::size_t kSmallGranule = 512;
constexpr std::size_t kLargeGranule = std::size_t{2} << 20;  // above, 2 MiB: the GPU's large page

std::size_t round_up(std::size_t value, std::size_t granule) { return (value + granule - 1) / granule * granule; }

// The size of the block serving `bytes`; 0 when that would not fit in size_t.
std::size_t block_size_for(std::size_t bytes) {
  if (bytes <= kSmallLimit) return bytes == 0 ? kSmallGranule : round_up(bytes, kSmallGranule);
  if (bytes > std::numeric_limits<std::size_t>::max() - kLargeGranule) return 0;
  return round_up(bytes, kLargeGranule);
}

std::string human_bytes(std::size_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  char text[48];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

}  // namespace

void use_device(int device) {
  int current = -1;
  PIPE_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device) PIPE_CUDA_CHECK(cudaSetDevice(device));
}

CudaAllocator::CudaAllocator(int device, cudaStream_t stream, std::string where)
    : device_(device), stream_(stream), where_(std::move(where)) {}

std::shared_ptr<void> CudaAllocator::allocate(std::size_t bytes, bool zero) {
  const std::size_t size = block_size_for(bytes);
  void* ptr = nullptr;
  std::size_t block_size = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (size == 0)
      throw Error("out of GPU memory allocating " + std::to_string(bytes) + " bytes on " + where_ +
                  " (more than any GPU has)");
    // Small blocks are reused at their exact size; a large request may take a cached block up to 1/8 larger
    // (2 MiB granules make exact matches rare for sizes that vary a little).
    auto it = free_.lower_bound(size);
    if (it != free_.end() && (it->first == size || (size > kSmallLimit && it->first - size <= size / 8))) {
      block_size = it->first;
      ptr = it->second;
      free_.erase(it);
      stats_.cached -= block_size;
    } else {
      use_device(device_);
      ptr = device_malloc_locked(size, bytes);
      block_size = size;
      stats_.reserved += size;
    }
    stats_.in_use += bytes;
    stats_.peak = std::max(stats_.peak, stats_.in_use);
  }
  // Should the control block's allocation throw, shared_ptr runs the deleter: the block goes back to the cache.
  std::shared_ptr<void> block(ptr, [this, block_size, bytes](void* p) { free_block(p, block_size, bytes); });
  if (zero && bytes > 0) {
    use_device(device_);
    PIPE_CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream_));
  }
  return block;
}

void* CudaAllocator::allocate_permanent(std::size_t bytes) {
  const std::size_t size = block_size_for(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  if (size == 0)
    throw Error("out of GPU memory allocating " + std::to_string(bytes) + " bytes on " + where_ +
                " (more than any GPU has)");
  use_device(device_);
  return device_malloc_locked(size, bytes);
}

// Runs from tensor deleters, possibly after main has returned: no CUDA calls here.
void CudaAllocator::free_block(void* ptr, std::size_t block_size, std::size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_.emplace(block_size, ptr);
  stats_.cached += block_size;
  stats_.in_use -= bytes;
}

void* CudaAllocator::device_malloc_locked(std::size_t size, std::size_t requested) {
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, size);
  if (err == cudaErrorMemoryAllocation) {
    // Not a sticky error, but cudaGetLastError would report it later, blaming the next kernel launch.
    (void)cudaGetLastError();
    if (!free_.empty()) {
      release_cached_locked();
      err = cudaMalloc(&ptr, size);
      if (err == cudaErrorMemoryAllocation) (void)cudaGetLastError();
    }
  }
  if (err == cudaErrorMemoryAllocation) {
    std::string gpu;
    std::size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
      gpu = "; the GPU has " + human_bytes(free_bytes) + " free of " + human_bytes(total_bytes);
    else
      (void)cudaGetLastError();
    throw Error("out of GPU memory allocating " + std::to_string(requested) + " bytes (" + human_bytes(stats_.in_use) +
                " in use, " + human_bytes(stats_.cached) + " cached) on " + where_ + gpu);
  }
  if (err != cudaSuccess) throw_cuda_error(err, "cudaMalloc(" + std::to_string(size) + " bytes)", __FILE__, __LINE__);
  return ptr;
}

void CudaAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void CudaAllocator::release_cached_locked() {
  if (free_.empty()) return;
  use_device(device_);
  // A block freed on the host may still be read or written by kernels queued before its release.
  PIPE_CUDA_CHECK(cudaStreamSynchronize(stream_));
  while (!free_.empty()) {
    const auto it = free_.begin();
    PIPE_CUDA_CHECK(cudaFree(it->second));
    stats_.cached -= it->first;
    stats_.reserved -= it->first;
    free_.erase(it);
  }
}

CudaAllocator::Stats CudaAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::size_t CudaAllocator::in_use_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_.in_use;
}

}  // namespace libpipe::cuda
