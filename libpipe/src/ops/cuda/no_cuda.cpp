// The build without the CUDA backend: every GPU query answers "none" and
// every GPU request is a clear error, so apps need no #ifdefs.
#include <string>

#include "ops/device_hooks.hpp"
#include "pipe/backend.hpp"
#include "pipe/comm.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"

namespace libpipe {

namespace {
const char* kNotBuilt =
    "this build of libpipe has no CUDA backend (rebuild with the CUDA toolkit installed, or -DPIPE_WITH_CUDA=ON)";
}

bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return kNotBuilt; }
int select_cuda_device(int) { throw Error(kNotBuilt); }
std::string cuda_device_description() { return ""; }

namespace {
GemmMath g_math = GemmMath::fp32;
}
void set_cuda_gemm_math(GemmMath math) { g_math = math; }
GemmMath cuda_gemm_math() { return g_math; }

namespace detail {
std::shared_ptr<void> allocate_device_memory(Device device, std::size_t, bool) {
  throw Error(std::string("device '") + device_name(device) + "': " + kNotBuilt);
}
std::size_t device_allocated_bytes(Device) { return 0; }
std::size_t device_peak_allocated_bytes(Device) { return 0; }
Backend& cuda_backend() { throw Error(std::string("device 'cuda': ") + kNotBuilt); }
void* cuda_compute_stream() { throw Error(kNotBuilt); }
}  // namespace detail

std::unique_ptr<Comm> make_nccl_comm(MPI_Comm, const std::string&) {
  throw Error("this build of libpipe has no NCCL (rebuild with the CUDA toolkit and NCCL installed, or "
              "-DPIPE_WITH_CUDA=ON)");
}

}  // namespace libpipe
