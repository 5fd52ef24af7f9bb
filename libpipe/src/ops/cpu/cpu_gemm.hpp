// The CPU backend's GEMMs, on oneDNN (cpu_gemm.cpp): row-major products at any leading dimensions and transposes,
// batched at fixed strides, with the thread count of set_cpu_threads. The backend's gemm hands in float32, or
// bfloat16 A and B where bf16_gemm_is_native() (oneDNN's bf16 matmul on a CPU with bf16 instructions); elsewhere
// it widens bfloat16 to float32 (Backend::gemm_widened, backend.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "pipe/cpu_info.hpp"
#include "pipe/tensor.hpp"

namespace libpipe::cpu {

// C[z] = alpha * op(A[z]) op(B[z]) + beta * C[z] for z < batch, the z-th operands at z * stride_* elements from
// the first. A and B are both float32 or both bfloat16 (products accumulate in float32); C is float32 or, with
// bfloat16 A and B, bfloat16 (rounded once, to nearest even). beta = 0 never reads C. The caller has checked the
// arguments (detail::check_gemm); m, n or batch 0 do nothing and k = 0 leaves beta * C.
struct GemmCall {
  bool trans_a = false, trans_b = false;
  std::int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f, beta = 0.0f;
  const void* a = nullptr;
  std::int64_t lda = 0, stride_a = 0;
  const void* b = nullptr;
  std::int64_t ldb = 0, stride_b = 0;
  void* c = nullptr;
  std::int64_t ldc = 0, stride_c = 0;
  std::int64_t batch = 1;
  DType ab_type = DType::float32, c_type = DType::float32;
};
// The CPU backend's GEMM: on oneDNN, the products with A transposed on OpenBLAS where transposed_a_on_openblas();
// PIPE_CPU_GEMM=onednn or =openblas runs every product on one library (to measure them side by side,
// share/doc/PERFORMANCE.md; OpenBLAS runs float32 products only).
void gemm(const GemmCall& call);
// What gemm() has run in this process so far (see cpu_gemm_totals, cpu_info.hpp).
GemmTotals gemm_totals();
// oneDNN alone, whatever PIPE_CPU_GEMM says.
void onednn_gemm(const GemmCall& call);

// Which library gemm() runs: PIPE_CPU_GEMM unset, empty or "auto" (oneDNN, and OpenBLAS where it is faster),
// "onednn" or "openblas". Decided at first use; throws libpipe::Error for another value.
enum class GemmLibrary { automatic, onednn, openblas };
GemmLibrary gemm_library_in_use();
// Whether float32 products with A transposed (not B) run on OpenBLAS: automatic, on a CPU where oneDNN has no
// brgemm (below avx512_core), OpenBLAS runs one of its own AVX2 or AVX-512 kernels (Haswell, Zen, SkylakeX,
// Cooperlake, SapphireRapids), not a generic core, and the backend runs one thread (set_cpu_threads).
bool transposed_a_on_openblas();

// Whether the backend's GEMMs of bfloat16 A and B run as oneDNN's bf16 matmul (products accumulated in float32 by
// the CPU's bf16 dot-product instructions) rather than widened to float32: on CPUs whose instruction set oneDNN
// reports as avx512_core_bf16 or above (AVX512_BF16, AMX), with oneDNN as the library. PIPE_CPU_BF16_GEMM=widened
// widens on any CPU (to measure the two side by side) and =native insists, an error where the CPU lacks bf16.
// Decided at first use; throws libpipe::Error for another value.
bool bf16_gemm_is_native();

// The library gemm() runs, its version and the instruction set it dispatches to, e.g.
// "oneDNN 2.6.3 (avx512_core_bf16, bf16 native)", "oneDNN 2.6.3 (avx2); A-transposed products on OpenBLAS 0.3.21
// (core Zen)" or
// "OpenBLAS 0.3.21 (core Prescott, PIPE_CPU_GEMM=openblas)".
std::string gemm_library();
// oneDNN's version ("2.6.3"), the instruction set it dispatches to ("avx512_core_vnni"), and whether that is
// below AVX2 (generic, SSE4.1 or AVX).
std::string onednn_version();
const char* gemm_isa_name();
bool gemm_isa_below_avx2();

}  // namespace libpipe::cpu
