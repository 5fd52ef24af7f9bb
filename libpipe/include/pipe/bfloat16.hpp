// bfloat16 storage: the upper 16 bits of an IEEE float32 (8-bit exponent, 7-bit
// mantissa). Mixed precision keeps parameters and activations in it and
// computes in float32. Rounding is to nearest, ties to even, as CUDA's
// __float2bfloat16_rn and the tensor cores do, so that the CPU and the GPU round
// every stored value alike; every NaN becomes the one quiet NaN 0x7FFF, as on
// the GPU.
#pragma once

#include <cstdint>
#include <cstring>

namespace libpipe {

inline std::uint16_t float_to_bf16(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;  // NaN
  bits += 0x7FFFu + ((bits >> 16) & 1u);                  // round to nearest even (overflows to inf as it should)
  return static_cast<std::uint16_t>(bits >> 16);
}

inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

}  // namespace libpipe
