// The execution model of the CUDA-on-CPU emulator: a grid runs its blocks one
// after another on the calling thread; within a block every CUDA thread is a
// fiber (its own stack), switched wherever the kernel waits for other threads:
// __syncthreads() (the block) and the warp primitives (its 32 lanes). One warp
// runs ahead of the others as far as the barriers let it (cuda_emu.cpp).
// Deterministic and single-threaded.
//
// What it checks: the kernels' arithmetic and indexing, grid and block sizes
// (a configuration CUDA rejects is rejected here too), barriers and warp
// primitives (a deadlock, or a lane that is named in a mask but has exited,
// is a KernelFault), and missing barriers that the two orders it runs threads
// in expose. What it cannot: timing, other interleavings (threads switch only
// where they wait, so races within a warp or on global memory between blocks
// go unseen), the GPU's intrinsics' precision (__expf, fast division and rsqrt
// are exact here).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// CUDA's index types and built-in variables (global, as in CUDA).
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

namespace cuda_emu {

// A kernel did something that is a hang or undefined on a GPU (a barrier not every thread reaches, a warp
// primitive whose mask names an exited lane): thrown by the launch.
class KernelFault : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

using ThreadBody = void (*)(void* arg);

// Runs body(arg) as every thread of the grid. A configuration CUDA rejects (0 or too many blocks or threads,
// dynamic shared memory, which the emulator does not provide) runs nothing and sets the launch error.
void run_grid(dim3 grid, dim3 block, std::size_t shared_bytes, ThreadBody body, void* arg);

// The error of the last rejected launch as a cudaError_t value (0: none), cleared by reading: cudaGetLastError.
int take_launch_error();

// __syncthreads(): waits until every thread of the block that has not exited waits here too.
void block_barrier();

// The calling thread's lane in its warp (threads numbered x fastest, then y, then z, as in CUDA).
unsigned lane_id();

// Warp exchange for the __shfl_*_sync and __ballot_sync primitives: waits until every lane of `mask` has called
// it, then returns the 32 lanes' values (only those of `mask` are meaningful). The array stays valid until the
// calling lane's next exchange.
const std::uint64_t* warp_exchange(unsigned mask, std::uint64_t value);

// Stops the kernel with a KernelFault (from inside a kernel thread).
[[noreturn]] void fault(const std::string& what);

// kernel<<<grid, block, shared, stream>>>(args...) is rewritten to launcher(kernel, grid, block, shared,
// stream)(args...) (emulate_cu.cmake). The arguments are converted to the kernel's parameter types and copied
// once per launch, as CUDA copies them into the parameter space; each thread then receives its own copy, as a
// by-value parameter. The stream is ignored: every launch completes before it returns, which is stream order.
template <class... P>
class Launch {
 public:
  Launch(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shared_bytes)
      : kernel_(kernel), grid_(grid), block_(block), shared_bytes_(shared_bytes) {}

  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "a kernel launch with the wrong number of arguments");
    Call call{kernel_, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
    run_grid(grid_, block_, shared_bytes_, &Call::run, &call);
  }

 private:
  struct Call {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> params;
    static void run(void* self) {
      Call* c = static_cast<Call*>(self);
      std::apply(c->kernel, c->params);
    }
  };
  void (*kernel_)(P...);
  dim3 grid_, block_;
  std::size_t shared_bytes_;
};

template <class... P>
Launch<P...> launcher(void (*kernel)(P...), dim3 grid, dim3 block, std::size_t shared_bytes = 0,
                      const void* /*stream*/ = nullptr) {
  return Launch<P...>(kernel, grid, block, shared_bytes);
}

}  // namespace cuda_emu
