// Which causal-attention path a backend takes: PIPE_ATTENTION=flash|materialized forces one; unset or "auto"
// leaves it to the sequence length (flash_attention_runs, pipe/backend.hpp, which both backends' flash_attention_pays
// answer with). Read once per process.
#pragma once

#include <cstdint>

namespace libpipe {

enum class AttentionChoice { automatic, flash, materialized };

// Throws libpipe::Error naming the variable for any other value.
AttentionChoice attention_choice();

// The CUDA flash kernels' largest head size (cuda::kFlashMaxHeadDim, nn_kernels.hpp, asserted equal there).
inline constexpr std::int64_t kCudaFlashMaxHeadDim = 128;

}  // namespace libpipe
