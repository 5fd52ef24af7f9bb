// The CPU backend's threads (see cpu_threads.hpp).
#include "cpu_threads.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <oneapi/dnnl/dnnl_config.h>

#include "pipe/backend.hpp"
#include "pipe/error.hpp"

namespace libpipe::cpu {
namespace {

// oneDNN's CPU runtime in Debian's build is OpenMP (GCC's libgomp): a GEMM runs on omp_get_max_threads() threads,
// a setting of the calling thread. libpipe reaches the runtime that libdnnl itself loaded, found among the
// libraries already in the process, rather than linking one of its own: a compiler's other runtime (clang's
// libomp) would keep a setting that oneDNN never reads, and a second pool of threads. The kernels' parallel
// regions go through GOMP_parallel, the entry point that GCC compiles `#pragma omp parallel` to (clang's and
// Intel's runtimes export it too).
struct OpenMp {
  int (*get_max_threads)() = nullptr;
  void (*set_num_threads)(int) = nullptr;
  void (*parallel)(void (*)(void*), void*, unsigned, unsigned) = nullptr;  // none: the kernels run on one thread
  int (*thread_num)() = nullptr;
  int (*num_threads)() = nullptr;
};

const OpenMp& openmp() {
  static const OpenMp omp = [] {
    OpenMp o;
#if DNNL_CPU_RUNTIME == DNNL_RUNTIME_OMP
    auto lookup = [&o](void* lib) {
      o.get_max_threads = reinterpret_cast<int (*)()>(dlsym(lib, "omp_get_max_threads"));
      o.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(lib, "omp_set_num_threads"));
      if (o.get_max_threads == nullptr || o.set_num_threads == nullptr) return false;
      o.parallel = reinterpret_cast<void (*)(void (*)(void*), void*, unsigned, unsigned)>(dlsym(lib, "GOMP_parallel"));
      o.thread_num = reinterpret_cast<int (*)()>(dlsym(lib, "omp_get_thread_num"));
      o.num_threads = reinterpret_cast<int (*)()>(dlsym(lib, "omp_get_num_threads"));
      if (o.thread_num == nullptr || o.num_threads == nullptr) o.parallel = nullptr;
      return true;
    };
    for (const char* name : {"libgomp.so.1", "libomp.so.5", "libomp.so", "libiomp5.so"})
      if (void* lib = dlopen(name, RTLD_LAZY | RTLD_NOLOAD); lib != nullptr && lookup(lib)) return o;
    if (lookup(RTLD_DEFAULT)) return o;
    throw Error(
        "the CPU backend cannot find the OpenMP runtime that oneDNN runs on, so it cannot set its thread count");
#endif
    return o;
  }();
  return omp;
}

struct Job {
  void (*body)(const void*, std::int64_t, std::int64_t);
  const void* closure;
  std::int64_t n, align;
  const OpenMp* omp;
};

// One thread's share of the team's: the team may be smaller than asked for (the runtime's limits).
void run_share(void* data) {
  const Job& job = *static_cast<const Job*>(data);
  const std::int64_t team = job.omp->num_threads(), t = job.omp->thread_num();
  auto bound = [&](std::int64_t i) {
    return i >= team ? job.n : std::min(job.n, job.n * i / team / job.align * job.align);
  };
  const std::int64_t begin = bound(t), end = bound(t + 1);
  if (begin < end) job.body(job.closure, begin, end);
}

}  // namespace

void use_threads(int threads) {
  const OpenMp& omp = openmp();
  if (omp.get_max_threads != nullptr && omp.get_max_threads() != threads) omp.set_num_threads(threads);
}

int parallel_threads(std::int64_t n, std::int64_t min_chunk) {
  const int threads = cpu_threads();
  if (threads <= 1 || openmp().parallel == nullptr) return 1;
  return static_cast<int>(std::min<std::int64_t>(threads, n / std::max<std::int64_t>(min_chunk, 1)));
}

void run_parallel(std::int64_t n, int threads, std::int64_t align,
                  void (*body)(const void* closure, std::int64_t begin, std::int64_t end), const void* closure) {
  Job job{body, closure, n, std::max<std::int64_t>(align, 1), &openmp()};
  openmp().parallel(run_share, &job, static_cast<unsigned>(threads), 0);
}

}  // namespace libpipe::cpu
