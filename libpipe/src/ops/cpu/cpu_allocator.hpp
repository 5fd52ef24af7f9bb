// The host allocator behind every CPU tensor.
//
// Why a cache of its own: glibc's heap fragments. Freed memory stays in the heap (backend.cpp's keep_freed_memory:
// fresh pages cost a page fault each), but a training step's mix of sizes leaves holes that later requests do not
// fit: gpt-small on 2 stages under gpipe grew 1,821 MB resident for 1,601 MB of tensors at their peak (+14%), so no
// prediction of the tensors could predict the resident memory.
//
// So blocks of 64 KiB and more come from mmap, rounded to whole pages, and when freed are kept in free lists by
// size and handed out again at the same size. A training step frees and allocates the same sizes every time: after
// the first step the cache serves every request, and the resident memory is what the cache holds (never more than
// a quarter above the tensors' peak: beyond that, cached blocks of other sizes are unmapped first). Smaller blocks
// (a few percent of the bytes) stay with malloc. Under AddressSanitizer every block comes from malloc, so that a use
// after free is still caught.
#pragma once

#include <cstddef>
#include <memory>

namespace libpipe::cpu {

// A block of at least `bytes`, 64-byte aligned, never null (also for 0 bytes), zero-filled when `zero`. The deleter
// returns it to the cache (or to malloc); it may run on any thread and after main has returned.
std::shared_ptr<void> allocate_host(std::size_t bytes, bool zero);

struct HostMemoryStats {
  std::size_t in_use = 0;    // bytes requested by live blocks
  std::size_t peak = 0;      // the most in_use has been
  std::size_t reserved = 0;  // bytes obtained from mmap, live or kept for reuse
};
HostMemoryStats host_memory_stats();

}  // namespace libpipe::cpu
