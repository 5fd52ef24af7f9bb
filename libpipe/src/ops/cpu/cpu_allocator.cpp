// The host allocator (see cpu_allocator.hpp for the policy).
#include "ops/cpu/cpu_allocator.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

#include "pipe/error.hpp"

// Under AddressSanitizer every block comes from malloc, so that a use after free is caught.
#if defined(__SANITIZE_ADDRESS__)
#define PIPE_HOST_BLOCK_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PIPE_HOST_BLOCK_CACHE 0
#endif
#endif
#ifndef PIPE_HOST_BLOCK_CACHE
#define PIPE_HOST_BLOCK_CACHE 1
#endif

namespace libpipe::cpu {
namespace {

constexpr std::size_t kCachedFrom = std::size_t{64} << 10;  // smaller blocks come from malloc

class HostBlockCache {
 public:
  std::shared_ptr<void> allocate(std::size_t bytes, bool zero) {
    if (!PIPE_HOST_BLOCK_CACHE || bytes < kCachedFrom) return from_malloc(bytes, zero);
    const std::size_t size = round_to_pages(bytes);
    void* ptr = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto it = free_.find(size);
      if (it != free_.end()) {
        ptr = it->second;
        free_.erase(it);
      } else {
        trim_locked(size, bytes);
        ptr = map_locked(size, bytes);
        stats_.reserved += size;
      }
      count_locked(bytes);
    }
    // Should the control block's allocation throw, shared_ptr runs the deleter: the block goes back to the cache.
    std::shared_ptr<void> block(ptr, [this, size, bytes](void* p) { release(p, size, bytes); });
    // Fresh pages from mmap are zero already, but touching them here keeps their page faults out of the first step.
    if (zero) std::memset(ptr, 0, bytes);
    return block;
  }

  HostMemoryStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  static std::size_t round_to_pages(std::size_t bytes) {
    static const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return (bytes + page - 1) / page * page;
  }

  std::shared_ptr<void> from_malloc(std::size_t bytes, bool zero) {
    const std::size_t rounded = bytes == 0 ? 64 : (bytes + 63) / 64 * 64;  // whole cache lines
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
    if (zero) std::memset(p, 0, rounded);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      count_locked(bytes);
    }
    return std::shared_ptr<void>(p, [this, bytes](void* q) {
      std::free(q);
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.in_use -= bytes;
    });
  }

  void count_locked(std::size_t bytes) {
    stats_.in_use += bytes;
    stats_.peak = std::max(stats_.peak, stats_.in_use);
  }

  // A new block may not take the reserve more than a quarter above the tensors' peak (this request counted): cached
  // blocks of other sizes are unmapped first, the largest first. A training step's mix of sizes reuses its blocks
  // and never gets here after its first step; a phase with other sizes (a checkpoint being written, say) reuses the
  // pages that the step's cached blocks held instead of adding its own to the resident memory.
  void trim_locked(std::size_t size, std::size_t requested) {
    std::size_t cap = std::max(stats_.peak, stats_.in_use + requested);
    cap += cap / 4;
    while (!free_.empty() && stats_.reserved + size > cap) unmap_locked(std::prev(free_.end()));
  }

  void unmap_locked(std::multimap<std::size_t, void*>::iterator it) {
    munmap(it->second, it->first);
    stats_.reserved -= it->first;
    free_.erase(it);
  }

  // mmap, retried once after the cached blocks are unmapped.
  void* map_locked(std::size_t size, std::size_t requested) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p != MAP_FAILED) return p;
      if (free_.empty()) break;
      while (!free_.empty()) unmap_locked(free_.begin());
    }
    throw Error("out of host memory allocating " + std::to_string(requested) + " bytes (" +
                std::to_string(stats_.in_use) + " bytes of tensors in use)");
  }

  void release(void* ptr, std::size_t size, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.emplace(size, ptr);
    stats_.in_use -= bytes;
  }

  std::mutex mutex_;
  std::multimap<std::size_t, void*> free_;  // freed mmap blocks by size
  HostMemoryStats stats_;
};

// Never destroyed: tensors may be freed after static destruction.
HostBlockCache& cache() {
  static HostBlockCache* instance = new HostBlockCache();
  return *instance;
}

}  // namespace

std::shared_ptr<void> allocate_host(std::size_t bytes, bool zero) { return cache().allocate(bytes, zero); }

HostMemoryStats host_memory_stats() { return cache().stats(); }

}  // namespace libpipe::cpu
