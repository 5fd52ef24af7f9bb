// Backend lookup by device and the CPU thread setting. The CPU backend is a
// process-wide singleton; the CUDA one comes from src/ops/cuda (device_hooks.hpp).
#include "pipe/backend.hpp"

#include <cblas.h>
#include <malloc.h>

#include <atomic>
#include <limits>
#include <string>

#include "ops/cpu/cpu_backend.hpp"
#include "ops/device_hooks.hpp"
#include "ops/gemm_check.hpp"
#include "pipe/error.hpp"

namespace libpipe {
namespace {

// One thread per rank by default: MPI ranks on one machine already share its cores, and
// OpenBLAS's own default (every core) would oversubscribe them.
std::atomic<int> g_cpu_threads{1};

}  // namespace

Backend::~Backend() = default;

namespace {

// Elements a row-major operand with `rows` rows of `cols` at leading dimension `ld` spans.
std::int64_t span(std::int64_t rows, std::int64_t cols, std::int64_t ld) { return rows == 0 ? 0 : (rows - 1) * ld + cols; }

// A float32 view of an operand: itself, or a widened copy of a bfloat16 one.
Tensor widened(Backend& be, const void* p, DType type, std::int64_t elements) {
  if (type == DType::float32) return Tensor::borrow(const_cast<void*>(p), {elements}, type, be.device());
  if (type != DType::bfloat16) throw Error(std::string("gemm: operands must be float32 or bfloat16, not ") +
                                           dtype_name(type));
  Tensor wide = Tensor::empty({elements}, DType::float32, be.device());
  be.from_bf16(static_cast<const std::uint16_t*>(p), wide.f32(), elements);
  return wide;
}

}  // namespace

void Backend::flash_attention_forward(const float*, float*, float*, std::int64_t, std::int64_t, std::int64_t,
                                      std::int64_t) {
  throw Error(std::string("flash_attention_forward: the ") + name() + " backend has no flash attention");
}

void Backend::flash_attention_backward(const float*, const float*, const float*, float*, std::int64_t, std::int64_t,
                                       std::int64_t, std::int64_t) {
  throw Error(std::string("flash_attention_backward: the ") + name() + " backend has no flash attention");
}

void Backend::gemm_widened(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                           In a, std::int64_t lda, In b, std::int64_t ldb, float beta, Out c, std::int64_t ldc) {
  detail::check_gemm("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (c.dtype != DType::float32 && c.dtype != DType::bfloat16)
    throw Error(std::string("gemm: C must be float32 or bfloat16, not ") + dtype_name(c.dtype));
  const Tensor wa = widened(*this, a.data, a.dtype, trans_a ? span(k, m, lda) : span(m, k, lda));
  const Tensor wb = widened(*this, b.data, b.dtype, trans_b ? span(n, k, ldb) : span(k, n, ldb));
  const std::int64_t c_elements = span(m, n, ldc);
  // C is read only when beta is non-zero (BLAS semantics: C may hold garbage then).
  Tensor wc = c.dtype == DType::float32 || beta == 0.0f ? Tensor() : widened(*this, c.data, c.dtype, c_elements);
  if (c.dtype == DType::float32) wc = Tensor::borrow(c.data, {c_elements}, c.dtype, device());
  if (!wc.defined()) wc = Tensor::empty({c_elements}, DType::float32, device());
  gemm(trans_a, trans_b, m, n, k, alpha, wa.f32(), lda, wb.f32(), ldb, beta, wc.f32(), ldc);  // all float32
  if (c.dtype == DType::bfloat16) to_bf16(wc.f32(), static_cast<std::uint16_t*>(c.data), c_elements);
}

namespace cpu {
namespace {

// Tensors come and go by the tens of megabytes per training step. By default glibc serves blocks of a few MB
// with mmap and hands freed memory back to the OS, so the next step's tensors fault their pages in again, one
// 4 KB page fault each: measured on one core, a forward linear [1024, 128] x [128, 512] took 1399 us instead
// of 1087, gelu_backward over 512k floats 412 us instead of 170. Keep freed memory for reuse instead (blocks
// up to 32 MB, glibc's largest setting, come from the heap; the heap is never trimmed). The process keeps its
// peak heap, which a training run reaches in its first step anyway. Tensors of 64 KiB and more now come from the
// host block cache (cpu_allocator.hpp), which reuses its blocks without glibc's fragmentation; this still serves the
// small tensors, the ops' scratch memory and every other block (and, under AddressSanitizer, all tensors).
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
