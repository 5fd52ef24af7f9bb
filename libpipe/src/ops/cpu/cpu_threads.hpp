// The CPU backend's threads: one pool, the OpenMP runtime that oneDNN runs on, for the GEMMs and the kernels
// alike. Two pools (OpenBLAS's beside oneDNN's, or a pool of our own) would each spin on the same cores while
// the other works: gpt-tiny's step on 2 threads was slower than on one when its GEMMs were split between oneDNN
// and OpenBLAS (cpu_gemm.cpp).
#pragma once

#include <cstdint>

namespace libpipe::cpu {

// The calling thread's oneDNN GEMMs run on `threads` threads (a no-op when they already do: one call per GEMM).
void use_threads(int threads);

// Runs body(begin, end) over contiguous chunks that cover [0, n), one chunk per thread, on at most
// set_cpu_threads' count of threads, and never more than n / min_chunk (a smaller share is not worth waking a
// thread for); on the calling thread alone when that is one. Each index is computed by exactly one call, with the
// code one thread would run, so a kernel whose indices are independent gives the same bits on any thread count.
// Chunk bounds are multiples of `align` (but the last), so that vector loops split at the same elements. `body`
// must not throw. On one thread body is called directly: the default thread count pays no dispatch.
template <class Body>
void parallel_for(std::int64_t n, std::int64_t min_chunk, const Body& body, std::int64_t align = 1);

// parallel_for's parts: how many threads it uses for n items of at least min_chunk each (1: the caller alone),
// and the parallel region that runs a type-erased body on them.
int parallel_threads(std::int64_t n, std::int64_t min_chunk);
void run_parallel(std::int64_t n, int threads, std::int64_t align,
                  void (*body)(const void* closure, std::int64_t begin, std::int64_t end), const void* closure);

template <class Body>
void parallel_for(std::int64_t n, std::int64_t min_chunk, const Body& body, std::int64_t align) {
  if (n <= 0) return;
  const int threads = parallel_threads(n, min_chunk);
  if (threads <= 1) return body(0, n);
  auto call = [](const void* closure, std::int64_t begin, std::int64_t end) {
    (*static_cast<const Body*>(closure))(begin, end);
  };
  run_parallel(n, threads, align, call, &body);
}

// The kernels' shares: elementwise passes in chunks of at least kMinShare elements, aligned to kShareAlign (a cache
// line of floats, a whole vector of every width); passes over rows in whole rows, at least kMinShare elements
// together (min_rows). Below that, waking a thread costs more than its share saves.
constexpr std::int64_t kMinShare = 16384;
constexpr std::int64_t kShareAlign = 16;
inline std::int64_t min_rows(std::int64_t cols) { return cols >= kMinShare ? 1 : kMinShare / (cols > 0 ? cols : 1); }
// Columns of a sum down `rows` rows (bias and LayerNorm weight gradients), at least kMinShare elements together.
inline std::int64_t min_cols(std::int64_t rows) {
  return rows >= kMinShare / kShareAlign ? kShareAlign : kMinShare / (rows > 0 ? rows : 1);
}

}  // namespace libpipe::cpu
