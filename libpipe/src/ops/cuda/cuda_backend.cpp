// The CUDA backend's ops: memory and GEMMs here, kernels in the .cu files
// (cuda_kernels.hpp for the elementwise and optimizer ones, nn_kernels.hpp for
// the layers). Argument checks and their messages are the CPU backend's.
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

void CudaBackend::to_bf16(const float* x, std::uint16_t* y, std::int64_t n) {
  bind();
  cuda::to_bf16(ctx_, x, y, n);
}

void CudaBackend::from_bf16(const std::uint16_t* x, float* y, std::int64_t n) {
  bind();
  cuda::from_bf16(ctx_, x, y, n);
}

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

// ---- typed ops: native kernels when every array is bfloat16, float32 kernels on Float32Views otherwise

namespace {

bool all_bf16(std::initializer_list<DType> types) {
  for (DType t : types)
    if (t != DType::bfloat16) return false;
  return true;
}
const std::uint16_t* bits(Backend::In x) { return static_cast<const std::uint16_t*>(x.data); }
std::uint16_t* bits(Backend::Out x) { return static_cast<std::uint16_t*>(x.data); }

}  // namespace

void CudaBackend::add(In a, In b, Out out, std::int64_t n) {
  bind();
  if (all_bf16({a.dtype, b.dtype, out.dtype})) return cuda::add(ctx_, bits(a), bits(b), bits(out), n);
  Float32Views v(*this, "add");
  cuda::add(ctx_, v.in(a, n), v.in(b, n), v.out(out, n), n);
  v.finish();
}

void CudaBackend::accumulate(Out y, In x, std::int64_t n) {
  bind();
  if (all_bf16({y.dtype, x.dtype})) return cuda::accumulate(ctx_, bits(y), bits(x), n);
  Float32Views v(*this, "accumulate");
  const float* x32 = v.in(x, n);
  cuda::accumulate(ctx_, v.in_out(y, n), x32, n);
  v.finish();
}

void CudaBackend::bias_epilogue(const float* h, In bias, Out y, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({bias.dtype, y.dtype})) return cuda::bias_epilogue(ctx_, h, bits(bias), bits(y), rows, cols);
  Float32Views v(*this, "bias_epilogue");
  const float* b32 = v.in(bias, cols);
  float* y32 = v.out(y, rows * cols);
  if (y32 != h) copy(y32, h, rows * cols);
  cuda::add_bias(ctx_, y32, b32, rows, cols);
  v.finish();
}

void CudaBackend::bias_gelu(const float* h, In bias, Out pre, Out y, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({bias.dtype, pre.dtype, y.dtype}))
    return cuda::bias_gelu(ctx_, h, bits(bias), bits(pre), bits(y), rows, cols);
  Float32Views v(*this, "bias_gelu");
  const float* b32 = v.in(bias, cols);
  float* pre32 = v.out(pre, rows * cols);
  if (pre32 != h) copy(pre32, h, rows * cols);
  cuda::bias_gelu_forward(ctx_, pre32, b32, v.out(y, rows * cols), rows, cols);
  v.finish();
}

void CudaBackend::gelu_backward(In x, In dy, Out dx, std::int64_t n) {
  bind();
  if (all_bf16({x.dtype, dy.dtype, dx.dtype})) return cuda::gelu_backward(ctx_, bits(x), bits(dy), bits(dx), n);
  Float32Views v(*this, "gelu_backward");
  cuda::gelu_backward(ctx_, v.in(x, n), v.in(dy, n), v.out(dx, n), n);
  v.finish();
}

void CudaBackend::bias_grad(In dy, float* db, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({dy.dtype})) return cuda::bias_grad(ctx_, bits(dy), db, rows, cols);
  Float32Views v(*this, "bias_grad");
  cuda::bias_grad(ctx_, v.in(dy, rows * cols), db, rows, cols);
}

void CudaBackend::layernorm_forward(In x, In weight, In bias, Out y, float* mean, float* rstd, std::int64_t rows,
                                    std::int64_t cols, float eps) {
  bind();
  if (all_bf16({x.dtype, weight.dtype, bias.dtype, y.dtype}))
    return cuda::layernorm_forward(ctx_, bits(x), bits(weight), bits(bias), bits(y), mean, rstd, rows, cols, eps);
  Float32Views v(*this, "layernorm_forward");
  cuda::layernorm_forward(ctx_, v.in(x, rows * cols), v.in(weight, cols), v.in(bias, cols), v.out(y, rows * cols),
                          mean, rstd, rows, cols, eps);
  v.finish();
}

void CudaBackend::layernorm_backward_input(In dy, In x, In weight, const float* mean, const float* rstd, Out dx,
                                           std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({dy.dtype, x.dtype, weight.dtype, dx.dtype}))
    return cuda::layernorm_backward_input(ctx_, bits(dy), bits(x), bits(weight), mean, rstd, bits(dx), rows, cols);
  Float32Views v(*this, "layernorm_backward_input");
  cuda::layernorm_backward_input(ctx_, v.in(dy, rows * cols), v.in(x, rows * cols), v.in(weight, cols), mean, rstd,
                                 v.out(dx, rows * cols), rows, cols);
  v.finish();
}

void CudaBackend::layernorm_backward_weight(In dy, In x, const float* mean, const float* rstd, float* dweight,
                                            float* dbias, std::int64_t rows, std::int64_t cols) {
  bind();
  if (all_bf16({dy.dtype, x.dtype}))
    return cuda::layernorm_backward_weight(ctx_, bits(dy), bits(x), mean, rstd, dweight, dbias, rows, cols);
  Float32Views v(*this, "layernorm_backward_weight");
  cuda::layernorm_backward_weight(ctx_, v.in(dy, rows * cols), v.in(x, rows * cols), mean, rstd, dweight, dbias, rows,
                                  cols);
}

void CudaBackend::attention_forward(In qkv, Out out, Out probs, std::int64_t batch, std::int64_t seq,
                                    std::int64_t heads, std::int64_t head_dim) {
  bind();
  if (all_bf16({qkv.dtype, out.dtype, probs.dtype}))
    return cuda::attention_forward(ctx_, bits(qkv), bits(out), bits(probs), batch, seq, heads, head_dim);
  const std::int64_t c = heads * head_dim;
  Float32Views v(*this, "attention_forward");
  cuda::attention_forward(ctx_, v.in(qkv, batch * seq * 3 * c), v.out(out, batch * seq * c),
                          v.out(probs, batch * heads * seq * seq), batch, seq, heads, head_dim);
  v.finish();
}

void CudaBackend::attention_backward(In dout, In qkv, In probs, Out dqkv, std::int64_t batch, std::int64_t seq,
                                     std::int64_t heads, std::int64_t head_dim) {
  bind();
  if (all_bf16({dout.dtype, qkv.dtype, probs.dtype, dqkv.dtype}))
    return cuda::attention_backward(ctx_, bits(dout), bits(qkv), bits(probs), bits(dqkv), batch, seq, heads, head_dim);
  const std::int64_t c = heads * head_dim;
  Float32Views v(*this, "attention_backward");
  cuda::attention_backward(ctx_, v.in(dout, batch * seq * c), v.in(qkv, batch * seq * 3 * c),
                           v.in(probs, batch * heads * seq * seq), v.out(dqkv, batch * seq * 3 * c), batch, seq, heads,
                           head_dim);
  v.finish();
}

void CudaBackend::cross_entropy_forward(In logits, const std::int32_t* labels, float* loss, std::int64_t rows,
                                        std::int64_t vocab, std::int64_t rows_per_sample) {
  bind();
  if (all_bf16({logits.dtype}))
    return cuda::cross_entropy_forward(ctx_, bits(logits), labels, loss, rows, vocab, rows_per_sample);
  Float32Views v(*this, "cross_entropy_forward");
  cuda::cross_entropy_forward(ctx_, v.in(logits, rows * vocab), labels, loss, rows, vocab, rows_per_sample);
}

void CudaBackend::cross_entropy_backward(In logits, const std::int32_t* labels, const float* dloss, Out dlogits,
                                         std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample) {
  bind();
  if (all_bf16({logits.dtype, dlogits.dtype}))
    return cuda::cross_entropy_backward(ctx_, bits(logits), labels, dloss, bits(dlogits), rows, vocab,
                                        rows_per_sample);
  Float32Views v(*this, "cross_entropy_backward");
  cuda::cross_entropy_backward(ctx_, v.in(logits, rows * vocab), labels, dloss, v.out(dlogits, rows * vocab), rows,
                               vocab, rows_per_sample);
  v.finish();
}

void CudaBackend::embedding_forward(const std::int32_t* tokens, In wte, In wpe, Out out, std::int64_t batch,
                                    std::int64_t seq, std::int64_t dim, std::int64_t vocab) {
  bind();
  if (all_bf16({wte.dtype, wpe.dtype, out.dtype}))
    return cuda::embedding_forward(ctx_, tokens, bits(wte), bits(wpe), bits(out), batch, seq, dim, vocab);
  Float32Views v(*this, "embedding_forward");
  // Only the first `seq` rows of wpe are read.
  cuda::embedding_forward(ctx_, tokens, v.in(wte, vocab * dim), v.in(wpe, seq * dim), v.out(out, batch * seq * dim),
                          batch, seq, dim, vocab);
  v.finish();
}

void CudaBackend::embedding_backward(const std::int32_t* tokens, In dout, float* dwte, float* dwpe, std::int64_t batch,
                                     std::int64_t seq, std::int64_t dim) {
  bind();
  if (all_bf16({dout.dtype})) return cuda::embedding_backward(ctx_, tokens, bits(dout), dwte, dwpe, batch, seq, dim);
  Float32Views v(*this, "embedding_backward");
  cuda::embedding_backward(ctx_, tokens, v.in(dout, batch * seq * dim), dwte, dwpe, batch, seq, dim);
}

// ---- elementwise

void CudaBackend::scale(float* y, float factor, std::int64_t n) {
  bind();
  cuda::scale(ctx_, y, factor, n);
}

void CudaBackend::relu_forward(const float* x, float* y, std::int64_t n) {
  bind();
  cuda::relu_forward(ctx_, x, y, n);
}

void CudaBackend::relu_backward(const float* x, const float* dy, float* dx, std::int64_t n) {
  bind();
  cuda::relu_backward(ctx_, x, dy, dx, n);
}

void CudaBackend::gelu_forward(const float* x, float* y, std::int64_t n) {
  bind();
  cuda::gelu_forward(ctx_, x, y, n);
}

// ---- layers (nn_kernels.hpp)

namespace {

// PIPE_ATTENTION: "flash", "materialized" or unset (auto); anything else is an error naming the variable.
enum class AttentionChoice { automatic, flash, materialized };
AttentionChoice attention_choice() {
  static const AttentionChoice choice = [] {
    const char* env = std::getenv("PIPE_ATTENTION");
    if (env == nullptr || *env == '\0' || std::string(env) == "auto") return AttentionChoice::automatic;
    if (std::string(env) == "flash") return AttentionChoice::flash;
    if (std::string(env) == "materialized") return AttentionChoice::materialized;
    throw Error(std::string("PIPE_ATTENTION='") + env + "': expected flash, materialized or auto");
  }();
  return choice;
}

constexpr std::int64_t kFlashFromSeq = 2048;

}  // namespace

bool CudaBackend::flash_attention_pays(std::int64_t seq, std::int64_t head_dim) const {
  if (head_dim > cuda::kFlashMaxHeadDim) return false;
  switch (attention_choice()) {
    case AttentionChoice::flash: return true;
    case AttentionChoice::materialized: return false;
    case AttentionChoice::automatic: break;
  }
  return seq >= kFlashFromSeq;
}

void CudaBackend::flash_attention_forward(const float* qkv, float* out, float* state, std::int64_t batch,
                                          std::int64_t seq, std::int64_t heads, std::int64_t head_dim) {
  bind();
  cuda::flash_attention_forward(ctx_, qkv, out, state, batch, seq, heads, head_dim);
}

void CudaBackend::flash_attention_backward(const float* dout, const float* qkv, const float* state, float* dqkv,
                                           std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                           std::int64_t head_dim) {
  bind();
  cuda::flash_attention_backward(ctx_, dout, qkv, state, dqkv, batch, seq, heads, head_dim);
}

void CudaBackend::mse_forward(const float* x, const float* target, float* loss, std::int64_t batch,
                              std::int64_t per_sample) {
  bind();
  cuda::mse_forward(ctx_, x, target, loss, batch, per_sample);
}

void CudaBackend::mse_backward(const float* x, const float* target, const float* dloss, float* dx, std::int64_t batch,
                               std::int64_t per_sample) {
  bind();
  cuda::mse_backward(ctx_, x, target, dloss, dx, batch, per_sample);
}

// ---- optimizers

void CudaBackend::sgd_momentum(float* param, const float* grad, float* momentum_buffer, std::int64_t n, float lr,
                               float momentum, float weight_decay) {
  bind();
  cuda::sgd_momentum(ctx_, param, grad, momentum_buffer, n, lr, momentum, weight_decay);
}

// The scalars are folded on the host exactly as the CPU backend does.
void CudaBackend::adamw(float* param, const float* grad, float* m, float* v, std::int64_t n, float lr, float beta1,
                        float beta2, float eps, float weight_decay, std::int64_t step) {
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  bind();
  cuda::adamw(ctx_, param, grad, m, v, n, beta1, beta2, eps, 1.0f - lr * weight_decay, static_cast<float>(lr / bc1),
              static_cast<float>(1.0 / std::sqrt(bc2)));
}

void CudaBackend::adamw_multi(const AdamwTensor* tensors, int count, float lr, float beta1, float beta2, float eps,
                              std::int64_t step) {
  if (step < 1) throw Error("adamw: step must count from 1, got " + std::to_string(step));
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  std::vector<cuda::AdamwMultiEntry> entries;
  entries.reserve(static_cast<std::size_t>(std::max(count, 0)));
  for (int i = 0; i < count; ++i) {
    const AdamwTensor& t = tensors[i];
    entries.push_back({t.param, t.grad, t.m, t.v, t.param_bf16, t.n, 1.0f - lr * t.weight_decay});
  }
  bind();
  cuda::adamw_multi(ctx_, entries.data(), count, beta1, beta2, eps, static_cast<float>(lr / bc1),
                    static_cast<float>(1.0 / std::sqrt(bc2)));
}

double CudaBackend::sum_squares(const float* x, std::int64_t n) {
  bind();
  return cuda::sum_squares(ctx_, x, n);
}

void CudaBackend::sum_squares_each(const float* const* x, const std::int64_t* n, int count, double* out) {
  bind();
  cuda::sum_squares_each(ctx_, x, n, count, out);
}

}  // namespace libpipe::cuda
