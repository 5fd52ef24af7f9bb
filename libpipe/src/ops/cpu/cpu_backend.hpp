// The CPU backend: GEMMs on oneDNN (cpu_gemm.cpp), everything else as plain loops that the
// compiler vectorises (see cpu_math.hpp). One instance per process
// (backend_for(Device::cpu)); it holds no state beyond scratch space, so it
// is safe to call from several threads as long as they do not share outputs.
#pragma once

#include "pipe/backend.hpp"

namespace libpipe::cpu {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  const char* name() const override { return "cpu"; }

  // Every op of pipe/backend_ops.inc. GEMMs: float32 on oneDNN (cpu_gemm.cpp), bfloat16 as oneDNN's bf16 matmul
  // where the CPU has bf16 instructions, else widened (gemm_widened). The other ops live in the file of their
  // family (elementwise.cpp, layernorm.cpp, attention.cpp, losses.cpp, embedding.cpp, optimizer.cpp); typed ops
  // run the float32 kernels on Float32Views (ops/float32_views.hpp): bfloat16 arrays are widened and rounded back,
  // so the CPU is the reference that native bfloat16 kernels are tested against.
#define PIPE_BACKEND_OP(ret, name, params) ret name params override;
#include "pipe/backend_ops.inc"
#undef PIPE_BACKEND_OP

  // Causal attention without the T x T matrix for long sequences (flash_attention.cpp).
  bool flash_attention_pays(std::int64_t seq, std::int64_t head_dim) const override;
  void flash_attention_forward(const float* qkv, float* out, float* state, std::int64_t batch, std::int64_t seq,
                               std::int64_t heads, std::int64_t head_dim) override;
  void flash_attention_backward(const float* dout, const float* qkv, const float* state, float* dqkv,
                                std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                std::int64_t head_dim) override;
};

// The one CPU backend of the process.
CpuBackend& cpu_backend();

// The instruction sets the kernels are compiled for (cpu_math.hpp).
enum class Isa { baseline, avx2, avx512 };

// The one the kernels run with: the best this CPU supports, or PIPE_CPU_ISA (avx512, avx2 or baseline; to
// test every path on one machine). Decided at first use; throws libpipe::Error for a value that is unknown or
// beyond this CPU.
Isa cpu_isa();
const char* isa_name(Isa isa);

}  // namespace libpipe::cpu
