// Deterministic parameter initialisation. The generator is our own (splitmix64
// with Box-Muller) so that initial weights are identical on every platform and
// standard library, given the layer's seed.
#pragma once

#include <cstdint>

#include "pipe/export.hpp"
#include "pipe/tensor.hpp"

namespace libpipe {

class PIPE_API Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next_u64();
  double uniform();  // [0, 1)
  double normal();   // mean 0, standard deviation 1

 private:
  std::uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// Mixes two 64-bit values into one seed (splitmix64 finaliser).
PIPE_API std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b);

// Fill a float32 tensor on any device; random values are drawn on the host
// (then copied), so initial weights do not depend on the device.
PIPE_API void fill_normal(Tensor& tensor, Rng& rng, float stddev);
PIPE_API void fill_constant(Tensor& tensor, float value);

}  // namespace libpipe
