// The GPU queries of pipe/cuda.hpp and the device hooks (device_hooks.hpp) in
// a build with the CUDA backend: which GPU this process uses, the one backend
// on it, its memory. A machine without a driver or GPU answers "none" with a
// reason, so that --device cuda fails with one clear line.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "ops/cuda/cuda_backend.hpp"
#include "ops/cuda/cuda_check.hpp"
#include "ops/device_hooks.hpp"
#include "pipe/cuda.hpp"
#include "pipe/error.hpp"

namespace libpipe {
namespace {

struct Probe {
  int count = 0;
  std::string reason;  // why count is 0
};

std::string cuda_version_str(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

std::string error_text(cudaError_t err) { return std::string(cudaGetErrorString(err)) + ", " + cudaGetErrorName(err); }

// Asked once: the answer cannot change while the process runs (CUDA reads CUDA_VISIBLE_DEVICES at its start).
const Probe& probe() {
  static const Probe result = [] {
    Probe p;
    const cudaError_t err = cudaGetDeviceCount(&p.count);
    (void)cudaGetLastError();  // a failed query must not be reported later as some kernel's error
    if (err == cudaSuccess && p.count > 0) return p;
    p.count = 0;
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) {
      driver = 0;
      (void)cudaGetLastError();
    }
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    if (err == cudaSuccess || err == cudaErrorNoDevice) {
      p.reason = "no GPU visible";
      if (visible != nullptr)
        p.reason += std::string(" (CUDA_VISIBLE_DEVICES=") + visible + ")";
      else if (err != cudaSuccess)
        p.reason += std::string(" (") + cudaGetErrorName(err) + ")";
    } else if (driver == 0 || err == cudaErrorStubLibrary) {
      p.reason =
          std::string("no CUDA driver: this machine has no NVIDIA driver installed (") + cudaGetErrorName(err) + ")";
    } else if (err == cudaErrorInsufficientDriver) {
      p.reason = "the CUDA driver is too old: it supports CUDA " + cuda_version_str(driver) +
                 ", libpipe was built with CUDA " + cuda_version_str(CUDART_VERSION) + " (" + error_text(err) + ")";
    } else {
      p.reason = "CUDA cannot use the GPU (" + error_text(err) + ")";
    }
    return p;
  }();
  return result;
}

std::mutex g_mutex;                                  // device selection and the backend's creation
int g_selected = -1;                                 // select_cuda_device's choice
std::atomic<cuda::CudaBackend*> g_backend{nullptr};  // never destroyed (tensors may outlive static destruction)
std::atomic<GemmMath> g_gemm_math{GemmMath::fp32};

struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0;
  std::size_t memory = 0;
};

DeviceInfo device_info(int device) {
  cudaDeviceProp prop{};
  PIPE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return {prop.name, prop.major, prop.minor, prop.totalGlobalMem};
}

// The GPU the backend uses or will use: select_cuda_device's, else the calling thread's current one (0 unless
// the application chose another through CUDA itself).
int chosen_device_locked() {
  if (auto* backend = g_backend.load()) return backend->device_index();
  if (g_selected >= 0) return g_selected;
  int current = 0;
  PIPE_CUDA_CHECK(cudaGetDevice(&current));
  return current;
}

cuda::CudaBackend& backend() {
  if (auto* existing = g_backend.load(std::memory_order_acquire)) return *existing;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (auto* existing = g_backend.load(std::memory_order_relaxed)) return *existing;
  if (cuda_device_count() == 0) throw Error("device 'cuda': " + cuda_unavailable_reason());
  const int device = chosen_device_locked();
  const DeviceInfo info = device_info(device);
  auto* created = new cuda::CudaBackend(device, "GPU " + std::to_string(device) + " (" + info.name + ")");
  g_backend.store(created, std::memory_order_release);
  return *created;
}

}  // namespace

bool cuda_built() { return true; }

int cuda_device_count() { return probe().count; }

std::string cuda_unavailable_reason() { return probe().reason; }

int select_cuda_device(int local_rank) {
  if (local_rank < 0) throw Error("select_cuda_device: negative local rank " + std::to_string(local_rank));
  const int count = cuda_device_count();
  if (count == 0) throw Error("select_cuda_device: " + cuda_unavailable_reason());
  const int device = local_rank % count;
  std::lock_guard<std::mutex> lock(g_mutex);
  if (auto* existing = g_backend.load()) {
    if (existing->device_index() != device)
      throw Error("select_cuda_device(" + std::to_string(local_rank) + "): GPU " + std::to_string(device) +
                  " requested, but the CUDA backend already runs on GPU " + std::to_string(existing->device_index()) +
                  " (select the GPU before the first CUDA tensor or op)");
  }
  PIPE_CUDA_CHECK(cudaSetDevice(device));
  g_selected = device;
  return device;
}

std::string cuda_device_description() {
  if (cuda_device_count() == 0) return "";
  std::lock_guard<std::mutex> lock(g_mutex);
  const int device = chosen_device_locked();
  const DeviceInfo info = device_info(device);
  char memory[32];
  std::snprintf(memory, sizeof memory, "%.0f GB", static_cast<double>(info.memory) / (1024.0 * 1024.0 * 1024.0));
  return std::to_string(device) + ": " + info.name + " (sm_" + std::to_string(info.major) + std::to_string(info.minor) +
         ", " + memory + ")";
}

void set_cuda_gemm_math(GemmMath math) { g_gemm_math.store(math); }

GemmMath cuda_gemm_math() { return g_gemm_math.load(); }

namespace detail {

std::shared_ptr<void> allocate_device_memory(Device device, std::size_t bytes, bool zero) {
  if (device != Device::cuda)
    throw Error(std::string("allocate_device_memory: device '") + device_name(device) + "' is not a GPU");
  return backend().allocator().allocate(bytes, zero);
}

std::size_t device_allocated_bytes(Device device) {
  if (device != Device::cuda) return 0;
  auto* existing = g_backend.load(std::memory_order_acquire);
  return existing != nullptr ? existing->allocator().in_use_bytes() : 0;
}

std::size_t device_peak_allocated_bytes(Device device) {
  if (device != Device::cuda) return 0;
  auto* existing = g_backend.load(std::memory_order_acquire);
  return existing != nullptr ? existing->allocator().stats().peak : 0;
}

Backend& cuda_backend() { return backend(); }

void* cuda_compute_stream() { return backend().stream(); }

}  // namespace detail
}  // namespace libpipe
