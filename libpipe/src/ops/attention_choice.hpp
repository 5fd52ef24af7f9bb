// Which causal-attention path a backend takes: PIPE_ATTENTION=flash|materialized forces one; unset or "auto"
// leaves it to the backend's flash_attention_pays (by sequence length). Read once per process.
#pragma once

namespace libpipe {

enum class AttentionChoice { automatic, flash, materialized };

// Throws libpipe::Error naming the variable for any other value.
AttentionChoice attention_choice();

}  // namespace libpipe
