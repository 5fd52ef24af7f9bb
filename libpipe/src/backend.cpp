// Backend lookup by device and the CPU thread setting. The CPU backend is a
// process-wide singleton; the CUDA one comes from src/cuda (device_hooks.hpp).
#include "pipe/backend.hpp"

#include <cblas.h>
#include <malloc.h>

#include <atomic>
#include <limits>
#include <string>

#include "cpu/cpu_backend.hpp"
#include "device_hooks.hpp"
#include "pipe/error.hpp"

namespace libpipe {
namespace {

// One thread per rank by default: MPI ranks on one machine already share its cores, and
// OpenBLAS's own default (every core) would oversubscribe them.
std::atomic<int> g_cpu_threads{1};

}  // namespace

Backend::~Backend() = default;

namespace cpu {
namespace {

// Tensors come and go by the tens of megabytes per training step. By default glibc serves blocks of a few MB
// with mmap and hands freed memory back to the OS, so the next step's tensors fault their pages in again, one
// 4 KB page fault each: measured on one core, a forward linear [1024, 128] x [128, 512] took 1399 us instead
// of 1087, gelu_backward over 512k floats 412 us instead of 170. Keep freed memory for reuse instead (blocks
// up to 32 MB, glibc's largest setting, come from the heap; the heap is never trimmed). The process keeps its
// peak heap, which a training run reaches in its first step anyway.
void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#endif
}

}  // namespace

CpuBackend& cpu_backend() {
  static CpuBackend* backend = [] {
    cpu_isa();  // a bad PIPE_CPU_ISA is reported here, not in the middle of an op
    keep_freed_memory();
    // OPENBLAS_NUM_THREADS and OpenBLAS's all-cores default give way to ours.
    openblas_set_num_threads(g_cpu_threads.load());
    return new CpuBackend();  // never destroyed: tensors may be freed after static destruction
  }();
  return *backend;
}

}  // namespace cpu

Backend& backend_for(Device device) {
  switch (device) {
    case Device::cpu:
      return cpu::cpu_backend();
    case Device::cuda:
      return detail::cuda_backend();
  }
  throw Error("backend_for: unknown device " + std::to_string(static_cast<int>(device)));
}

void set_cpu_threads(int threads) {
  if (threads < 1) throw Error("set_cpu_threads: thread count must be at least 1, got " + std::to_string(threads));
  cpu::cpu_backend();  // so that its first-use default cannot later override this setting
  g_cpu_threads = threads;
  openblas_set_num_threads(threads);
}

int cpu_threads() { return g_cpu_threads.load(); }

}  // namespace libpipe
