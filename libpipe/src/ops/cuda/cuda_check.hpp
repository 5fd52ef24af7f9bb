// Error checks for CUDA runtime and cuBLAS calls: a failure becomes a
// libpipe::Error naming the call, where it was made and what the library
// says, e.g. "CUDA error in cudaMalloc(&p, bytes) at cuda_allocator.cpp:88:
// out of memory (cudaErrorMemoryAllocation)". Usable from .cpp and .cu files.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstring>
#include <string>

#include "pipe/error.hpp"

namespace libpipe::cuda {

// The file name without its directories: the full build path says nothing to a user.
inline const char* source_file_name(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash != nullptr ? slash + 1 : path;
}

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const std::string& call, const char* file, int line) {
  throw Error("CUDA error in " + call + " at " + source_file_name(file) + ":" + std::to_string(line) + ": " +
              cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")");
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw Error(std::string("cuBLAS error in ") + call + " at " + source_file_name(file) + ":" + std::to_string(line) +
              ": " + cublasGetStatusString(status) + " (status " + std::to_string(static_cast<int>(status)) + ")");
}

}  // namespace libpipe::cuda

#define PIPE_CUDA_CHECK(call)                                                                                        \
  do {                                                                                                               \
    const cudaError_t pipe_cuda_err_ = (call);                                                                       \
    if (pipe_cuda_err_ != cudaSuccess) ::libpipe::cuda::throw_cuda_error(pipe_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define PIPE_CUBLAS_CHECK(call)                                                            \
  do {                                                                                     \
    const cublasStatus_t pipe_cublas_status_ = (call);                                     \
    if (pipe_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                      \
      ::libpipe::cuda::throw_cublas_error(pipe_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch (`what` names the kernel): a bad configuration (too many threads, too much shared
// memory, no kernel image for this GPU) is reported at the launch instead of by some later unrelated call.
#define PIPE_CUDA_CHECK_LAUNCH(what)                                                                             \
  do {                                                                                                           \
    const cudaError_t pipe_cuda_err_ = cudaGetLastError();                                                       \
    if (pipe_cuda_err_ != cudaSuccess)                                                                           \
      ::libpipe::cuda::throw_cuda_error(pipe_cuda_err_, std::string("launch of ") + (what), __FILE__, __LINE__); \
  } while (0)
