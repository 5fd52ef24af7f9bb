// Launchers for the layer kernels (layernorm.cu, attention.cu, losses.cu,
// embedding.cu). Each has the semantics of the Backend method of the same
// name (pipe/backend.hpp) and runs asynchronously on ctx.stream, except where
// noted. Pointers are device pointers.
#pragma once

#include <cstdint>

#include "ops/cuda/cuda_context.hpp"

namespace libpipe::cuda {

void layernorm_forward(const CudaContext& ctx, const float* x, const float* weight, const float* bias, float* y,
                       float* mean, float* rstd, std::int64_t rows, std::int64_t cols, float eps);
void layernorm_backward_input(const CudaContext& ctx, const float* dy, const float* x, const float* weight,
                              const float* mean, const float* rstd, float* dx, std::int64_t rows, std::int64_t cols);
// Accumulates into dweight and dbias.
void layernorm_backward_weight(const CudaContext& ctx, const float* dy, const float* x, const float* mean,
                               const float* rstd, float* dweight, float* dbias, std::int64_t rows, std::int64_t cols);

// The same on bfloat16 arrays (mixed precision; their bits as std::uint16_t), float32 statistics and math.
void layernorm_forward(const CudaContext& ctx, const std::uint16_t* x, const std::uint16_t* weight,
                       const std::uint16_t* bias, std::uint16_t* y, float* mean, float* rstd, std::int64_t rows,
                       std::int64_t cols, float eps);
void layernorm_backward_input(const CudaContext& ctx, const std::uint16_t* dy, const std::uint16_t* x,
                              const std::uint16_t* weight, const float* mean, const float* rstd, std::uint16_t* dx,
                              std::int64_t rows, std::int64_t cols);
void layernorm_backward_weight(const CudaContext& ctx, const std::uint16_t* dy, const std::uint16_t* x,
                               const float* mean, const float* rstd, float* dweight, float* dbias, std::int64_t rows,
                               std::int64_t cols);

// rms_norm (rmsnorm.cu), swiglu (swiglu.cu) and rotary embedding with grouped key/value heads (rotary.cu), on float
// arrays and on bfloat16 ones (their bits as std::uint16_t; float math and statistics).
void rms_norm_forward(const CudaContext& ctx, const float* x, const float* weight, float* y, float* rstd,
                      std::int64_t rows, std::int64_t cols, float eps);
void rms_norm_forward(const CudaContext& ctx, const std::uint16_t* x, const std::uint16_t* weight, std::uint16_t* y,
                      float* rstd, std::int64_t rows, std::int64_t cols, float eps);
void rms_norm_backward_input(const CudaContext& ctx, const float* dy, const float* x, const float* weight,
                             const float* rstd, float* dx, std::int64_t rows, std::int64_t cols);
void rms_norm_backward_input(const CudaContext& ctx, const std::uint16_t* dy, const std::uint16_t* x,
                             const std::uint16_t* weight, const float* rstd, std::uint16_t* dx, std::int64_t rows,
                             std::int64_t cols);
// Accumulates into dweight.
void rms_norm_backward_weight(const CudaContext& ctx, const float* dy, const float* x, const float* rstd,
                              float* dweight, std::int64_t rows, std::int64_t cols);
void rms_norm_backward_weight(const CudaContext& ctx, const std::uint16_t* dy, const std::uint16_t* x,
                              const float* rstd, float* dweight, std::int64_t rows, std::int64_t cols);
void swiglu_forward(const CudaContext& ctx, const float* h, float* y, std::int64_t rows, std::int64_t cols);
void swiglu_forward(const CudaContext& ctx, const std::uint16_t* h, std::uint16_t* y, std::int64_t rows,
                    std::int64_t cols);
void swiglu_backward(const CudaContext& ctx, const float* h, const float* dy, float* dh, std::int64_t rows,
                     std::int64_t cols);
void swiglu_backward(const CudaContext& ctx, const std::uint16_t* h, const std::uint16_t* dy, std::uint16_t* dh,
                     std::int64_t rows, std::int64_t cols);
void rotary_gqa_forward(const CudaContext& ctx, const float* x, float* qkv, std::int64_t batch, std::int64_t seq,
                        std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta);
void rotary_gqa_forward(const CudaContext& ctx, const std::uint16_t* x, std::uint16_t* qkv, std::int64_t batch,
                        std::int64_t seq, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
                        float theta);
void rotary_gqa_backward(const CudaContext& ctx, const float* dqkv, float* dx, std::int64_t batch, std::int64_t seq,
                         std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim, float theta);
void rotary_gqa_backward(const CudaContext& ctx, const std::uint16_t* dqkv, std::uint16_t* dx, std::int64_t batch,
                         std::int64_t seq, std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim,
                         float theta);

void attention_forward(const CudaContext& ctx, const float* qkv, float* out, float* probs, std::int64_t batch,
                       std::int64_t seq, std::int64_t heads, std::int64_t head_dim);
void attention_backward(const CudaContext& ctx, const float* dout, const float* qkv, const float* probs, float* dqkv,
                        std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim);

// The same on bfloat16 arrays (mixed precision): qkv, out, the saved probabilities and the gradients; the
// heads, scores and GEMMs inside are float32.
void attention_forward(const CudaContext& ctx, const std::uint16_t* qkv, std::uint16_t* out, std::uint16_t* probs,
                       std::int64_t batch, std::int64_t seq, std::int64_t heads, std::int64_t head_dim);
void attention_backward(const CudaContext& ctx, const std::uint16_t* dout, const std::uint16_t* qkv,
                        const std::uint16_t* probs, std::uint16_t* dqkv, std::int64_t batch, std::int64_t seq,
                        std::int64_t heads, std::int64_t head_dim);

// Causal attention without the T x T matrix (flash_attention.cu): `state` [B H, T, D + 1] receives each row's
// output and log-sum-exp for the backward. Head dimensions up to kFlashMaxHeadDim.
constexpr std::int64_t kFlashMaxHeadDim = 128;
void flash_attention_forward(const CudaContext& ctx, const float* qkv, float* out, float* state, std::int64_t batch,
                             std::int64_t seq, std::int64_t heads, std::int64_t head_dim);
void flash_attention_backward(const CudaContext& ctx, const float* dout, const float* qkv, const float* state,
                              float* dqkv, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                              std::int64_t head_dim);

// These check labels / tokens on the device and wait for the check (one small copy back), then throw
// libpipe::Error with the CPU backend's exact message when one is out of range.
void cross_entropy_forward(const CudaContext& ctx, const float* logits, const std::int32_t* labels, float* loss,
                           std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample);
void cross_entropy_backward(const CudaContext& ctx, const float* logits, const std::int32_t* labels,
                            const float* dloss, float* dlogits, std::int64_t rows, std::int64_t vocab,
                            std::int64_t rows_per_sample);
// The same with bfloat16 logits and logit gradients (mixed precision), float32 losses and math.
void cross_entropy_forward(const CudaContext& ctx, const std::uint16_t* logits, const std::int32_t* labels,
                           float* loss, std::int64_t rows, std::int64_t vocab, std::int64_t rows_per_sample);
void cross_entropy_backward(const CudaContext& ctx, const std::uint16_t* logits, const std::int32_t* labels,
                            const float* dloss, std::uint16_t* dlogits, std::int64_t rows, std::int64_t vocab,
                            std::int64_t rows_per_sample);
void embedding_forward(const CudaContext& ctx, const std::int32_t* tokens, const float* wte, const float* wpe,
                       float* out, std::int64_t batch, std::int64_t seq, std::int64_t dim, std::int64_t vocab);
// Accumulates into dwte and dwpe.
void embedding_backward(const CudaContext& ctx, const std::int32_t* tokens, const float* dout, float* dwte,
                        float* dwpe, std::int64_t batch, std::int64_t seq, std::int64_t dim);

// The same with bfloat16 tables, outputs and output gradients (mixed precision); the gradients are float32.
void embedding_forward(const CudaContext& ctx, const std::int32_t* tokens, const std::uint16_t* wte,
                       const std::uint16_t* wpe, std::uint16_t* out, std::int64_t batch, std::int64_t seq,
                       std::int64_t dim, std::int64_t vocab);
void embedding_backward(const CudaContext& ctx, const std::int32_t* tokens, const std::uint16_t* dout, float* dwte,
                        float* dwpe, std::int64_t batch, std::int64_t seq, std::int64_t dim);

void mse_forward(const CudaContext& ctx, const float* x, const float* target, float* loss, std::int64_t batch,
                 std::int64_t per_sample);
void mse_backward(const CudaContext& ctx, const float* x, const float* target, const float* dloss, float* dx,
                  std::int64_t batch, std::int64_t per_sample);

}  // namespace libpipe::cuda
