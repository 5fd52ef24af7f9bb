// Element storage of the mixed-precision kernels: float, or bfloat16 held as
// its 16 bits (std::uint16_t, pipe/bfloat16.hpp). Kernels templated on the
// storage type load every element as float, compute in float and store once,
// rounding to nearest even with every NaN as 0x7FFF: the CPU's to_bf16.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace libpipe::cuda {

using bf16 = std::uint16_t;

__device__ __forceinline__ float load(const float* p, std::int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const bf16* p, std::int64_t i) {
  return __uint_as_float(static_cast<unsigned>(p[i]) << 16);
}

__device__ __forceinline__ bf16 round_to_bf16(float v) {
  return isnan(v) ? bf16{0x7FFF} : __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

__device__ __forceinline__ void store(float* p, std::int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(bf16* p, std::int64_t i, float v) { p[i] = round_to_bf16(v); }

}  // namespace libpipe::cuda

namespace libpipe::cuda::nn {

// V consecutive bfloat16 values as floats, and back (V = 4: one 8-byte access; the caller guarantees alignment):
// the bfloat16 counterparts of device_math.cuh's load_vec and store_vec.
template <int V>
__device__ __forceinline__ void load_vec(const bf16* p, float (&v)[V]) {
  if constexpr (V == 4) {
    const ushort4 t = *reinterpret_cast<const ushort4*>(p);
    const bf16 h[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = load(h, i);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = load(p, i);
  }
}

template <int V>
__device__ __forceinline__ void store_vec(bf16* p, const float (&v)[V]) {
  if constexpr (V == 4) {
    *reinterpret_cast<ushort4*>(p) =
        make_ushort4(round_to_bf16(v[0]), round_to_bf16(v[1]), round_to_bf16(v[2]), round_to_bf16(v[3]));
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) store(p, i, v[i]);
  }
}

// Whether a V = 4 access of the type may start at p (16 bytes for float4, 8 for four bfloat16).
inline bool vec4_aligned(const float* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }
inline bool vec4_aligned(const bf16* p) { return reinterpret_cast<std::uintptr_t>(p) % 8 == 0; }

}  // namespace libpipe::cuda::nn
