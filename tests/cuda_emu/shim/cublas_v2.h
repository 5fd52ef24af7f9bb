// <cublas_v2.h> for the CUDA-on-CPU emulator: only what cuda_check.hpp names.
// The emulated kernels' GEMMs go through CudaContext::backend (the CPU backend).
#pragma once

enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
};

inline const char* cublasGetStatusString(cublasStatus_t status) {
  return status == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_UNKNOWN";
}
