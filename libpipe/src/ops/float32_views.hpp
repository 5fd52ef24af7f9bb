// Float32 views of typed arrays (Backend::In / Out), for running a kernel
// written for float32 on arrays of any float dtype: a float32 array is passed
// through as is (an all-float32 call copies nothing), a bfloat16 input is
// widened into a temporary, and a bfloat16 output gets a float32 temporary
// that finish() rounds back once (to nearest even). The CPU runs every typed
// op this way; the CUDA backend runs mixes of dtypes this way (its
// all-bfloat16 calls have native kernels).
//
//   Float32Views v(*this, "layernorm_forward");
//   kernel(v.in(x, rows * cols), v.in(weight, cols), v.out(y, rows * cols), ...);
//   v.finish();
#pragma once

#include <cstdint>
#include <vector>

#include "pipe/backend.hpp"

namespace libpipe {

class Float32Views {
 public:
  // `op` names the op in errors (an array that is neither float32 nor bfloat16).
  Float32Views(Backend& backend, const char* op) : backend_(backend), op_(op) {}
  Float32Views(const Float32Views&) = delete;
  Float32Views& operator=(const Float32Views&) = delete;

  const float* in(Backend::In x, std::int64_t n);
  // An output the kernel writes without reading it.
  float* out(Backend::Out y, std::int64_t n);
  // An output the kernel reads first (y += x).
  float* in_out(Backend::Out y, std::int64_t n);
  // Rounds the bfloat16 outputs back; call once the kernel has run.
  void finish();

 private:
  struct Pending {
    Tensor wide;
    Backend::Out target;
    std::int64_t n;
  };
  Backend& backend_;
  const char* op_;
  std::vector<Tensor> inputs_;
  std::vector<Pending> outputs_;
};

}  // namespace libpipe
