// Deterministic random initialisation (see init.hpp for why it is our own).
#include "pipe/init.hpp"

#include <cmath>

#include "pipe/backend.hpp"
#include "pipe/error.hpp"

namespace libpipe {

std::uint64_t mix_seed(std::uint64_t a, std::uint64_t b) {
  std::uint64_t z = a + 0x9e3779b97f4a7c15ULL * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t Rng::next_u64() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  double u2 = uniform();
  if (u1 < 1e-300) u1 = 1e-300;  // log(0) guard
  double r = std::sqrt(-2.0 * std::log(u1));
  double theta = 2.0 * M_PI * u2;
  spare_ = r * std::sin(theta);
  has_spare_ = true;
  return r * std::cos(theta);
}

void fill_normal(Tensor& tensor, Rng& rng, float stddev) {
  Tensor host = tensor.device() == Device::cpu ? tensor : Tensor::empty(tensor.shape(), tensor.dtype());
  float* p = host.host_data<float>();
  for (std::int64_t i = 0, n = host.numel(); i < n; ++i) p[i] = static_cast<float>(rng.normal() * stddev);
  if (tensor.device() != Device::cpu)
    backend_for(tensor.device()).copy_from_host(tensor.data(), host.data(), host.bytes());
}

void fill_constant(Tensor& tensor, float value) {
  if (tensor.device() != Device::cpu) {
    backend_for(tensor.device()).fill(tensor.f32(), value, tensor.numel());
    return;
  }
  float* p = tensor.host_data<float>();
  for (std::int64_t i = 0, n = tensor.numel(); i < n; ++i) p[i] = value;
}

}  // namespace libpipe
