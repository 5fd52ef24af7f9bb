// What this build and this machine offer on the GPU. Every function here exists in every build of libpipe:
// a build without the CUDA backend (or a machine without a GPU or driver) reports none, so callers choose
// the device at run time without #ifdefs.
#pragma once

#include <mpi.h>

#include <string>

#include "pipe/export.hpp"

namespace libpipe {

// True when libpipe was compiled with the CUDA backend (PIPE_WITH_CUDA found the toolkit).
PIPE_API bool cuda_built();
// GPUs this process can use: 0 when not built with CUDA, when there is no driver, or no device.
PIPE_API int cuda_device_count();
// Why cuda_device_count() is 0, as a sentence for error messages ("" when there are GPUs).
PIPE_API std::string cuda_unavailable_reason();

// The rank of this process among the ranks of `comm` on the same node (MPI_Comm_split_type shared memory).
PIPE_API int node_local_rank(MPI_Comm comm);
// Whether two ranks of `comm` would bind the same physical GPU of the same host, GPU `gpu` being this rank's
// device index (its entry in CUDA_VISIBLE_DEVICES names the physical GPU when that is set: schedulers may give
// each rank its own). NCCL refuses such ranks. Collective; every rank gets the same answer.
PIPE_API bool ranks_share_a_gpu(MPI_Comm comm, int gpu);
// Binds this process to GPU local_rank % cuda_device_count() and returns its index. Throws
// libpipe::Error when there is no GPU. Call before the first CUDA tensor is made.
PIPE_API int select_cuda_device(int local_rank);
// The GPU this process is bound to, e.g. "0: NVIDIA H200 (sm_90, 141 GB)"; "" when none.
PIPE_API std::string cuda_device_description();

// How the CUDA backend's GEMMs compute. Tensors stay float32 in memory (they are the master copy);
// tf32 and bf16 round the GEMM inputs to TF32 or bfloat16 on the tensor cores and accumulate in float32.
enum class GemmMath { fp32, tf32, bf16 };
PIPE_API void set_cuda_gemm_math(GemmMath math);
PIPE_API GemmMath cuda_gemm_math();
// Parses "fp32", "tf32" or "bf16"; throws libpipe::Error otherwise.
PIPE_API GemmMath parse_gemm_math(const std::string& name);
PIPE_API const char* gemm_math_name(GemmMath math);

}  // namespace libpipe
