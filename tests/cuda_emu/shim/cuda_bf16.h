// <cuda_bf16.h> for the CUDA-on-CPU emulator: the conversion the kernels use,
// written from CUDA's documented behaviour (round to nearest even; every NaN
// to the canonical 0x7FFF), not from libpipe's own float_to_bf16, so that the
// test compares two implementations.
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  unsigned short bits;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
  // Add half an ulp of bfloat16, one less when the kept part is even: ties go to even; a carry out of the
  // mantissa rounds up the exponent, to infinity past the largest finite value.
  const std::uint32_t lsb = (u >> 16) & 1u;
  return __nv_bfloat16{static_cast<unsigned short>((u + 0x7fffu + lsb) >> 16)};
}

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
