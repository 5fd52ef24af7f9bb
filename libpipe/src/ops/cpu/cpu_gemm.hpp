// The CPU backend's GEMMs, on oneDNN (cpu_gemm.cpp): row-major products at any leading dimensions and transposes,
// batched at fixed strides, on float32 or bfloat16 operands, with the thread count of set_cpu_threads.
#pragma once

#include <cstdint>
#include <string>

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
void onednn_gemm(const GemmCall& call);

// Whether gemm_typed runs bfloat16 x bfloat16 products natively (oneDNN's bfloat16 matmul) instead of widening
// the operands to float32 first: where oneDNN dispatches to an instruction set with bfloat16 dot products
// (AVX512-BF16, AMX). PIPE_CPU_BF16_GEMM=native or widen forces either (native elsewhere is emulated and several
// times slower: it is there to test the path on any AVX-512 machine). Decided at first use; throws
// libpipe::Error for another value, or for native where oneDNN cannot run it.
bool native_bf16_gemm();

// oneDNN's version and the instruction set it dispatches to, e.g. "oneDNN 2.6.3 (avx512_core_vnni)".
std::string gemm_library();
// That instruction set alone ("avx512_core_vnni"), and whether it is below AVX2 (SSE4.1 or AVX).
const char* gemm_isa_name();
bool gemm_isa_below_avx2();

}  // namespace libpipe::cpu
