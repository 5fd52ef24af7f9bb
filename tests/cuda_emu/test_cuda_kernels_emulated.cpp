// The CUDA kernels of libpipe/src/ops/cuda, run on the CPU by the emulator in this
// directory, against the CPU backend: each launcher of cuda_kernels.hpp and
// nn_kernels.hpp (embedding's excepted: CUB) gets random inputs, the CPU
// backend's method of the same name gets the same, and the results must agree
// within test_cuda_ops's tolerances (tests/unit/test_cuda_ops.cpp, which runs
// the same comparisons through the CUDA backend on a real GPU). Odd sizes,
// size 0, rows wider than a block, pointers off 16-byte alignment (the scalar
// paths next to the float4 ones) and the bad-label error message are covered.
// The largest difference of every op is printed at the end.
//
// "Device" memory is host memory here: 256-byte aligned like the caching
// allocator's blocks, and not zeroed (all-ones bytes, NaN as floats), so that
// a kernel reading memory nobody wrote shows in its result.
#define BOOST_TEST_DYN_LINK
#define BOOST_TEST_MODULE cuda_kernels_emulated
#include <algorithm>
#include <array>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "../unit/device_compare.hpp"
#include "../unit/test_util.hpp"
#include "ops/cuda/cuda_context.hpp"
#include "ops/cuda/cuda_kernels.hpp"
#include "ops/cuda/nn_kernels.hpp"
#include "cuda_emu.hpp"
#include "pipe/backend.hpp"
#include "pipe/bfloat16.hpp"
#include "pipe/error.hpp"

namespace cu = libpipe::cuda;
using libpipe::Backend;
using libpipe::Device;
using namespace device_compare;  // randoms, tolerances, compare, the summary

// Messages and the summary call the device side "emulated cuda".
struct EmulatedLabel {
  EmulatedLabel() { device_label() = "emulated cuda"; }
};
BOOST_TEST_GLOBAL_FIXTURE(EmulatedLabel);
BOOST_TEST_GLOBAL_FIXTURE(PrintSummary);

namespace {

Backend& cpu() { return libpipe::backend_for(Device::cpu); }

// ---------------------------------------------------------------- emulated device memory and context

// Exactly `bytes` (no rounding up), so that AddressSanitizer builds see a kernel reading or writing past the end.
std::shared_ptr<void> device_alloc(std::size_t bytes) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, std::max<std::size_t>(bytes, 1)) != 0) throw std::bad_alloc();
  std::memset(p, 0xff, bytes);
  return std::shared_ptr<void>(p, std::free);
}

// A device copy of host data (at least one element, as the layers pass valid pointers for empty tensors).
template <typename T>
class Dev {
 public:
  explicit Dev(const std::vector<T>& host) : n_(host.size()), mem_(device_alloc(n_ * sizeof(T))) {
    if (n_ > 0) std::memcpy(get(), host.data(), n_ * sizeof(T));
  }
  T* get() const { return static_cast<T*>(mem_.get()); }
  std::vector<T> download() const { return std::vector<T>(get(), get() + n_); }

 private:
  std::size_t n_;
  std::shared_ptr<void> mem_;
};

// The launchers' context: GEMMs by the CPU backend (device pointers are host pointers), scratch from
// device_alloc, and the SM count of a small GPU by default, so that grid-stride loops go round several times.
cu::CudaContext context(int sm_count) { return cu::CudaContext{&cpu(), nullptr, sm_count, &device_alloc}; }
const cu::CudaContext& ctx() {
  static const cu::CudaContext c = context(2);
  return c;
}

using pipe_test::error_of;

// The emulator computes exp, division and square roots exactly where the GPU approximates them, so its differences
// from the CPU are smaller than a GPU's; the tolerances are still test_cuda_ops's (device_compare.hpp), so that a
// result that passes here is within what a GPU run accepts. Attention: fp32 GEMMs plus the softmax, and two
// chained products per gradient in backward.
constexpr Tol kAttention{2e-5, 1.0};
constexpr Tol kAttentionBackward{4e-5, 1.0};

// Emulated device memory against the CPU's values (beside device_compare's host-vector comparison).
using device_compare::compare;
void compare(const std::string& op, const std::string& what, const Floats& c, const Dev<float>& g, Tol tol,
             double term_scale = 0) {
  compare(op, what, c, g.download(), tol, term_scale);
}

// Element counts: size 0, tiny, not a multiple of 4 (the float4 loops' tails), more than a block of threads.
const std::int64_t kSizes[] = {0, 1, 3, 5, 1000, 4097, 65537};
// (rows, cols): rows = 0, rows = 1, cols = 1, odd, a multiple of 4 (float4 rows), GPT-2's width, wider than a
// block, and enough rows for the column sums to split (bias_grad, LayerNorm's weight gradient), into many parts.
const std::array<std::int64_t, 2> kRowShapes[] = {{0, 8},   {1, 1},    {1, 7},    {7, 1},    {5, 12},
                                                  {33, 37}, {64, 768}, {3, 4097}, {300, 37}, {1000, 3}};

}  // namespace

// ---------------------------------------------------------------- the emulator itself

namespace {

void shuffle_kernel(unsigned* out) {
  const unsigned t = threadIdx.x, lane = t % 32;
  out[t * 3 + 0] = __shfl_xor_sync(0xffffffffu, t * 10, 5);
  out[t * 3 + 1] = __shfl_down_sync(0xffffffffu, t * 10, 3u);
  out[t * 3 + 2] = __ballot_sync(0xffffffffu, lane % 3 == 0);
}

void reverse_kernel(int* out) {
  __shared__ int s[64];
  s[threadIdx.x] = static_cast<int>(threadIdx.x + 100 * blockIdx.x);
  __syncthreads();
  out[blockIdx.x * 64 + threadIdx.x] = s[63 - threadIdx.x];
}

void read_before_write_kernel(float* out) {  // reads shared memory no thread of this block has written
  __shared__ float s[64];
  out[blockIdx.x * 64 + threadIdx.x] = s[threadIdx.x];
  __syncthreads();
  s[threadIdx.x] = 1.0f;
}

void deadlock_kernel() {  // half a warp in a shuffle that waits for the other half, which waits in __syncthreads
  if (threadIdx.x % 32 < 16)
    (void)__shfl_xor_sync(0xffffffffu, 1, 16);
  else
    __syncthreads();
}

void exited_lane_kernel() {  // a full mask, but half the warp has returned
  if (threadIdx.x % 32 >= 16) return;
  (void)__shfl_xor_sync(0xffffffffu, 1, 1);
}

}  // namespace

BOOST_AUTO_TEST_CASE(emulator_shuffles_barriers_and_faults) {
  std::vector<unsigned> out(64 * 3);
  cuda_emu::launcher(shuffle_kernel, 1, 64)(out.data());
  bool ok = true;
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned lane = t % 32, base = t - lane;
    ok = ok && out[t * 3] == (base + (lane ^ 5u)) * 10;
    ok = ok && out[t * 3 + 1] == (lane + 3 < 32 ? t + 3 : t) * 10;
    ok = ok && out[t * 3 + 2] == 0x49249249u;
  }
  BOOST_TEST(ok, "__shfl_xor_sync, __shfl_down_sync, __ballot_sync");

  std::vector<int> rev(3 * 64);
  cuda_emu::launcher(reverse_kernel, 3, 64)(rev.data());
  ok = true;
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 64; ++t) ok = ok && rev[static_cast<std::size_t>(b * 64 + t)] == 63 - t + 100 * b;
  BOOST_TEST(ok, "__syncthreads orders shared memory");

  // Shared memory starts undefined on a GPU: here every block starts with NaN, not zeros, and not the 1.0 the
  // previous block left.
  std::vector<float> stale(2 * 64, 0.0f);
  cuda_emu::launcher(read_before_write_kernel, 2, 64)(stale.data());
  BOOST_TEST(std::all_of(stale.begin(), stale.end(), [](float x) { return std::isnan(x); }),
             "shared memory is poisoned before each block");

  BOOST_CHECK_THROW(cuda_emu::launcher(deadlock_kernel, 1, 64)(), cuda_emu::KernelFault);
  BOOST_CHECK_THROW(cuda_emu::launcher(exited_lane_kernel, 2, 32)(), cuda_emu::KernelFault);

  // Configurations CUDA rejects: reported by cudaGetLastError (once), nothing run.
  BOOST_TEST(cudaGetLastError() == cudaSuccess);
  cuda_emu::launcher(reverse_kernel, 0, 64)(rev.data());
  BOOST_TEST(cudaGetLastError() == cudaErrorInvalidConfiguration);
  BOOST_TEST(cudaGetLastError() == cudaSuccess);
  cuda_emu::launcher(reverse_kernel, 1, dim3(32, 33))(rev.data());
  BOOST_TEST(cudaGetLastError() == cudaErrorInvalidConfiguration);
  cuda_emu::launcher(reverse_kernel, dim3(1, 65536), 64)(rev.data());
  BOOST_TEST(cudaGetLastError() == cudaErrorInvalidConfiguration);
}

// ---------------------------------------------------------------- elementwise.cu

BOOST_AUTO_TEST_CASE(fill_with_misaligned_pointers) {
  for (std::int64_t n : kSizes)
    for (std::int64_t off : {0, 1, 3})
      for (float value : {-2.5f, 0.0f, -0.0f}) {  // 0: a memset; -0: the kernel, which must keep the sign
        const std::string what = dims({n}) + "+" + std::to_string(off) + " value " + std::to_string(value);
        Floats c = randoms(n + off + 1);  // a guard element after the end
        Dev<float> g(c);
        cpu().fill(c.data() + off, value, n);
        cu::fill(ctx(), g.get() + off, value, n);
        const Floats got = g.download();
        compare("fill", what, c, got, kExact);
        BOOST_TEST(same_bits(c, got), "fill bits " << what);
      }
}

// Rounding to nearest even is one IEEE operation: the kernels' conversions must equal pipe/bfloat16.hpp's bit for
// bit, NaN (0x7FFF, the kernel's own check), infinities, overflow, ties and subnormals included.
BOOST_AUTO_TEST_CASE(bf16_conversions_are_bit_identical) {
  auto bits = [](std::uint32_t b) {
    float x;
    std::memcpy(&x, &b, sizeof x);
    return x;
  };
  for (std::int64_t n : kSizes)
    for (std::int64_t offset : {0, 1}) {
      Floats x = randoms(n + offset, -1e4f, 1e4f);
      const Floats specials = {std::numeric_limits<float>::quiet_NaN(), bits(0xFF800001u),
                               std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::max(), bits(0x3F808000u) /* tie to even */,
                               bits(0x3F818000u) /* tie, up */, bits(0x00010000u), -0.0f};
      for (std::size_t i = 0; i < specials.size() && i + offset < x.size(); ++i) x[i + offset] = specials[i];
      Dev<float> gx(x);
      Dev<std::uint16_t> gh(Halves(static_cast<std::size_t>(n + offset + 1), 0xABCD));
      cu::to_bf16(ctx(), gx.get() + offset, gh.get() + offset, n);  // offset 1: neither pointer 16-byte aligned
      Halves want(static_cast<std::size_t>(n + offset + 1), 0xABCD);
      for (std::int64_t i = 0; i < n; ++i) want[offset + i] = libpipe::float_to_bf16(x[offset + i]);
      BOOST_TEST((gh.download() == want), "to_bf16 n=" << n << " offset " << offset);

      Dev<float> back(Floats(static_cast<std::size_t>(n + offset + 1), 7.0f));
      cu::from_bf16(ctx(), gh.get() + offset, back.get() + offset, n);
      Floats want_wide(static_cast<std::size_t>(n + offset + 1), 7.0f);
      cpu().from_bf16(want.data() + offset, want_wide.data() + offset, n);
      const Floats wide = back.download();
      BOOST_TEST(same_bits(wide, want_wide), "from_bf16 n=" << n << " offset " << offset);
    }
}

BOOST_AUTO_TEST_CASE(elementwise_ops) {
  for (std::int64_t n : kSizes)
    for (std::int64_t off : {0, 1}) {
      const std::string what = dims({n}) + "+" + std::to_string(off);
      const std::int64_t total = n + off + 1;
      const Floats a = randoms(total), b = randoms(total, -3.0f, 3.0f);
      Dev<float> ga(a), gb(b);
      Floats out = randoms(total);
      Dev<float> gout(out);
      cpu().add(a.data() + off, b.data() + off, out.data() + off, n);
      cu::add(ctx(), ga.get() + off, gb.get() + off, gout.get() + off, n);
      compare("add", what, out, gout, kExact);

      Floats y = a;
      Dev<float> gy(y);
      cpu().accumulate(y.data() + off, b.data() + off, n);
      cu::accumulate(ctx(), gy.get() + off, gb.get() + off, n);
      compare("accumulate", what, y, gy, kExact);
      cpu().scale(y.data() + off, -0.375f, n);
      cu::scale(ctx(), gy.get() + off, -0.375f, n);
      compare("scale", what, y, gy, kExact);

      cpu().relu_forward(b.data() + off, out.data() + off, n);
      cu::relu_forward(ctx(), gb.get() + off, gout.get() + off, n);
      compare("relu_forward", what, out, gout, kExact);
      cpu().relu_backward(b.data() + off, a.data() + off, out.data() + off, n);
      cu::relu_backward(ctx(), gb.get() + off, ga.get() + off, gout.get() + off, n);
      compare("relu_backward", what, out, gout, kExact);

      cpu().gelu_forward(b.data() + off, out.data() + off, n);
      cu::gelu_forward(ctx(), gb.get() + off, gout.get() + off, n);
      compare("gelu_forward", what, out, gout, kElementwise);
      cpu().gelu_backward(b.data() + off, a.data() + off, out.data() + off, n);
      cu::gelu_backward(ctx(), gb.get() + off, ga.get() + off, gout.get() + off, n);
      compare("gelu_backward", what, out, gout, kElementwise);
    }
  // GELU's tails: large |x| must give x and 0, and derivatives 1 and 0.
  const Floats x = {-60.0f, -12.0f, -5.0f, 0.0f, 5.0f, 12.0f, 60.0f}, dy(x.size(), 1.0f);
  Floats y(x.size());
  Dev<float> gx(x), gdy(dy), gy(y);
  cpu().gelu_forward(x.data(), y.data(), 7);
  cu::gelu_forward(ctx(), gx.get(), gy.get(), 7);
  compare("gelu_forward", "tails", y, gy, kElementwise);
  cpu().gelu_backward(x.data(), dy.data(), y.data(), 7);
  cu::gelu_backward(ctx(), gx.get(), gdy.get(), gy.get(), 7);
  compare("gelu_backward", "tails", y, gy, kElementwise);
}

BOOST_AUTO_TEST_CASE(bias_ops) {
  for (int sm_count : {2, 132})  // bias_grad splits the rows by the SM count: a small GPU and an H100
    for (auto [rows, cols] : kRowShapes)
      for (std::int64_t off : {0, 1}) {
        const cu::CudaContext c = context(sm_count);
        const std::string what = dims({rows, cols}) + "+" + std::to_string(off) + " sm" + std::to_string(sm_count);
        const std::int64_t n = rows * cols + off + 1;
        Floats y = randoms(n), bias = randoms(cols + off + 1, -2.0f, 2.0f);
        Dev<float> gy(y), gbias(bias);
        cpu().bias_epilogue(y.data() + off, bias.data() + off, y.data() + off, rows, cols);
        cu::add_bias(c, gy.get() + off, gbias.get() + off, rows, cols);
        compare("add_bias", what, y, gy, kExact);

        Floats db = randoms(cols + off + 1);  // bias_grad accumulates
        Dev<float> gdb(db);
        cpu().bias_grad(y.data() + off, db.data() + off, rows, cols);
        cu::bias_grad(c, gy.get() + off, gdb.get() + off, rows, cols);
        compare("bias_grad", what, db, gdb, kReduce);

        Floats x = randoms(n, -3.0f, 3.0f), out = randoms(n);
        Dev<float> gx(x), gout(out);
        cpu().bias_gelu(x.data() + off, bias.data() + off, x.data() + off, out.data() + off, rows, cols);
        cu::bias_gelu_forward(c, gx.get() + off, gbias.get() + off, gout.get() + off, rows, cols);
        compare("bias_gelu_forward (x + bias)", what, x, gx, kExact);
        compare("bias_gelu_forward (gelu)", what, out, gout, kElementwise);
      }
}

// scale_matrices is the GEMM with k = 0 (C = beta C over `batch` blocks): the CPU backend's strided GEMM with
// k = 0. Padding columns and the gaps between blocks must stay untouched; beta 0 overwrites NaN.
BOOST_AUTO_TEST_CASE(scale_matrices_is_the_empty_gemm) {
  struct Case {
    std::int64_t m, n, batch, pad, gap;
  };
  const Case cases[] = {{1, 1, 1, 0, 0}, {5, 6, 1, 2, 0}, {7, 33, 3, 1, 5}, {0, 6, 2, 1, 1}, {40, 300, 2, 3, 7}};
  const Floats dummy(1, 0.0f);
  for (const Case& cs : cases)
    for (float beta : {0.5f, 0.0f, -1.0f, 1.0f}) {
      const std::string what = dims({cs.m, cs.n, cs.batch}) + " beta " + std::to_string(beta);
      const std::int64_t ldc = cs.n + cs.pad, stride = cs.m * ldc + cs.gap;
      const std::int64_t total = stride * cs.batch + 1;
      Floats c = beta == 0.0f ? Floats(static_cast<std::size_t>(total), std::numeric_limits<float>::quiet_NaN())
                              : randoms(total);
      Dev<float> g(c);
      cpu().gemm_strided_batched(false, false, cs.m, cs.n, 0, 1.0f, dummy.data(), 1, 0, dummy.data(),
                                 std::max<std::int64_t>(1, cs.n), 0, beta, c.data(), ldc, stride, cs.batch);
      cu::scale_matrices(ctx(), g.get(), ldc, cs.m, cs.n, beta, stride, cs.batch);
      compare("scale_matrices", what, c, g, kExact);
    }
}

// ---------------------------------------------------------------- optimizer.cu

BOOST_AUTO_TEST_CASE(optimizers_over_three_steps) {
  const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  for (std::int64_t n : kSizes)
    for (std::int64_t off : {0, 1}) {
      const std::string what = dims({n}) + "+" + std::to_string(off);
      const std::int64_t total = n + off + 1;
      {
        Floats p = randoms(total), buf(static_cast<std::size_t>(total), 0.0f);
        Dev<float> gp(p), gbuf(buf);
        for (int step = 0; step < 3; ++step) {
          const Floats g = randoms(total);
          Dev<float> gg(g);
          cpu().sgd_momentum(p.data() + off, g.data() + off, buf.data() + off, n, 0.1f, 0.9f, 0.01f);
          cu::sgd_momentum(ctx(), gp.get() + off, gg.get() + off, gbuf.get() + off, n, 0.1f, 0.9f, 0.01f);
        }
        compare("sgd_momentum (param)", what, p, gp, kRow);
        compare("sgd_momentum (momentum)", what, buf, gbuf, kRow);
      }
      {
        Floats p = randoms(total), m(static_cast<std::size_t>(total), 0.0f), v(static_cast<std::size_t>(total), 0.0f);
        Dev<float> gp(p), gm(m), gv(v);
        for (int step = 1; step <= 3; ++step) {
          const Floats g = randoms(total, -0.1f, 0.1f);
          Dev<float> gg(g);
          cpu().adamw(p.data() + off, g.data() + off, m.data() + off, v.data() + off, n, lr, beta1, beta2, eps, wd,
                      step);
          // The scalars CudaBackend::adamw folds on the host.
          const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
          const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
          cu::adamw(ctx(), gp.get() + off, gg.get() + off, gm.get() + off, gv.get() + off, n, beta1, beta2, eps,
                    1.0f - lr * wd, static_cast<float>(lr / bc1), static_cast<float>(1.0 / std::sqrt(bc2)));
        }
        compare("adamw (param)", what, p, gp, kRow);
        compare("adamw (m)", what, m, gm, kRow);
        compare("adamw (v)", what, v, gv, kRow);
      }
    }
}

// The fused multi-tensor AdamW does per element what adamw does: over more tensors than one launch takes (70: two
// launches) of every size, each with its own weight decay, its results equal adamw's bit for bit and its bfloat16
// copies equal to_bf16 of the updated params.
BOOST_AUTO_TEST_CASE(adamw_multi_equals_adamw_per_tensor) {
  const int count = 70;
  const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  std::vector<Dev<float>> fused_p, fused_m, fused_v, one_p, one_m, one_v, grads;
  std::vector<Dev<std::uint16_t>> fused_h;
  std::vector<std::size_t> sizes;
  for (int i = 0; i < count; ++i) {
    const std::int64_t n = kSizes[i % std::size(kSizes)] + i;
    sizes.push_back(static_cast<std::size_t>(n));
    const Floats p = randoms(n), g = randoms(n, -0.1f, 0.1f), zeros(static_cast<std::size_t>(n), 0.0f);
    fused_p.emplace_back(p);
    fused_m.emplace_back(zeros);
    fused_v.emplace_back(zeros);
    fused_h.emplace_back(Halves(static_cast<std::size_t>(n), 0));
    one_p.emplace_back(p);
    one_m.emplace_back(zeros);
    one_v.emplace_back(zeros);
    grads.emplace_back(g);
  }
  for (int step = 1; step <= 3; ++step) {
    const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
    const float step_size = static_cast<float>(lr / bc1), inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
    std::vector<cu::AdamwMultiEntry> entries;
    for (int i = 0; i < count; ++i)
      entries.push_back({fused_p[i].get(), grads[i].get(), fused_m[i].get(), fused_v[i].get(),
                         i % 2 ? fused_h[i].get() : nullptr, static_cast<std::int64_t>(sizes[i]),
                         1.0f - lr * 0.01f * static_cast<float>(i % 3)});
    cu::adamw_multi(ctx(), entries.data(), count, beta1, beta2, eps, step_size, inv_sqrt_bc2);
    for (int i = 0; i < count; ++i)
      cu::adamw(ctx(), one_p[i].get(), grads[i].get(), one_m[i].get(), one_v[i].get(),
                static_cast<std::int64_t>(sizes[i]), beta1, beta2, eps, entries[i].decay, step_size, inv_sqrt_bc2);
  }
  for (int i = 0; i < count; ++i) {
    const Floats a = fused_p[i].download(), b = one_p[i].download();
    BOOST_TEST(same_bits(a, b), "adamw_multi param of tensor " << i);
    BOOST_TEST(same_bits(fused_m[i].download(), one_m[i].download()), "adamw_multi m of tensor " << i);
    BOOST_TEST(same_bits(fused_v[i].download(), one_v[i].download()), "adamw_multi v of tensor " << i);
    if (i % 2) BOOST_TEST((fused_h[i].download() == to_halves(b)), "adamw_multi bf16 copy of tensor " << i);
  }
}

BOOST_AUTO_TEST_CASE(sum_squares_in_double) {
  for (std::int64_t n : kSizes)
    for (std::int64_t off : {0, 1}) {  // offset 1: the scalar loop over all of x, another grid
      const Floats x = randoms(n + off);
      Dev<float> gx(x);
      const double c = cpu().sum_squares(x.data() + off, n), g = cu::sum_squares(ctx(), gx.get() + off, n);
      compare("sum_squares", dims({n}) + "+" + std::to_string(off), Floats{static_cast<float>(c)},
              Floats{static_cast<float>(g)}, kReduce);
      if (n == 0) BOOST_TEST(g == 0.0);
    }
  // Past the grid's cap of 1024 blocks (misaligned: every float scalar), so that the grid-stride loops and the
  // pass over the block totals go round more than once.
  {
    const std::int64_t big = 300001;
    const Floats x = randoms(big + 1);
    Dev<float> gx(x);
    const double c = cpu().sum_squares(x.data() + 1, big), g = cu::sum_squares(ctx(), gx.get() + 1, big);
    compare("sum_squares", dims({big}) + "+1", Floats{static_cast<float>(c)}, Floats{static_cast<float>(g)}, kReduce);
  }
  // 1 + n * 2^-24: a float accumulator would drop every small term.
  const std::int64_t n = 100001;
  Floats x(static_cast<std::size_t>(n), std::ldexp(1.0f, -12));
  x[0] = 1.0f;
  Dev<float> gx(x);
  const double want = 1.0 + static_cast<double>(n - 1) * std::ldexp(1.0, -24);
  BOOST_TEST(std::fabs(cu::sum_squares(ctx(), gx.get(), n) - want) < 1e-9);
  // Several arrays in one call: each equal to its own sum_squares, bit for bit, empty ones 0.
  const Floats y = randoms(4099);
  Dev<float> gy(y);
  const float* xs[] = {gx.get(), gy.get(), gy.get() + 1, gy.get()};
  const std::int64_t ns[] = {n, 4099, 4098, 0};
  double each[4] = {-1, -1, -1, -1};
  cu::sum_squares_each(ctx(), xs, ns, 4, each);
  for (int i = 0; i < 4; ++i) BOOST_TEST(each[i] == cu::sum_squares(ctx(), xs[i], ns[i]), "sum_squares_each " << i);
}

// ---------------------------------------------------------------- layernorm.cu

BOOST_AUTO_TEST_CASE(layernorm_forward_and_backward) {
  const float eps = 1e-5f;
  for (auto [rows, cols] : kRowShapes)
    for (std::int64_t off : {0, 1}) {  // offset 1: the scalar path where cols % 4 == 0
      const std::string what = dims({rows, cols}) + "+" + std::to_string(off);
      const std::int64_t n = rows * cols + off + 1, nr = rows + off + 1, nc = cols + off + 1;
      // An offset mean (+3) as activations have: a one-pass variance would cancel.
      const Floats x = randoms(n, 2.0f, 4.0f), w = randoms(nc, 0.5f, 1.5f), b = randoms(nc);
      Floats y = randoms(n), mean = randoms(nr), rstd = randoms(nr);
      Dev<float> gx(x), gw(w), gb(b), gy(y), gmean(mean), grstd(rstd);
      cpu().layernorm_forward(x.data() + off, w.data() + off, b.data() + off, y.data() + off, mean.data() + off,
                              rstd.data() + off, rows, cols, eps);
      cu::layernorm_forward(ctx(), gx.get() + off, gw.get() + off, gb.get() + off, gy.get() + off,
                            gmean.get() + off, grstd.get() + off, rows, cols, eps);
      compare("layernorm_forward (y)", what, y, gy, kRow);
      compare("layernorm_forward (mean)", what, mean, gmean, kRow);
      compare("layernorm_forward (rstd)", what, rstd, grstd, kRow);

      // The backward ops get the CPU's mean and rstd on both sides, so that each op is compared on its own.
      Dev<float> cmean(mean), crstd(rstd);
      const Floats dy = randoms(n);
      Floats dx = randoms(n);
      Dev<float> gdy(dy), gdx(dx);
      cpu().layernorm_backward_input(dy.data() + off, x.data() + off, w.data() + off, mean.data() + off,
                                     rstd.data() + off, dx.data() + off, rows, cols);
      cu::layernorm_backward_input(ctx(), gdy.get() + off, gx.get() + off, gw.get() + off, cmean.get() + off,
                                   crstd.get() + off, gdx.get() + off, rows, cols);
      // One column: dx = rstd (g - mean(g) - ...) is exactly 0, which the emulated kernel gives. The CPU's is not
      // quite: its contracted fma(dy, w, -mean(dy w)) keeps the product's rounding error, times rstd = 1/sqrt(eps)
      // ~ 316, up to 1e-5. The floor follows the cancelling terms, rstd |dy w| (~ 300), there.
      double terms = 0;
      if (cols == 1)
        for (std::int64_t r = 0; r < rows; ++r)
          terms = std::max(terms, std::fabs(static_cast<double>(rstd[off + r]) * dy[off + r] * w[off]));
      compare("layernorm_backward_input", what, dx, gdx, kRow, terms);

      Floats dw = randoms(nc), dbias = randoms(nc);  // accumulates
      Dev<float> gdw(dw), gdbias(dbias);
      cpu().layernorm_backward_weight(dy.data() + off, x.data() + off, mean.data() + off, rstd.data() + off,
                                      dw.data() + off, dbias.data() + off, rows, cols);
      cu::layernorm_backward_weight(ctx(), gdy.get() + off, gx.get() + off, cmean.get() + off, crstd.get() + off,
                                    gdw.get() + off, gdbias.get() + off, rows, cols);
      compare("layernorm_backward_weight (dweight)", what, dw, gdw, kReduce);
      compare("layernorm_backward_weight (dbias)", what, dbias, gdbias, kReduce);
    }
}

// ---------------------------------------------------------------- attention.cu (its GEMMs: the CPU backend's)

BOOST_AUTO_TEST_CASE(attention_forward_and_backward) {
  struct Case {
    std::int64_t batch, seq, heads, head_dim, off;
  };
  // GPT-tiny's head, an odd T, T = 1, an odd head size (scalar permutes), GPT-2's head size, and misaligned
  // tensors with D % 4 == 0 (scalar permutes where float4 ones would otherwise run).
  const Case cases[] = {{2, 64, 4, 16, 0}, {2, 37, 4, 16, 0}, {1, 1, 2, 8, 0},
                        {3, 5, 3, 7, 0},   {1, 128, 2, 64, 0}, {2, 37, 4, 16, 1}};
  for (const Case& cs : cases) {
    const std::int64_t B = cs.batch, T = cs.seq, H = cs.heads, D = cs.head_dim, C = H * D, off = cs.off;
    const std::string what = "B" + std::to_string(B) + " T" + std::to_string(T) + " H" + std::to_string(H) + " D" +
                             std::to_string(D) + "+" + std::to_string(off);
    const Floats qkv = randoms(B * T * 3 * C + off + 1);
    Floats out = randoms(B * T * C + off + 1), probs(static_cast<std::size_t>(B * H * T * T + off + 1), -1.0f);
    Dev<float> gqkv(qkv), gout(out), gprobs(probs);
    cpu().attention_forward(qkv.data() + off, out.data() + off, probs.data() + off, B, T, H, D);
    cu::attention_forward(ctx(), gqkv.get() + off, gout.get() + off, gprobs.get() + off, B, T, H, D);
    compare("attention_forward (out)", what, out, gout, kAttention);
    compare("attention_forward (probs)", what, probs, gprobs, kAttention);
    const Floats gp = gprobs.download();  // above the diagonal the probabilities are exactly 0
    bool masked = true;
    for (std::int64_t r = 0; r < B * H; ++r)
      for (std::int64_t i = 0; i < T; ++i)
        for (std::int64_t j = i + 1; j < T; ++j) masked = masked && gp[off + (r * T + i) * T + j] == 0.0f;
    BOOST_TEST(masked, what << ": probabilities above the diagonal are not 0");

    const Floats dout = randoms(B * T * C + off + 1);
    Floats dqkv = randoms(B * T * 3 * C + off + 1);  // overwritten
    Dev<float> gdout(dout), gdqkv(dqkv), cprobs(probs);
    cpu().attention_backward(dout.data() + off, qkv.data() + off, probs.data() + off, dqkv.data() + off, B, T, H, D);
    cu::attention_backward(ctx(), gdout.get() + off, gqkv.get() + off, cprobs.get() + off, gdqkv.get() + off, B, T,
                           H, D);
    compare("attention_backward", what, dqkv, gdqkv, kAttentionBackward);
  }
}

// ---------------------------------------------------------------- losses.cu

BOOST_AUTO_TEST_CASE(cross_entropy_forward_and_backward) {
  struct Case {
    std::int64_t rows, vocab, per_sample;
  };
  // A warp per row up to 1024 classes, a block beyond (GPT-2's vocabulary); fewer rows than one sample (no loss
  // written, labels still checked).
  const Case cases[] = {{0, 5, 1},     {1, 1, 1},        {6, 5, 2},    {12, 37, 4}, {64, 256, 64},
                        {3, 1024, 3}, {16, 50257, 8}, {3, 4099, 1}, {3, 5, 4}};
  for (const Case& cs : cases) {
    const std::string what = dims({cs.rows, cs.vocab}) + "/" + std::to_string(cs.per_sample);
    const std::int64_t samples = cs.rows / cs.per_sample;
    // backward reads dloss of a partial sample too (rows < per_sample)
    const std::int64_t dloss_n = (cs.rows + cs.per_sample - 1) / cs.per_sample;
    const Floats logits = randoms(cs.rows * cs.vocab, -4.0f, 4.0f), dloss = randoms(dloss_n, 0.1f, 2.0f);
    const Ints labels = random_ints(cs.rows, 0, static_cast<int>(cs.vocab) - 1);
    Floats loss = randoms(samples + 1), dlogits = randoms(cs.rows * cs.vocab + 1);
    Dev<float> glogits(logits), gdloss(dloss), gloss(loss), gdlogits(dlogits);
    Dev<std::int32_t> glabels(labels);
    cpu().cross_entropy_forward(logits.data(), labels.data(), loss.data(), cs.rows, cs.vocab, cs.per_sample);
    cu::cross_entropy_forward(ctx(), glogits.get(), glabels.get(), gloss.get(), cs.rows, cs.vocab, cs.per_sample);
    compare("cross_entropy_forward", what, loss, gloss, kRow);
    cpu().cross_entropy_backward(logits.data(), labels.data(), dloss.data(), dlogits.data(), cs.rows, cs.vocab,
                                 cs.per_sample);
    cu::cross_entropy_backward(ctx(), glogits.get(), glabels.get(), gdloss.get(), gdlogits.get(), cs.rows, cs.vocab,
                               cs.per_sample);
    compare("cross_entropy_backward", what, dlogits, gdlogits, kRow);
  }
}

BOOST_AUTO_TEST_CASE(out_of_range_labels_give_the_cpu_message) {
  for (std::int64_t vocab : {7, 2000}) {  // the warp kernels and the block kernels
    const std::int64_t rows = 12, per_sample = 4;
    const Floats logits = randoms(rows * vocab), dloss = randoms(rows / per_sample);
    Floats loss(3), dlogits(static_cast<std::size_t>(rows * vocab));
    Dev<float> glogits(logits), gdloss(dloss), gloss(loss), gdlogits(dlogits);
    for (auto [bad_row, bad_value] : {std::pair<int, int>{5, static_cast<int>(vocab)}, {0, -1}, {11, 1000000}}) {
      Ints labels = random_ints(rows, 0, static_cast<int>(vocab) - 1);
      labels[bad_row] = bad_value;
      if (bad_row + 1 < rows) labels[rows - 1] = -5;  // a second bad label further on: the first one is named
      Dev<std::int32_t> glabels(labels);
      const std::string want_fwd = error_of(
          [&] { cpu().cross_entropy_forward(logits.data(), labels.data(), loss.data(), rows, vocab, per_sample); });
      BOOST_TEST(want_fwd != "(no error)");
      BOOST_TEST(error_of([&] {
                   cu::cross_entropy_forward(ctx(), glogits.get(), glabels.get(), gloss.get(), rows, vocab,
                                             per_sample);
                 }) == want_fwd);
      const std::string want_bwd = error_of([&] {
        cpu().cross_entropy_backward(logits.data(), labels.data(), dloss.data(), dlogits.data(), rows, vocab,
                                     per_sample);
      });
      BOOST_TEST(want_bwd != "(no error)");
      BOOST_TEST(error_of([&] {
                   cu::cross_entropy_backward(ctx(), glogits.get(), glabels.get(), gdloss.get(), gdlogits.get(), rows,
                                              vocab, per_sample);
                 }) == want_bwd);
    }
  }
}

BOOST_AUTO_TEST_CASE(mse_forward_and_backward) {
  // A warp per sample up to 8192 elements, a block beyond; an empty sample (loss 0).
  for (auto [batch, per] :
       {std::array<std::int64_t, 2>{0, 4}, {1, 1}, {3, 37}, {4, 4097}, {16, 10}, {2, 9000}, {3, 0}}) {
    const std::string what = dims({batch, per});
    const Floats x = randoms(batch * per), t = randoms(batch * per), dloss = randoms(batch, 0.1f, 2.0f);
    Floats loss = randoms(batch + 1), dx = randoms(batch * per + 1);
    Dev<float> gx(x), gt(t), gdloss(dloss), gloss(loss), gdx(dx);
    cpu().mse_forward(x.data(), t.data(), loss.data(), batch, per);
    cu::mse_forward(ctx(), gx.get(), gt.get(), gloss.get(), batch, per);
    compare("mse_forward", what, loss, gloss, kRow);
    cpu().mse_backward(x.data(), t.data(), dloss.data(), dx.data(), batch, per);
    cu::mse_backward(ctx(), gx.get(), gt.get(), gdloss.get(), gdx.get(), batch, per);
    compare("mse_backward", what, dx, gdx, kRow);
  }
}

// ---------------------------------------------------------------- flash attention

// Against the CPU's materialised attention: the output and the input gradients, plus the saved state's log-sum-exp
// against a double-precision reference. Head sizes 16, 64 and 80 take the 32-, 64- and 128-wide register tiles; T
// crosses the 32-key and 64-row tiles at odd points (T = 130: three row blocks, the last with 2 live rows).
BOOST_AUTO_TEST_CASE(flash_attention_matches_the_materialised_attention) {
  struct Case {
    std::int64_t batch, seq, heads, head_dim;
  };
  const Case cases[] = {{2, 64, 4, 16}, {2, 37, 3, 16}, {1, 1, 2, 8}, {1, 130, 2, 64}, {2, 97, 2, 80}};
  for (const Case& cs : cases) {
    const std::int64_t B = cs.batch, T = cs.seq, H = cs.heads, D = cs.head_dim, C = H * D;
    const std::string what = "B" + std::to_string(B) + " T" + std::to_string(T) + " H" + std::to_string(H) + " D" +
                             std::to_string(D);
    const Floats qkv = randoms(B * T * 3 * C, -2.0f, 2.0f);
    Floats out(static_cast<std::size_t>(B * T * C)), probs(static_cast<std::size_t>(B * H * T * T));
    cpu().attention_forward(qkv.data(), out.data(), probs.data(), B, T, H, D);
    Dev<float> gqkv(qkv), gout(Floats(out.size(), -1.0f));
    Dev<float> state(Floats(static_cast<std::size_t>(B * H * T * (D + 1)), -1.0f));
    cu::flash_attention_forward(ctx(), gqkv.get(), gout.get(), state.get(), B, T, H, D);
    compare("flash_attention_forward (out)", what, out, gout, kAttention);

    // Each state row: the row's output, then its log-sum-exp.
    compare("flash_attention_forward (state)", what, flash_state_reference(qkv, out, B, T, H, D), state, kAttention);

    const Floats dout = randoms(B * T * C);
    Floats dqkv(qkv.size());
    cpu().attention_backward(dout.data(), qkv.data(), probs.data(), dqkv.data(), B, T, H, D);
    Dev<float> gdout(dout), gdqkv(Floats(qkv.size(), -1.0f));
    cu::flash_attention_backward(ctx(), gdout.get(), gqkv.get(), state.get(), gdqkv.get(), B, T, H, D);
    compare("flash_attention_backward", what, dqkv, gdqkv, kAttentionBackward);
  }
  BOOST_TEST(error_of([&] {
               Dev<float> t(Floats(1));
               cu::flash_attention_forward(ctx(), t.get(), t.get(), t.get(), 1, 1, 1, 129);
             }) == "flash_attention_forward: head dimension 129 is larger than the flash kernels' 128");
}

// ---------------------------------------------------------------- mixed precision: the native bfloat16 kernels

namespace {

using In = Backend::In;
using Out = Backend::Out;
constexpr libpipe::DType kBf16 = libpipe::DType::bfloat16;

Halves random_halves(std::int64_t n, float lo = -1.0f, float hi = 1.0f) { return to_halves(randoms(n, lo, hi)); }


}  // namespace

// Each native kernel against the CPU backend's typed method (on Float32Views: widen, compute in fp32,
// round once), which is what the CPU runs with --dtype bf16.
BOOST_AUTO_TEST_CASE(bf16_elementwise_and_epilogues_match_the_widening_path) {
  for (std::int64_t n : kSizes) {
    const std::string what = dims({n});
    const Halves a = random_halves(n, -3.0f, 3.0f), b = random_halves(n);
    Halves y(static_cast<std::size_t>(n) + 1, 0xABCD);
    Dev<std::uint16_t> ga(a), gb(b), gy(y);
    cpu().add(In{a.data(), kBf16}, In{b.data(), kBf16}, Out{y.data(), kBf16}, n);
    cu::add(ctx(), ga.get(), gb.get(), gy.get(), n);
    BOOST_TEST((gy.download() == y), "add (bf16) " << what);

    Halves acc = a;
    Dev<std::uint16_t> gacc(a);
    cpu().accumulate(Out{acc.data(), kBf16}, In{b.data(), kBf16}, n);
    cu::accumulate(ctx(), gacc.get(), gb.get(), n);
    BOOST_TEST((gacc.download() == acc), "accumulate (bf16) " << what);

    Halves dx(static_cast<std::size_t>(n));
    Dev<std::uint16_t> gdx(dx);
    cpu().gelu_backward(In{a.data(), kBf16}, In{b.data(), kBf16}, Out{dx.data(), kBf16}, n);
    cu::gelu_backward(ctx(), ga.get(), gb.get(), gdx.get(), n);
    compare("gelu_backward (bf16)", what, from_halves(dx), from_halves(gdx.download()), kBf16Out);
  }
  for (auto [rows, cols] : kRowShapes) {
    const std::string what = dims({rows, cols});
    const Floats h = randoms(rows * cols, -3.0f, 3.0f);
    const Halves bias = random_halves(cols);
    Halves y(static_cast<std::size_t>(rows * cols)), pre(y.size()), act(y.size());
    Dev<float> gh(h);
    Dev<std::uint16_t> gbias(bias), gy(y), gpre(pre), gact(act);
    cpu().bias_epilogue(h.data(), In{bias.data(), kBf16}, Out{y.data(), kBf16}, rows, cols);
    cu::bias_epilogue(ctx(), gh.get(), gbias.get(), gy.get(), rows, cols);
    BOOST_TEST((gy.download() == y), "bias_epilogue (bf16) " << what);  // h + b rounded: one IEEE op each
    cpu().bias_gelu(h.data(), In{bias.data(), kBf16}, Out{pre.data(), kBf16}, Out{act.data(), kBf16}, rows,
                          cols);
    cu::bias_gelu(ctx(), gh.get(), gbias.get(), gpre.get(), gact.get(), rows, cols);
    BOOST_TEST((gpre.download() == pre), "bias_gelu (bf16, pre-activation) " << what);
    compare("bias_gelu (bf16)", what, from_halves(act), from_halves(gact.download()), kBf16Out);

    const Halves dy = random_halves(rows * cols);
    Floats db = randoms(cols);  // accumulates
    Dev<std::uint16_t> gdy(dy);
    Dev<float> gdb(db);
    cpu().bias_grad(In{dy.data(), kBf16}, db.data(), rows, cols);
    cu::bias_grad(ctx(), gdy.get(), gdb.get(), rows, cols);
    compare("bias_grad (bf16 dy)", what, db, gdb, kReduce);
  }
}

BOOST_AUTO_TEST_CASE(bf16_layernorm_matches_the_widening_path) {
  const float eps = 1e-5f;
  for (auto [rows, cols] : kRowShapes)
    for (std::int64_t off : {0, 1}) {  // offset 1: 2-byte aligned, the scalar path where cols % 4 == 0
      const std::string what = dims({rows, cols}) + "+" + std::to_string(off);
      const std::int64_t n = rows * cols + off, nc = cols + off;
      const Halves x = random_halves(n, 2.0f, 4.0f), w = random_halves(nc, 0.5f, 1.5f), b = random_halves(nc);
      Halves y(static_cast<std::size_t>(n));
      Floats mean(static_cast<std::size_t>(rows)), rstd(mean.size());
      Dev<std::uint16_t> gx(x), gw(w), gb(b), gy(y);
      Dev<float> gmean(mean), grstd(rstd);
      cpu().layernorm_forward(In{x.data() + off, kBf16}, In{w.data() + off, kBf16}, In{b.data() + off, kBf16},
                                    Out{y.data() + off, kBf16}, mean.data(), rstd.data(), rows, cols, eps);
      cu::layernorm_forward(ctx(), gx.get() + off, gw.get() + off, gb.get() + off, gy.get() + off, gmean.get(),
                            grstd.get(), rows, cols, eps);
      compare("layernorm_forward (bf16 y)", what, from_halves(y), from_halves(gy.download()), kBf16Out);
      compare("layernorm_forward (bf16: mean)", what, mean, gmean, kRow);

      const Halves dy = random_halves(n);
      Halves dx(static_cast<std::size_t>(n));
      Dev<std::uint16_t> gdy(dy), gdx(dx);
      Dev<float> cmean(mean), crstd(rstd);
      cpu().layernorm_backward_input(In{dy.data() + off, kBf16}, In{x.data() + off, kBf16},
                                           In{w.data() + off, kBf16}, mean.data(), rstd.data(),
                                           Out{dx.data() + off, kBf16}, rows, cols);
      cu::layernorm_backward_input(ctx(), gdy.get() + off, gx.get() + off, gw.get() + off, cmean.get(), crstd.get(),
                                   gdx.get() + off, rows, cols);
      // As in layernorm_forward_and_backward: with one column the result is rounding noise of terms ~ rstd |dy w|.
      compare("layernorm_backward_input (bf16)", what, from_halves(dx), from_halves(gdx.download()),
              cols == 1 ? Tol{8e-3, 1.0} : kBf16Out, cols == 1 ? 400.0 : 0.0);
      Floats dw = randoms(cols), dbias = randoms(cols);
      Dev<float> gdw(dw), gdbias(dbias);
      cpu().layernorm_backward_weight(In{dy.data() + off, kBf16}, In{x.data() + off, kBf16}, mean.data(),
                                            rstd.data(), dw.data(), dbias.data(), rows, cols);
      cu::layernorm_backward_weight(ctx(), gdy.get() + off, gx.get() + off, cmean.get(), crstd.get(), gdw.get(),
                                    gdbias.get(), rows, cols);
      compare("layernorm_backward_weight (bf16: dweight)", what, dw, gdw, kReduce);
      compare("layernorm_backward_weight (bf16: dbias)", what, dbias, gdbias, kReduce);
    }
}

BOOST_AUTO_TEST_CASE(bf16_losses_attention_match_the_widening_path) {
  // Cross-entropy over a warp's rows (vocab <= 1024) and a block's.
  for (auto [rows, vocab] : {std::array<std::int64_t, 2>{6, 37}, {4, 1500}}) {
    const std::string what = dims({rows, vocab});
    const Halves logits = random_halves(rows * vocab, -4.0f, 4.0f);
    const Ints labels = random_ints(rows, 0, static_cast<int>(vocab) - 1);
    const Floats dloss = randoms(2, 0.1f, 2.0f);
    Floats loss(2);
    Halves dlogits(logits.size());
    Dev<std::uint16_t> glogits(logits), gdlogits(dlogits);
    Dev<std::int32_t> glabels(labels);
    Dev<float> gloss(loss), gdloss(dloss);
    cpu().cross_entropy_forward(In{logits.data(), kBf16}, labels.data(), loss.data(), rows, vocab, rows / 2);
    cu::cross_entropy_forward(ctx(), glogits.get(), glabels.get(), gloss.get(), rows, vocab, rows / 2);
    compare("cross_entropy_forward (bf16 logits)", what, loss, gloss, kRow);
    cpu().cross_entropy_backward(In{logits.data(), kBf16}, labels.data(), dloss.data(),
                                       Out{dlogits.data(), kBf16}, rows, vocab, rows / 2);
    cu::cross_entropy_backward(ctx(), glogits.get(), glabels.get(), gdloss.get(), gdlogits.get(), rows, vocab,
                               rows / 2);
    compare("cross_entropy_backward (bf16)", what, from_halves(dlogits), from_halves(gdlogits.download()), kBf16Out);
  }
  // Attention: the permutes read and write bfloat16, the softmax rounds the saved probabilities, backward widens
  // them; inside, the same fp32 math as the CPU's.
  const std::int64_t B = 2, T = 37, H = 2, D = 16, C = H * D;
  const Halves qkv = random_halves(B * T * 3 * C);
  Halves out(static_cast<std::size_t>(B * T * C)), probs(static_cast<std::size_t>(B * H * T * T));
  Dev<std::uint16_t> gqkv(qkv), gout(out), gprobs(probs);
  cpu().attention_forward(In{qkv.data(), kBf16}, Out{out.data(), kBf16}, Out{probs.data(), kBf16}, B, T, H, D);
  cu::attention_forward(ctx(), gqkv.get(), gout.get(), gprobs.get(), B, T, H, D);
  compare("attention_forward (bf16 out)", "B2 T37 H2 D16", from_halves(out), from_halves(gout.download()), kBf16Out);
  compare("attention_forward (bf16 probs)", "B2 T37 H2 D16", from_halves(probs), from_halves(gprobs.download()), kBf16Out);
  const Halves dout = random_halves(B * T * C);
  Halves dqkv(qkv.size());
  Dev<std::uint16_t> gdout(dout), gdqkv(dqkv), cprobs(probs);
  cpu().attention_backward(In{dout.data(), kBf16}, In{qkv.data(), kBf16}, In{probs.data(), kBf16},
                                 Out{dqkv.data(), kBf16}, B, T, H, D);
  cu::attention_backward(ctx(), gdout.get(), gqkv.get(), cprobs.get(), gdqkv.get(), B, T, H, D);
  compare("attention_backward (bf16)", "B2 T37 H2 D16", from_halves(dqkv), from_halves(gdqkv.download()), kBf16Out);
}

// ---------------------------------------------------------------- rmsnorm.cu, rotary.cu, swiglu.cu (Llama's ops)

BOOST_AUTO_TEST_CASE(rms_norm_forward_and_backward) {
  const float eps = 1e-5f;
  for (auto [rows, cols] : kRowShapes) {
    const std::string what = dims({rows, cols});
    const Floats x = randoms(rows * cols, -2.0f, 2.0f), w = randoms(cols, 0.5f, 1.5f);
    Floats y = randoms(rows * cols), rstd = randoms(rows);
    Dev<float> gx(x), gw(w), gy(y), grstd(rstd);
    cpu().rms_norm_forward(In{x.data(), libpipe::DType::float32}, In{w.data(), libpipe::DType::float32},
                           Out{y.data(), libpipe::DType::float32}, rstd.data(), rows, cols, eps);
    cu::rms_norm_forward(ctx(), gx.get(), gw.get(), gy.get(), grstd.get(), rows, cols, eps);
    compare("rms_norm_forward (y)", what, y, gy, kRow);
    compare("rms_norm_forward (rstd)", what, rstd, grstd, kRow);

    // The backward ops get the CPU's rstd on both sides, so that each op is compared on its own.
    Dev<float> crstd(rstd);
    const Floats dy = randoms(rows * cols);
    Floats dx = randoms(rows * cols);
    Dev<float> gdy(dy), gdx(dx);
    cpu().rms_norm_backward_input(In{dy.data(), libpipe::DType::float32}, In{x.data(), libpipe::DType::float32},
                                  In{w.data(), libpipe::DType::float32}, rstd.data(),
                                  Out{dx.data(), libpipe::DType::float32}, rows, cols);
    cu::rms_norm_backward_input(ctx(), gdy.get(), gx.get(), gw.get(), crstd.get(), gdx.get(), rows, cols);
    // dx = rstd (g - x rstd^2 mean(g x)) cancels (to eps / (x^2 + eps) of its terms with one column): the floor
    // follows the terms, rstd |dy w|.
    double terms = 0;
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c)
        terms = std::max(terms, std::fabs(static_cast<double>(rstd[r]) * dy[r * cols + c] * w[c]));
    compare("rms_norm_backward_input", what, dx, gdx, kRow, terms);

    Floats dw = randoms(cols);  // accumulates
    Dev<float> gdw(dw);
    cpu().rms_norm_backward_weight(In{dy.data(), libpipe::DType::float32}, In{x.data(), libpipe::DType::float32},
                                   rstd.data(), dw.data(), rows, cols);
    cu::rms_norm_backward_weight(ctx(), gdy.get(), gx.get(), crstd.get(), gdw.get(), rows, cols);
    compare("rms_norm_backward_weight", what, dw, gdw, kReduce);

    // bfloat16 arrays: the native kernels against the CPU's widening path.
    const Halves hx = random_halves(rows * cols, -2.0f, 2.0f), hw = random_halves(cols, 0.5f, 1.5f);
    const Halves hdy = random_halves(rows * cols);
    Halves hy(static_cast<std::size_t>(rows * cols)), hdx(hy.size());
    Floats hrstd(static_cast<std::size_t>(rows)), hdw(static_cast<std::size_t>(cols), 0.0f);
    Dev<std::uint16_t> ghx(hx), ghw(hw), ghy(hy), ghdy(hdy), ghdx(hdx);
    Dev<float> ghrstd(hrstd), ghdw(hdw);
    cpu().rms_norm_forward(In{hx.data(), kBf16}, In{hw.data(), kBf16}, Out{hy.data(), kBf16}, hrstd.data(), rows,
                           cols, eps);
    cu::rms_norm_forward(ctx(), ghx.get(), ghw.get(), ghy.get(), ghrstd.get(), rows, cols, eps);
    compare("rms_norm_forward (bf16 y)", what, from_halves(hy), from_halves(ghy.download()), kBf16Out);
    Dev<float> chrstd(hrstd);
    cpu().rms_norm_backward_input(In{hdy.data(), kBf16}, In{hx.data(), kBf16}, In{hw.data(), kBf16}, hrstd.data(),
                                  Out{hdx.data(), kBf16}, rows, cols);
    cu::rms_norm_backward_input(ctx(), ghdy.get(), ghx.get(), ghw.get(), chrstd.get(), ghdx.get(), rows, cols);
    compare("rms_norm_backward_input (bf16)", what, from_halves(hdx), from_halves(ghdx.download()),
            cols == 1 ? Tol{8e-3, 1.0} : kBf16Out);
    cpu().rms_norm_backward_weight(In{hdy.data(), kBf16}, In{hx.data(), kBf16}, hrstd.data(), hdw.data(), rows,
                                   cols);
    cu::rms_norm_backward_weight(ctx(), ghdy.get(), ghx.get(), chrstd.get(), ghdw.get(), rows, cols);
    compare("rms_norm_backward_weight (bf16 dy)", what, hdw, ghdw, kReduce);
  }
}

BOOST_AUTO_TEST_CASE(rotary_gqa_forward_and_backward) {
  struct Case {
    std::int64_t batch, seq, heads, kv_heads, head_dim;
    float theta;
  };
  // Multi-head (KV = H), grouped, multi-query (KV = 1); head dimension 2 (one pair), odd pair counts, Llama's 64
  // with theta 500,000, and enough rows that grid-stride loops go round.
  const Case cases[] = {{1, 1, 1, 1, 2, 10000.0f}, {2, 5, 4, 2, 6, 10000.0f}, {2, 37, 4, 1, 8, 10000.0f},
                        {1, 70, 8, 2, 64, 500000.0f}, {3, 9, 6, 6, 10, 100.0f}};
  for (const Case& c : cases) {
    const std::string what = "B" + std::to_string(c.batch) + " T" + std::to_string(c.seq) + " H" +
                             std::to_string(c.heads) + " KV" + std::to_string(c.kv_heads) + " D" +
                             std::to_string(c.head_dim);
    const std::int64_t rows = c.batch * c.seq, in = (c.heads + 2 * c.kv_heads) * c.head_dim,
                       qkv_n = rows * 3 * c.heads * c.head_dim;
    const Floats x = randoms(rows * in);
    Floats qkv = randoms(qkv_n);
    Dev<float> gx(x), gqkv(qkv);
    cpu().rotary_gqa_forward(In{x.data(), libpipe::DType::float32}, Out{qkv.data(), libpipe::DType::float32},
                             c.batch, c.seq, c.heads, c.kv_heads, c.head_dim, c.theta);
    cu::rotary_gqa_forward(ctx(), gx.get(), gqkv.get(), c.batch, c.seq, c.heads, c.kv_heads, c.head_dim, c.theta);
    compare("rotary_gqa_forward", what, qkv, gqkv, kElementwise);

    const Floats dqkv = randoms(qkv_n);
    Floats dx = randoms(rows * in);
    Dev<float> gdqkv(dqkv), gdx(dx);
    cpu().rotary_gqa_backward(In{dqkv.data(), libpipe::DType::float32}, Out{dx.data(), libpipe::DType::float32},
                              c.batch, c.seq, c.heads, c.kv_heads, c.head_dim, c.theta);
    cu::rotary_gqa_backward(ctx(), gdqkv.get(), gdx.get(), c.batch, c.seq, c.heads, c.kv_heads, c.head_dim, c.theta);
    compare("rotary_gqa_backward", what, dx, gdx, kRow);

    const Halves hx = to_halves(x), hdqkv = to_halves(dqkv);
    Halves hqkv(static_cast<std::size_t>(qkv_n)), hdx(static_cast<std::size_t>(rows * in));
    Dev<std::uint16_t> ghx(hx), ghqkv(hqkv), ghdqkv(hdqkv), ghdx(hdx);
    cpu().rotary_gqa_forward(In{hx.data(), kBf16}, Out{hqkv.data(), kBf16}, c.batch, c.seq, c.heads, c.kv_heads,
                             c.head_dim, c.theta);
    cu::rotary_gqa_forward(ctx(), ghx.get(), ghqkv.get(), c.batch, c.seq, c.heads, c.kv_heads, c.head_dim, c.theta);
    compare("rotary_gqa_forward (bf16)", what, from_halves(hqkv), from_halves(ghqkv.download()), kBf16Out);
    cpu().rotary_gqa_backward(In{hdqkv.data(), kBf16}, Out{hdx.data(), kBf16}, c.batch, c.seq, c.heads, c.kv_heads,
                              c.head_dim, c.theta);
    cu::rotary_gqa_backward(ctx(), ghdqkv.get(), ghdx.get(), c.batch, c.seq, c.heads, c.kv_heads, c.head_dim,
                            c.theta);
    compare("rotary_gqa_backward (bf16)", what, from_halves(hdx), from_halves(ghdx.download()), kBf16Out);
  }
}

BOOST_AUTO_TEST_CASE(swiglu_forward_and_backward) {
  for (auto [rows, cols] : kRowShapes) {
    const std::string what = dims({rows, cols});
    const Floats h = randoms(rows * 2 * cols, -4.0f, 4.0f), dy = randoms(rows * cols);
    Floats y = randoms(rows * cols), dh = randoms(rows * 2 * cols);
    Dev<float> gh(h), gdy(dy), gy(y), gdh(dh);
    cpu().swiglu_forward(In{h.data(), libpipe::DType::float32}, Out{y.data(), libpipe::DType::float32}, rows, cols);
    cu::swiglu_forward(ctx(), gh.get(), gy.get(), rows, cols);
    compare("swiglu_forward", what, y, gy, kElementwise);
    cpu().swiglu_backward(In{h.data(), libpipe::DType::float32}, In{dy.data(), libpipe::DType::float32},
                          Out{dh.data(), libpipe::DType::float32}, rows, cols);
    cu::swiglu_backward(ctx(), gh.get(), gdy.get(), gdh.get(), rows, cols);
    compare("swiglu_backward", what, dh, gdh, kElementwise);

    const Halves hh = to_halves(h), hdy = to_halves(dy);
    Halves hy(static_cast<std::size_t>(rows * cols)), hdh(hh.size());
    Dev<std::uint16_t> ghh(hh), ghdy(hdy), ghy(hy), ghdh(hdh);
    cpu().swiglu_forward(In{hh.data(), kBf16}, Out{hy.data(), kBf16}, rows, cols);
    cu::swiglu_forward(ctx(), ghh.get(), ghy.get(), rows, cols);
    compare("swiglu_forward (bf16)", what, from_halves(hy), from_halves(ghy.download()), kBf16Out);
    cpu().swiglu_backward(In{hh.data(), kBf16}, In{hdy.data(), kBf16}, Out{hdh.data(), kBf16}, rows, cols);
    cu::swiglu_backward(ctx(), ghh.get(), ghdy.get(), ghdh.get(), rows, cols);
    compare("swiglu_backward (bf16)", what, from_halves(hdh), from_halves(ghdh.download()), kBf16Out);
  }
}
