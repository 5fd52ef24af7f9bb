// What the CPU backend runs on: its GEMM library and whether this machine will run it at speed. For start-up
// messages (pipe-train warns once when the CPU path will be slow) and benchmarks (pipe-bench prints the library).
#pragma once

#include <cstdint>
#include <string>

#include "pipe/export.hpp"

namespace libpipe {

// The library of the CPU backend's GEMMs, its version and the instruction set it dispatches to on this machine,
// e.g. "oneDNN 2.6.3 (avx512_core_vnni)", or "OpenBLAS 0.3.21 (core Prescott, PIPE_CPU_GEMM=openblas)" where
// PIPE_CPU_GEMM=openblas asks for the old path (kept for side-by-side measurements).
PIPE_API std::string cpu_gemm_library();
// The CPU backend's GEMMs so far in this process, over every thread: products run (a batch counts once),
// their floating-point operations (2 m n k per product) and the wall-clock seconds spent inside them. For
// benchmarks: pipe-bench train reports the GEMMs' own rate inside the training step and their share of its time.
struct GemmTotals {
  std::int64_t calls = 0;
  double flops = 0;
  double seconds = 0;
};
PIPE_API GemmTotals cpu_gemm_totals();

// Logical CPUs online on this machine, and those this process may run on (its affinity mask, which mpirun or
// taskset may have narrowed).
PIPE_API int cpu_count_online();
PIPE_API int cpu_count_usable();
// This machine's physical memory in bytes (0 where the system does not say).
PIPE_API double machine_memory_bytes();

// Why the CPU backend will run slower than this machine allows, as one sentence without a final period, or ""
// when nothing is amiss: more threads than CPUs (ranks_on_node ranks of threads_per_rank threads each against the
// node's CPUs, or threads_per_rank against this process's affinity mask), or oneDNN dispatching its GEMMs below
// AVX2 on a CPU that has AVX2 or AVX-512.
PIPE_API std::string cpu_slow_warning(int ranks_on_node, int threads_per_rank);

}  // namespace libpipe
