// What the CPU backend runs on (pipe/cpu_info.hpp).
#include "pipe/cpu_info.hpp"

#include <sched.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "ops/cpu/cpu_gemm.hpp"

namespace libpipe {
namespace {

// The widest vector instructions of this CPU, whatever PIPE_CPU_ISA or DNNL_MAX_CPU_ISA ask for: "AVX-512",
// "AVX2" or null.
const char* hardware_vectors() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "AVX-512";
  if (__builtin_cpu_supports("avx2")) return "AVX2";
#endif
  return nullptr;
}

}  // namespace

std::string cpu_gemm_library() { return cpu::gemm_library(); }

GemmTotals cpu_gemm_totals() { return cpu::gemm_totals(); }

double machine_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

int cpu_count_online() {
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

int cpu_count_usable() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpu_count_online();  // more CPUs than cpu_set_t holds
  return CPU_COUNT(&set);
}

std::string cpu_slow_warning(int ranks_on_node, int threads_per_rank) {
  std::vector<std::string> why;
  const int online = cpu_count_online(), usable = cpu_count_usable();
  auto plural = [](long n, const char* what) { return std::to_string(n) + " " + what + (n == 1 ? "" : "s"); };
  if (static_cast<long>(ranks_on_node) * threads_per_rank > online)
    why.push_back(plural(ranks_on_node, "rank") + " x " + plural(threads_per_rank, "thread") +
                  " on this node, which has " + plural(online, "CPU"));
  else if (threads_per_rank > usable)
    why.push_back(plural(threads_per_rank, "thread") + " per rank, but this process may run on " +
                  plural(usable, "CPU") +
                  " only (its CPU affinity: mpirun may bind each rank to a core, see --bind-to)");
  const char* vectors = hardware_vectors();
  if (vectors != nullptr && cpu::gemm_isa_below_avx2())
    why.push_back(std::string("oneDNN's GEMMs dispatch to ") + cpu::gemm_isa_name() + " although this CPU has " +
                  vectors + " (is DNNL_MAX_CPU_ISA set, or oneDNN older than the CPU?)");
  if (why.empty()) return "";
  std::string line = "the CPU backend will run slowly: ";
  for (std::size_t i = 0; i < why.size(); ++i) line += (i ? "; " : "") + why[i];
  return line;
}

}  // namespace libpipe
