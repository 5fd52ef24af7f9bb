// The emulator's scheduler (cuda_emu.hpp): one ucontext fiber per CUDA thread
// of the running block, on the calling thread. A fiber runs until it waits at
// a barrier or exits; the last thread to arrive at a barrier releases the
// others and goes on. The next to run is always the lowest-numbered ready
// thread (the highest-numbered in every other block): a warp runs ahead of the
// others as far as the barriers let it, so that a missing barrier shows, as a
// thread reading shared memory before another has written it, or overwriting
// it before another has read it, in one order or the other.
#include "cuda_emu.hpp"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstring>
#include <new>
#include <string>
#include <vector>

// AddressSanitizer must be told when the stack changes under it (its fake stacks for use-after-return, its
// stack bounds for reports); stacks reused by the next block are unpoisoned first.
#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif
#ifdef CUDA_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

uint3 threadIdx{0, 0, 0};
uint3 blockIdx{0, 0, 0};
dim3 blockDim;
dim3 gridDim;

namespace cuda_emu {
namespace {

// Kernel frames are small (a few arrays of 4 floats; adamw_multi's 3.6 KB parameter); a guard page below each
// stack turns an overflow into a crash instead of a corrupted neighbour.
constexpr std::size_t kStackBytes = 64 * 1024;
constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxBlockThreads = 1024;
// cudaError_t values (the shim's enum names them).
constexpr int kErrorInvalidValue = 1;
constexpr int kErrorInvalidConfiguration = 9;

enum class State { ready, at_barrier, at_warp, done };

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;
  uint3 tid{0, 0, 0};
  unsigned index = 0;  // x + y * blockDim.x + z * blockDim.x * blockDim.y: lane index % 32, warp index / 32
  State state = State::ready;
  unsigned warp_mask = 0;                  // at_warp: the mask it waits with
  std::uint64_t published = 0;             // at_warp: its value
  std::uint64_t received[kWarpSize] = {};  // the lanes' values at its last exchange
  void* fake_stack = nullptr;              // ASan's fake stack while it is switched out
};

struct Scheduler {
  std::vector<Fiber> fibers = std::vector<Fiber>(kMaxBlockThreads);
  unsigned count = 0;       // threads of the running block
  unsigned live = 0;        // not exited
  unsigned at_barrier = 0;  // waiting in __syncthreads
  Fiber* current = nullptr;
  ucontext_t host;  // the launching thread, while a fiber runs
  ThreadBody body = nullptr;
  void* arg = nullptr;
  std::string fault;  // non-empty: the running block faulted
  int launch_error = 0;
  unsigned long long blocks_run = 0;  // over all launches: picks each block's order
#ifdef CUDA_EMU_ASAN
  const void* host_stack_bottom = nullptr;
  std::size_t host_stack_size = 0;
#endif
};

Scheduler& sched() {
  static Scheduler s;
  return s;
}

char* new_stack() {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  if (mprotect(p, page, PROT_NONE) != 0) throw std::bad_alloc();
  return static_cast<char*>(p) + page;
}

std::string where(const Fiber& f) {
  auto v3 = [](unsigned x, unsigned y, unsigned z) {
    return "(" + std::to_string(x) + "," + std::to_string(y) + "," + std::to_string(z) + ")";
  };
  return "thread " + v3(f.tid.x, f.tid.y, f.tid.z) + " of block " + v3(blockIdx.x, blockIdx.y, blockIdx.z);
}

// From a fiber back to the launching thread; `exiting`: it will not be resumed (ASan drops its fake stack).
void switch_to_host(Fiber& f, bool exiting) {
  Scheduler& s = sched();
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &f.fake_stack, s.host_stack_bottom, s.host_stack_size);
#else
  (void)exiting;
#endif
  swapcontext(&f.context, &s.host);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

void resume(Fiber& f) {
  Scheduler& s = sched();
  s.current = &f;
  threadIdx = f.tid;
#ifdef CUDA_EMU_ASAN
  void* host_fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&host_fake_stack, f.stack, kStackBytes);
#endif
  swapcontext(&s.host, &f.context);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(host_fake_stack, nullptr, nullptr);
#endif
  s.current = nullptr;
}

void release_barrier() {
  Scheduler& s = sched();
  for (unsigned i = 0; i < s.count; ++i)
    if (s.fibers[i].state == State::at_barrier) s.fibers[i].state = State::ready;
  s.at_barrier = 0;
}

// A thread exited: the barrier may now be complete; a warp primitive waiting for it never will be.
void on_exit(Fiber& f) {
  Scheduler& s = sched();
  --s.live;
  if (s.at_barrier > 0 && s.at_barrier == s.live) release_barrier();
  const unsigned lane = f.index % kWarpSize, base = f.index - lane;
  for (unsigned l = 0; l < kWarpSize && base + l < s.count; ++l) {
    const Fiber& g = s.fibers[base + l];
    if (g.state == State::at_warp && (g.warp_mask >> lane & 1u))
      fault(where(f) + " exited while lane " + std::to_string(l) + " of its warp waits in a warp primitive whose " +
            "mask names it");
  }
}

// fault() inside a kernel thread: unwinds that thread's frames (its strings included) to fiber_main, on its own
// stack; the block's other threads are abandoned where they wait (kernels hold nothing that needs destroying).
struct ThreadFault {
  std::string what;
};

void fiber_main() {
  Scheduler& s = sched();
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &s.host_stack_bottom, &s.host_stack_size);
#endif
  Fiber& f = *s.current;
  try {
    s.body(s.arg);
    f.state = State::done;
    on_exit(f);
  } catch (ThreadFault& e) {
    f.state = State::done;
    s.fault = std::move(e.what);
  }
  switch_to_host(f, true);
}

std::string deadlock_report() {
  const Scheduler& s = sched();
  unsigned barrier = 0, warp = 0, done = 0;
  std::string first_warp;
  for (unsigned i = 0; i < s.count; ++i) {
    const Fiber& f = s.fibers[i];
    barrier += f.state == State::at_barrier;
    done += f.state == State::done;
    if (f.state == State::at_warp && warp++ == 0) first_warp = " (first: " + where(f) + ")";
  }
  return "deadlock in block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
         std::to_string(blockIdx.z) + "): " + std::to_string(barrier) + " threads wait in __syncthreads, " +
         std::to_string(warp) + " in warp primitives" + first_warp + ", " + std::to_string(done) + " have exited";
}

}  // namespace
}  // namespace cuda_emu

// The bounds of the section that holds every __shared__ array (shim/cuda_runtime.h), made by the linker; weak, so
// that a program without shared arrays links too.
extern "C" char __start_cuda_emu_shared[] __attribute__((weak));
extern "C" char __stop_cuda_emu_shared[] __attribute__((weak));

namespace cuda_emu {
namespace {

// Byte by byte through a volatile pointer, not memset: ASan pads its globals with redzones inside the section, and
// its memset would report writing them.
#ifdef CUDA_EMU_ASAN
__attribute__((no_sanitize("address")))
#endif
void poison_shared_memory() {
  if (__start_cuda_emu_shared == nullptr || __stop_cuda_emu_shared == nullptr) return;
  volatile unsigned char* p = reinterpret_cast<unsigned char*>(__start_cuda_emu_shared);
  const std::size_t n = static_cast<std::size_t>(__stop_cuda_emu_shared - __start_cuda_emu_shared);
  for (std::size_t i = 0; i < n; ++i) p[i] = 0xFF;
}

void run_block() {
  poison_shared_memory();
  Scheduler& s = sched();
  s.live = s.count;
  s.at_barrier = 0;
  for (unsigned i = 0; i < s.count; ++i) {
    Fiber& f = s.fibers[i];
    f.index = i;
    f.tid = uint3{i % blockDim.x, i / blockDim.x % blockDim.y, i / (blockDim.x * blockDim.y)};
    f.state = State::ready;
    f.fake_stack = nullptr;
#ifdef CUDA_EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);  // frames left by the previous block's fiber
#endif
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;  // fibers never return: they switch to the host when they exit
    makecontext(&f.context, &fiber_main, 0);
#ifdef CUDA_EMU_ASAN
    // ASan's swapcontext clears the shadow of the target's whole uc_stack at every switch, which would drop the
    // redzones of the frames live on it; makecontext is done with it, and the stack was unpoisoned above.
    f.context.uc_stack = stack_t{};
#endif
  }
  const bool lowest_first = s.blocks_run++ % 2 == 0;
  while (s.live > 0) {
    Fiber* next = nullptr;
    for (unsigned i = 0; i < s.count && next == nullptr; ++i) {
      Fiber& f = s.fibers[lowest_first ? i : s.count - 1 - i];
      if (f.state == State::ready) next = &f;
    }
    if (next == nullptr) throw KernelFault("CUDA emulator: " + deadlock_report());
    resume(*next);
    if (!s.fault.empty()) {
      std::string what;
      what.swap(s.fault);
      throw KernelFault("CUDA emulator: " + what);
    }
  }
}

Fiber& current_fiber(const char* what) {
  Scheduler& s = sched();
  if (s.current == nullptr) throw std::logic_error(std::string("CUDA emulator: ") + what + " outside a kernel");
  return *s.current;
}

}  // namespace

void run_grid(dim3 grid, dim3 block, std::size_t shared_bytes, ThreadBody body, void* arg) {
  Scheduler& s = sched();
  if (s.current != nullptr) throw std::logic_error("CUDA emulator: a launch from inside a kernel is not emulated");
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 ||
      block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      threads > kMaxBlockThreads) {
    s.launch_error = kErrorInvalidConfiguration;
    return;
  }
  if (shared_bytes > 0) {  // no kernel here uses dynamic shared memory; a GPU would accept up to 48 KiB
    s.launch_error = kErrorInvalidValue;
    return;
  }
  for (unsigned i = 0; i < threads; ++i)
    if (s.fibers[i].stack == nullptr) s.fibers[i].stack = new_stack();
  s.count = static_cast<unsigned>(threads);
  s.body = body;
  s.arg = arg;
  gridDim = grid;
  blockDim = block;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = uint3{x, y, z};
        run_block();
      }
}

int take_launch_error() {
  const int e = sched().launch_error;
  sched().launch_error = 0;
  return e;
}

void block_barrier() {
  Scheduler& s = sched();
  Fiber& f = current_fiber("__syncthreads");
  f.state = State::at_barrier;
  if (++s.at_barrier == s.live)
    release_barrier();  // the last to arrive goes on at once
  else
    switch_to_host(f, false);
}

unsigned lane_id() { return current_fiber("a warp primitive").index % kWarpSize; }

const std::uint64_t* warp_exchange(unsigned mask, std::uint64_t value) {
  Scheduler& s = sched();
  Fiber& f = current_fiber("a warp primitive");
  const unsigned lane = f.index % kWarpSize, base = f.index - lane;
  if (!(mask >> lane & 1u)) fault(where(f) + " calls a warp primitive with a mask that leaves out its own lane");
  bool complete = true;
  for (unsigned l = 0; l < kWarpSize; ++l) {
    if (!(mask >> l & 1u) || l == lane) continue;
    if (base + l >= s.count)
      fault(where(f) + ": warp primitive's mask names lane " + std::to_string(l) + ", which the block lacks");
    const Fiber& g = s.fibers[base + l];
    if (g.state == State::done)
      fault(where(f) + ": warp primitive's mask names lane " + std::to_string(l) + ", which has exited");
    if (g.state == State::at_warp && g.warp_mask != mask)
      fault(where(f) + ": lanes of one warp wait in warp primitives with different masks");
    complete = complete && g.state == State::at_warp;
  }
  f.state = State::at_warp;
  f.warp_mask = mask;
  f.published = value;
  if (complete) {
    // Every lane gets its own copy, so that a lane may go on to its next exchange before the others have read.
    std::uint64_t values[kWarpSize] = {};
    for (unsigned l = 0; l < kWarpSize; ++l)
      if (mask >> l & 1u) values[l] = s.fibers[base + l].published;
    for (unsigned l = 0; l < kWarpSize; ++l)
      if (mask >> l & 1u) {
        Fiber& g = s.fibers[base + l];
        std::memcpy(g.received, values, sizeof values);
        g.state = State::ready;
      }
  } else {
    switch_to_host(f, false);
  }
  return f.received;
}

void fault(const std::string& what) {
  if (sched().current == nullptr) throw KernelFault("CUDA emulator: " + what);
  throw ThreadFault{what};  // to fiber_main, which hands it to the launch
}

}  // namespace cuda_emu
