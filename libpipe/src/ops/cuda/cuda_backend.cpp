// The CUDA backend itself: its stream, allocator and cuBLAS handle, timing
// marks, memory ops and GEMMs. Every other op sits at the end of its family's
// .cu file, beside its kernels. Argument checks and their messages are the CPU
// backend's.
#include "ops/cuda/cuda_backend.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "ops/cuda/cuda_check.hpp"
#include "ops/cuda/cuda_kernels.hpp"
#include "ops/cuda/nn_kernels.hpp"
#include "ops/float32_views.hpp"
#include "pipe/cuda.hpp"
#include "ops/gemm_check.hpp"
#include "pipe/error.hpp"

namespace libpipe::cuda {
namespace {

// The process's one allocator, for the context's scratch function (a plain function pointer).
CudaAllocator* g_scratch_allocator = nullptr;

std::shared_ptr<void> scratch_memory(std::size_t bytes) { return g_scratch_allocator->allocate(bytes, false); }

cublasOperation_t op_of(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

// Inputs and outputs stay float32; the compute type says how the tensor cores may round the inputs.
cublasComputeType_t compute_type() {
  switch (cuda_gemm_math()) {
    case GemmMath::tf32:
      return CUBLAS_COMPUTE_32F_FAST_TF32;
    case GemmMath::bf16:
      return CUBLAS_COMPUTE_32F_FAST_16BF;
    case GemmMath::fp32:
      break;
  }
  return CUBLAS_COMPUTE_32F;
}

// cuBLAS's recommended workspace: 32 MiB on Hopper and later, 4 MiB before.
std::size_t cublas_workspace_bytes(int device) {
  int major = 0;
  PIPE_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return (major >= 9 ? std::size_t{32} : std::size_t{4}) << 20;
}

}  // namespace

CudaBackend::CudaBackend(int device, const std::string& where) : device_(device) {
  try {
    PIPE_CUDA_CHECK(cudaSetDevice(device));
    // Non-blocking: no implicit synchronisation with the legacy default stream (which other libraries may use).
    PIPE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    int sm_count = 0;
    PIPE_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
    allocator_ = new CudaAllocator(device, stream_, where);
    PIPE_CUBLAS_CHECK(cublasCreate(&cublas_));
    PIPE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));  // resets the workspace, so it comes after
    // Our own workspace, so that cuBLAS never allocates during a GEMM (and its results do not depend on
    // what memory it found).
    const std::size_t workspace_bytes = cublas_workspace_bytes(device);
    PIPE_CUBLAS_CHECK(cublasSetWorkspace(cublas_, allocator_->allocate_permanent(workspace_bytes), workspace_bytes));
    ctx_ = CudaContext{this, stream_, std::max(sm_count, 1), &scratch_memory};
    g_scratch_allocator = allocator_;
  } catch (...) {
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    delete allocator_;
    throw;
  }
}

void CudaBackend::synchronize() {
  bind();
  PIPE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

std::shared_ptr<void> CudaBackend::mark() {
  bind();
  cudaEvent_t event = nullptr;
  PIPE_CUDA_CHECK(cudaEventCreate(&event));  // with timing: a blocking-sync flag is not needed, nor wanted
  std::shared_ptr<void> owned(event, [](void* e) { (void)cudaEventDestroy(static_cast<cudaEvent_t>(e)); });
  PIPE_CUDA_CHECK(cudaEventRecord(event, stream_));
  return owned;
}

double CudaBackend::seconds_between(const void* from, const void* to) {
  auto* a = static_cast<cudaEvent_t>(const_cast<void*>(from));
  auto* b = static_cast<cudaEvent_t>(const_cast<void*>(to));
  PIPE_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  PIPE_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  return ms / 1000.0;
}

// ---- memory

void CudaBackend::fill(float* y, float value, std::int64_t n) {
  bind();
  cuda::fill(ctx_, y, value, n);
}

void CudaBackend::copy(float* dst, const float* src, std::int64_t n) {
  if (n <= 0 || dst == src) return;
  bind();
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  const auto d = reinterpret_cast<std::uintptr_t>(dst);
  const auto s = reinterpret_cast<std::uintptr_t>(src);
  if (d + bytes <= s || s + bytes <= d) {
    PIPE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
    return;
  }
  // Overlapping ranges (cudaMemcpy leaves the result undefined): memmove's semantics, as on the CPU.
  const std::shared_ptr<void> tmp = allocator_->allocate(bytes, false);
  PIPE_CUDA_CHECK(cudaMemcpyAsync(tmp.get(), src, bytes, cudaMemcpyDeviceToDevice, stream_));
  PIPE_CUDA_CHECK(cudaMemcpyAsync(dst, tmp.get(), bytes, cudaMemcpyDeviceToDevice, stream_));
}

// Both host copies wait for the stream: the caller may read or reuse the host buffer at once. Pageable host
// memory is fine (the driver stages it).
void CudaBackend::copy_to_host(void* host, const void* src, std::size_t bytes) {
  if (bytes == 0) return;
  bind();
  PIPE_CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
  PIPE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy_from_host(void* dst, const void* host, std::size_t bytes) {
  if (bytes == 0) return;
  bind();
  PIPE_CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
  PIPE_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

// ---- bfloat16



// ---- GEMM
//
// cuBLAS is column-major. A row-major matrix with leading dimension ld is, read column-major, its transpose
// with the same ld. So row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B as its
// first operand and A as its second, with the same transpose flags, and the dimensions (n, m, k). The
// leading-dimension requirements then match the CPU backend's check exactly.

static cudaDataType_t cuda_type_of(DType t) { return t == DType::bfloat16 ? CUDA_R_16BF : CUDA_R_32F; }

void CudaBackend::gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, In a,
                       std::int64_t lda, In b, std::int64_t ldb, float beta, Out c, std::int64_t ldc) {
  const bool all_f32 = a.dtype == DType::float32 && b.dtype == DType::float32 && c.dtype == DType::float32;
  // cuBLAS takes bfloat16 A and B together, into a float32 or bfloat16 C; any other mix (and a bfloat16 empty
  // product, C = beta C) goes through gemm_widened.
  const bool native_bf16 = a.dtype == DType::bfloat16 && b.dtype == DType::bfloat16 &&
                           (c.dtype == DType::float32 || c.dtype == DType::bfloat16) && k > 0;
  if (!all_f32 && !native_bf16) return gemm_widened(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  detail::check_gemm("gemm", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (m == 0 || n == 0) return;
  bind();
  if (k == 0) {  // an empty product: C = beta C, as on the CPU (BLAS libraries differ here)
    cuda::scale_matrices(ctx_, static_cast<float*>(c.data), ldc, m, n, beta, 0, 1);
    return;
  }
  // float32: TF32 or full float32 math (compute_type); bfloat16 operands always accumulate in float32.
  PIPE_CUBLAS_CHECK(cublasGemmEx(cublas_, op_of(trans_b), op_of(trans_a), static_cast<int>(n), static_cast<int>(m),
                                 static_cast<int>(k), &alpha, b.data, cuda_type_of(b.dtype), static_cast<int>(ldb),
                                 a.data, cuda_type_of(a.dtype), static_cast<int>(lda), &beta, c.data,
                                 cuda_type_of(c.dtype), static_cast<int>(ldc),
                                 all_f32 ? compute_type() : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k,
                                       float alpha, const float* a, std::int64_t lda, std::int64_t stride_a,
                                       const float* b, std::int64_t ldb, std::int64_t stride_b, float beta, float* c,
                                       std::int64_t ldc, std::int64_t stride_c, std::int64_t batch) {
  detail::check_gemm("gemm_strided_batched", trans_a, trans_b, m, n, k, lda, ldb, ldc);
  if (batch < 0) throw Error("gemm_strided_batched: negative batch " + std::to_string(batch));
  if (m == 0 || n == 0 || batch == 0) return;
  bind();
  if (k == 0) {
    cuda::scale_matrices(ctx_, c, ldc, m, n, beta, stride_c, batch);
    return;
  }
  const cublasComputeType_t compute = compute_type();
  // cuBLAS counts the batch in an int.
  const std::int64_t max_chunk = std::numeric_limits<int>::max();
  for (std::int64_t done = 0; done < batch; done += max_chunk) {
    const std::int64_t count = std::min(batch - done, max_chunk);
    PIPE_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        cublas_, op_of(trans_b), op_of(trans_a), static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha,
        b + done * stride_b, CUDA_R_32F, static_cast<int>(ldb), stride_b, a + done * stride_a, CUDA_R_32F,
        static_cast<int>(lda), stride_a, &beta, c + done * stride_c, CUDA_R_32F, static_cast<int>(ldc), stride_c,
        static_cast<int>(count), compute, CUBLAS_GEMM_DEFAULT));
  }
}

















// ---- elementwise











// ---- optimizers






}  // namespace libpipe::cuda
