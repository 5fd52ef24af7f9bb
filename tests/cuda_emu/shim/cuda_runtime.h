// <cuda_runtime.h> for the CUDA-on-CPU emulator: exactly the part of the CUDA
// API that libpipe/src/ops/cuda's kernels and launchers use, on the CPU. Device
// pointers are host pointers, every stream is the one synchronous stream, and
// kernels run in cuda_emu.hpp's fibers. This directory comes before any real
// CUDA include directory.
#pragma once

#include <math.h>  // expf, logf, fminf, fmaxf and isnan in the global namespace, as CUDA's device functions are

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_emu.hpp"

// ---- function qualifiers: every function is an ordinary host function here

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one at a time, so one static array per kernel is each block's shared memory. Every such array lies
// in one section, cuda_emu_shared, which the emulator fills with 0xFF bytes (NaN in every float and double, -1 in
// every integer) before each block: a GPU's shared memory starts undefined, so a kernel that reads before it
// writes must not pass on zeros or on the previous block's values.
#define __shared__ static __attribute__((section("cuda_emu_shared")))

// ---- vector types

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) ushort4 {
  unsigned short x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline ushort4 make_ushort4(unsigned short x, unsigned short y, unsigned short z, unsigned short w) {
  return ushort4{x, y, z, w};
}

// ---- math intrinsics. The GPU's approximate ones (__expf, and what --use_fast_math makes of expf, division and
// rsqrtf) are exact here: the emulator checks the kernels' logic, not the hardware's precision.

// glibc declares (but does not export) a function __expf: a macro keeps the kernels' calls off it.
#define __expf(x) ::cuda_emu_math::exp_approx(x)
namespace cuda_emu_math {
inline float exp_approx(float x) { return std::exp(x); }
}  // namespace cuda_emu_math
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline int __ffs(int x) { return __builtin_ffs(x); }

// ---- block and warp synchronisation (cuda_emu.cpp)

inline void __syncthreads() { cuda_emu::block_barrier(); }

namespace cuda_emu_warp {
template <class T>
std::uint64_t bits_of(T v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "warp shuffles move up to 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof v);
  return b;
}
template <class T>
T value_of(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
// The value of lane `src` (which the mask must name) at this exchange.
template <class T>
T shuffle(unsigned mask, T v, unsigned src) {
  const std::uint64_t* lanes = cuda_emu::warp_exchange(mask, bits_of(v));
  if (!(mask >> src & 1u)) cuda_emu::fault("a shuffle reads lane " + std::to_string(src) + ", which its mask leaves out");
  return value_of<T>(lanes[src]);
}
inline void check_width(int width) {
  if (width != 32) cuda_emu::fault("warp shuffles with a width other than 32 are not emulated");
}
}  // namespace cuda_emu_warp

template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  cuda_emu_warp::check_width(width);
  return cuda_emu_warp::shuffle(mask, var, (cuda_emu::lane_id() ^ static_cast<unsigned>(lane_mask)) & 31u);
}

// Lanes whose source would lie past the warp keep their own value.
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  cuda_emu_warp::check_width(width);
  const unsigned lane = cuda_emu::lane_id();
  return cuda_emu_warp::shuffle(mask, var, lane + delta < 32 ? lane + delta : lane);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const std::uint64_t* lanes = cuda_emu::warp_exchange(mask, predicate != 0 ? 1u : 0u);
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && lanes[l] != 0) bits |= 1u << l;
  return bits;
}

// ---- atomics: one thread runs at a time and none is switched out inside an atomic, so a plain read-modify-write
// is atomic.

template <class T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <class T>
T atomicMin(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}

// ---- the runtime API

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;

inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
  }
  return "cudaErrorUnknown";
}

inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}

// The error of the last launch CUDA would have rejected (launches check their configuration, as CUDA does).
inline cudaError_t cudaGetLastError() { return static_cast<cudaError_t>(cuda_emu::take_launch_error()); }

inline cudaError_t cudaMemsetAsync(void* dst, int value, std::size_t bytes, cudaStream_t = nullptr) {
  if (bytes > 0) std::memset(dst, value, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind,
                                   cudaStream_t = nullptr) {
  if (bytes > 0) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

// Blocks of `block_size` threads an SM holds: sm_80's and sm_90's 2048 threads' worth.
template <class Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int block_size, std::size_t) {
  if (block_size <= 0 || block_size > 1024) return cudaErrorInvalidValue;
  *blocks = 2048 / block_size;
  return cudaSuccess;
}
