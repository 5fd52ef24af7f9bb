// The CPU backend's GEMMs on oneDNN (see cpu_gemm.hpp).
//
// Each shape (dimensions, transposes, leading dimensions, batch strides, dtypes, alpha, beta, threads) gets a plan
// once, kept in a small cache: a oneDNN matmul primitive where oneDNN has a brgemm kernel for it and the product is
// narrow (n < kBrgemmNarrowerThan: every GEMM of gpt-tiny's linear layers), else plain dnnl_sgemm, which runs the same
// JIT GEMM kernel that a non-brgemm primitive would (strided operands, as attention's blocks read from qkv; wide
// products, where brgemm falls behind) without the primitive's per-call cost. gpt-tiny's 15 linear GEMMs (rows 1024,
// widths 128..512), one core of the 2-vCPU Xeon of share/doc/PERFORMANCE.md (AVX-512, loaded), best mean of 10 calls
// over 21 rounds, an ad-hoc program: matmul 10.8 ms, dnnl_sgemm 12.2 ms, OpenBLAS 0.3.21 (SkylakeX core) 14.1 ms; the
// primitive was the faster on 14 of the 15. The first draft of this file measured creating a primitive at 0.2-0.5 ms,
// and strided batches: a 3-D matmul where its kernel is brgemm (64 heads of 64x64x32, dense: 143 us against 250 us for
// a loop of 2-D primitives and 339 us for a loop of dnnl_sgemm), else a loop of dnnl_sgemm, as fast as oneDNN's batched
// JIT GEMM (strided: 397-411 us); those figures were not re-measured.
//
// Below AVX-512 (no brgemm in oneDNN 2.6) the products with A transposed, the weight gradients dW = dY^T X, run on
// OpenBLAS where it knows the CPU (transposed_a_on_openblas): on an AMD EPYC (AVX2) oneDNN's sgemm does them at
// 62-86 GFLOP/s and OpenBLAS's Zen kernel at 91-93, while oneDNN leads on the other two passes (94-98 against
// 82-90; build/bin/pipe-bench ops, gpt-tiny's shapes). That holds on one thread: with more, the two libraries'
// thread pools contend, and every product runs on oneDNN. The choice depends on the shape, the machine and the
// thread count only.
//
// Threads: set_cpu_threads' count, applied per calling thread before each GEMM (oneDNN's OpenMP runtime reads
// omp_get_max_threads()); the count is part of a plan's key, since a primitive's blocking is chosen for it.
//
// Results depend on the shape and the thread count only (the kernel and its blocking are chosen from them), not
// on where the operands lie in memory: the same micro-batch gives the same bits on any stage count (checked by
// unit.cpu_gemm at several alignments, 1 and 2 threads).
#include "cpu_gemm.hpp"

#include <cblas.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "cpu_threads.hpp"
#include "pipe/backend.hpp"
#include "pipe/bfloat16.hpp"
#include "pipe/error.hpp"

#if DNNL_VERSION_MAJOR != 2
#error "cpu_gemm.cpp uses oneDNN 2.x's primitive API (operation descriptors, output scales): Debian 12's libdnnl-dev"
#endif

namespace libpipe::cpu {
namespace {

// ---- oneDNN's engine, a stream and scratch memory per thread

dnnl::engine& engine() {
  static dnnl::engine* e = new dnnl::engine(dnnl::engine::kind::cpu, 0);  // never destroyed, as the backend
  return *e;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

// The primitives take their scratch memory from the caller (scratchpad_mode::user), so that threads running the
// same primitive at once never share it; each thread keeps one buffer, grown to the largest need.
void* scratch(std::size_t bytes) {
  struct Buffer {
    void* p = nullptr;
    std::size_t size = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buffer;
  if (bytes > buffer.size) {
    std::free(buffer.p);
    buffer.size = (bytes + 4095) / 4096 * 4096;
    buffer.p = std::aligned_alloc(4096, buffer.size);
    if (buffer.p == nullptr) {
      buffer.size = 0;
      throw Error("gemm: cannot allocate " + std::to_string(bytes) + " bytes of oneDNN scratch memory");
    }
  }
  return buffer.p;
}

// ---- plans

using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

struct Key {
  bool trans_a, trans_b;
  std::int64_t m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, batch;
  std::uint32_t alpha, beta;
  DType ab_type, c_type;
  int threads;

  auto tied() const {
    return std::tie(trans_a, trans_b, m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, batch, alpha, beta, ab_type,
                    c_type, threads);
  }
  bool operator==(const Key& o) const { return tied() == o.tied(); }
};

struct KeyHash {
  std::size_t operator()(const Key& key) const {
    std::uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](std::uint64_t v) { h = (h ^ v) * 1099511628211ULL; };
    for (std::int64_t v :
         {key.m, key.n, key.k, key.lda, key.ldb, key.ldc, key.stride_a, key.stride_b, key.stride_c, key.batch})
      mix(static_cast<std::uint64_t>(v));
    mix(key.alpha);
    mix(key.beta);
    mix(static_cast<std::uint64_t>(key.trans_a) | static_cast<std::uint64_t>(key.trans_b) << 1 |
        static_cast<std::uint64_t>(key.ab_type) << 2 | static_cast<std::uint64_t>(key.c_type) << 10 |
        static_cast<std::uint64_t>(key.threads) << 18);
    return static_cast<std::size_t>(h);
  }
};

struct Plan {
  bool primitive = false;  // false: dnnl_sgemm per product
  dnnl::matmul matmul;
  dnnl::memory::desc a, b, c, scratch;
  std::size_t scratch_bytes = 0;
};

dt dnnl_type(DType t) { return t == DType::bfloat16 ? dt::bf16 : dt::f32; }

// Row-major op(X) [rows, cols] of a matrix stored [rows, cols] (or [cols, rows] when transposed) at leading
// dimension ld, the products of a batch `stride` elements apart.
dnnl::memory::desc matrix(std::int64_t batch, std::int64_t rows, std::int64_t cols, bool trans, std::int64_t ld,
                          std::int64_t stride, dt type) {
  const dims strides2 = trans ? dims{1, ld} : dims{ld, 1};
  if (batch == 1) return dnnl::memory::desc({rows, cols}, type, strides2);
  return dnnl::memory::desc({batch, rows, cols}, type, dims{stride, strides2[0], strides2[1]});
}

// float32 products with n (C's columns) at least this wide run on dnnl_sgemm even where brgemm would take them.
// oneDNN 2.6's f32 brgemm leads on narrow products and falls far behind on wide ones, most of all where B is read
// untransposed (rows of B n floats apart). One core of the Ice Lake Xeon of share/doc/PERFORMANCE.md, GFLOP/s of
// brgemm / dnnl_sgemm, best of 3 calls, an ad-hoc program (2026-12-07), m x n x k:
//   n <= 512 (all of gpt-tiny, gpt-small's narrow half): brgemm ahead by 1-56%, e.g. TN 2048x512x4096 125 / 80;
//   n = 640 and 704: brgemm ahead by 1-22%;
//   n = 768 (gpt2-124m's width): NN 1024x768x3072 92 / 116, TN 3072x768x1024 109 / 141, TN 50257x768x1024 (the
//     LM head's weight gradient) 89 / 152, NN 1024x768x50257 75 / 117; NT 1024x768x768 112 / 110;
//   n >= 2048: NN 1024x3072x768 51 / 116, TN 768x3072x1024 49 / 147, NT 1024x50257x768 141 / 152; gpt-small's
//     n = 2048 products 3-7% behind.
// Where the rule errs it costs less: TN 256x1024x2048 136 / 127 (a width-256 model's). Below AVX-512 there is no
// brgemm and every float32 product is dnnl_sgemm's anyway. The rule is a function of the shape only, so that every
// rank makes the same choice: the same bits on any stage count.
constexpr std::int64_t kBrgemmNarrowerThan = 768;

std::shared_ptr<const Plan> make_plan(const Key& key) {
  auto plan = std::make_shared<Plan>();
  plan->a = matrix(key.batch, key.m, key.k, key.trans_a, key.lda, key.stride_a, dnnl_type(key.ab_type));
  plan->b = matrix(key.batch, key.k, key.n, key.trans_b, key.ldb, key.stride_b, dnnl_type(key.ab_type));
  plan->c = matrix(key.batch, key.m, key.n, false, key.ldc, key.stride_c, dnnl_type(key.c_type));
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  float alpha, beta;
  std::memcpy(&alpha, &key.alpha, sizeof alpha);
  std::memcpy(&beta, &key.beta, sizeof beta);
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(plan->a, plan->b, plan->c), attr, engine());
  // bfloat16 has no dnnl_sgemm to fall back on; float32 takes the primitive only where its kernel is brgemm and
  // the product is narrow enough for it to pay.
  plan->primitive = key.ab_type == DType::bfloat16 ||
                    (std::strncmp(pd.impl_info_str(), "brg", 3) == 0 && key.n < kBrgemmNarrowerThan);
  if (plan->primitive) {
    plan->matmul = dnnl::matmul(pd);
    plan->scratch = pd.scratchpad_desc();
    plan->scratch_bytes = plan->scratch.get_size();
  }
  return plan;
}

// The plan of a shape: made once per shape and thread count. The cache is bounded (a job runs a few dozen
// shapes; one that keeps changing its shapes starts over every 512).
std::shared_ptr<const Plan> plan_for(const Key& key) {
  static std::mutex mutex;
  static auto* cache = new std::unordered_map<Key, std::shared_ptr<const Plan>, KeyHash>();
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = cache->find(key);
    if (it != cache->end()) return it->second;
  }
  std::shared_ptr<const Plan> plan = make_plan(key);  // outside the lock: primitives take a while to create
  std::lock_guard<std::mutex> lock(mutex);
  if (cache->size() >= 512) cache->clear();
  return cache->emplace(key, plan).first->second;
}

// C = beta * C over an m x n block (k = 0: the product is empty).
void scale_block(const GemmCall& g, void* c) {
  for (std::int64_t i = 0; i < g.m; ++i) {
    if (g.c_type == DType::float32) {
      float* row = static_cast<float*>(c) + i * g.ldc;
      for (std::int64_t j = 0; j < g.n; ++j) row[j] = g.beta == 0.0f ? 0.0f : row[j] * g.beta;
    } else {
      std::uint16_t* row = static_cast<std::uint16_t*>(c) + i * g.ldc;
      for (std::int64_t j = 0; j < g.n; ++j)
        row[j] = float_to_bf16(g.beta == 0.0f ? 0.0f : bf16_to_float(row[j]) * g.beta);
    }
  }
}

std::size_t element_size(DType t) { return t == DType::bfloat16 ? 2 : 4; }

}  // namespace

void onednn_gemm(const GemmCall& g) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  const std::size_t c_size = element_size(g.c_type);
  if (g.k == 0) {
    for (std::int64_t z = 0; z < g.batch; ++z) scale_block(g, static_cast<char*>(g.c) + z * g.stride_c * c_size);
    return;
  }
  const int threads = cpu_threads();
  use_threads(threads);
  // A batch whose products share an operand (stride 0) runs as products one by one: oneDNN's batches have
  // their own memory each.
  const bool batched = g.batch > 1 && g.stride_a != 0 && g.stride_b != 0 && g.stride_c != 0;
  const Key key{g.trans_a,
                g.trans_b,
                g.m,
                g.n,
                g.k,
                g.lda,
                g.ldb,
                g.ldc,
                batched ? g.stride_a : 0,
                batched ? g.stride_b : 0,
                batched ? g.stride_c : 0,
                batched ? g.batch : 1,
                bits_of(g.alpha),
                bits_of(g.beta),
                g.ab_type,
                g.c_type,
                threads};
  const std::shared_ptr<const Plan> plan = plan_for(key);
  const std::size_t ab_size = element_size(g.ab_type);
  // One call of a batched primitive, else one dnnl_sgemm (or 2-D primitive) per product.
  const std::int64_t calls = batched && plan->primitive ? 1 : g.batch;
  for (std::int64_t z = 0; z < calls; ++z) {
    const char* a = static_cast<const char*>(g.a) + z * g.stride_a * ab_size;
    const char* b = static_cast<const char*>(g.b) + z * g.stride_b * ab_size;
    char* c = static_cast<char*>(g.c) + z * g.stride_c * c_size;
    if (!plan->primitive) {  // float32 only
      const dnnl_status_t status = dnnl_sgemm(
          g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.m, g.n, g.k, g.alpha, reinterpret_cast<const float*>(a),
          g.lda, reinterpret_cast<const float*>(b), g.ldb, g.beta, reinterpret_cast<float*>(c), g.ldc);
      if (status != dnnl_success)
        throw Error("gemm: dnnl_sgemm failed with status " + std::to_string(static_cast<int>(status)));
      continue;
    }
    dnnl::engine& eng = engine();
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, dnnl::memory(plan->a, eng, const_cast<char*>(a))},
                                               {DNNL_ARG_WEIGHTS, dnnl::memory(plan->b, eng, const_cast<char*>(b))},
                                               {DNNL_ARG_DST, dnnl::memory(plan->c, eng, c)}};
    if (plan->scratch_bytes > 0)
      args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(plan->scratch, eng, scratch(plan->scratch_bytes)));
    dnnl::stream& s = stream();
    plan->matmul.execute(s, args);
    s.wait();
  }
}

// ---- which library: oneDNN, or OpenBLAS for comparison

namespace {

// OpenBLAS's sgemm per product (its thread count is set_cpu_threads', see backend.cpp).
void openblas_gemm(const GemmCall& g) {
  if (g.ab_type != DType::float32 || g.c_type != DType::float32)
    throw Error("gemm: PIPE_CPU_GEMM=openblas runs float32 products only");
  for (std::int64_t z = 0; z < g.batch; ++z)
    cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans, g.trans_b ? CblasTrans : CblasNoTrans,
                static_cast<int>(g.m), static_cast<int>(g.n), static_cast<int>(g.k), g.alpha,
                static_cast<const float*>(g.a) + z * g.stride_a, static_cast<int>(g.lda),
                static_cast<const float*>(g.b) + z * g.stride_b, static_cast<int>(g.ldb), g.beta,
                static_cast<float*>(g.c) + z * g.stride_c, static_cast<int>(g.ldc));
}

}  // namespace

GemmLibrary gemm_library_in_use() {
  // A throw leaves the static unset, so every later use reports the same error.
  static const GemmLibrary lib = [] {
    const char* env = std::getenv("PIPE_CPU_GEMM");
    const std::string want = env == nullptr ? "" : env;
    if (want.empty() || want == "auto") return GemmLibrary::automatic;
    if (want == "onednn") return GemmLibrary::onednn;
    if (want == "openblas") return GemmLibrary::openblas;
    throw Error("PIPE_CPU_GEMM=" + want + " is not one of auto, onednn, openblas");
  }();
  return lib;
}

bool transposed_a_on_openblas() {
  static const bool where_it_pays = [] {
    if (gemm_library_in_use() != GemmLibrary::automatic) return false;
    // oneDNN 2.6's f32 brgemm needs avx512_core: below it every product is its sgemm.
    if ((dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core) return false;
    // OpenBLAS's own AVX2 and AVX-512 kernels only, never a generic core it falls back to on a CPU it does not know.
    const std::string core = openblas_get_corename();
    for (const char* known : {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"})
      if (core == known) return true;
    return false;
  }();
  // One thread per rank only. With more, OpenBLAS's thread pool and oneDNN's OpenMP threads each spin on the same
  // cores while the other library works: gpt-tiny's step on 2 threads took longer than on one (AMD EPYC, 2 cores,
  // pipe-bench train: 99-109 ms against 73-94), and on oneDNN alone 53-55 ms.
  return where_it_pays && cpu_threads() == 1;
}

namespace {

// cpu_gemm_totals' counters: two clock reads per product, against the tens of microseconds of the smallest.
std::atomic<std::int64_t> g_calls{0}, g_flops{0}, g_nanoseconds{0};

void run_gemm(const GemmCall& g) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (g.k == 0) {
    const std::size_t c_size = element_size(g.c_type);
    for (std::int64_t z = 0; z < g.batch; ++z) scale_block(g, static_cast<char*>(g.c) + z * g.stride_c * c_size);
    return;
  }
  const bool float32 = g.ab_type == DType::float32 && g.c_type == DType::float32;
  if (gemm_library_in_use() == GemmLibrary::openblas ||
      (float32 && g.trans_a && !g.trans_b && transposed_a_on_openblas())) {
    use_threads(cpu_threads());  // oneDNN's too, so that a raw dnnl_sgemm beside it (pipe-bench ops) runs on as many
    return openblas_gemm(g);
  }
  onednn_gemm(g);
}

}  // namespace

void gemm(const GemmCall& g) {
  const auto t0 = std::chrono::steady_clock::now();
  run_gemm(g);
  const auto t1 = std::chrono::steady_clock::now();
  g_calls.fetch_add(1, std::memory_order_relaxed);
  g_flops.fetch_add(2 * g.m * g.n * g.k * g.batch, std::memory_order_relaxed);
  g_nanoseconds.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(),
                          std::memory_order_relaxed);
}

GemmTotals gemm_totals() {
  GemmTotals t;
  t.calls = g_calls.load(std::memory_order_relaxed);
  t.flops = static_cast<double>(g_flops.load(std::memory_order_relaxed));
  t.seconds = static_cast<double>(g_nanoseconds.load(std::memory_order_relaxed)) * 1e-9;
  return t;
}

// ---- what runs

const char* gemm_isa_name() {
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_all:
      return "generic";
    case dnnl_cpu_isa_sse41:
      return "sse41";
    case dnnl_cpu_isa_avx:
      return "avx";
    case dnnl_cpu_isa_avx2:
      return "avx2";
    case dnnl_cpu_isa_avx2_vnni:
      return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic:
      return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops:
      return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core:
      return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
      return "avx512_core_amx";
  }
  return "unknown";
}

bool bf16_gemm_is_native() {
  // A throw leaves the static unset, so every later use reports the same error.
  static const bool native = [] {
    const char* env = std::getenv("PIPE_CPU_BF16_GEMM");
    const std::string want = env == nullptr ? "" : env;
    if (want == "widened") return false;
    if (!want.empty() && want != "native")
      throw Error("PIPE_CPU_BF16_GEMM=" + want + " is not one of native, widened");
    const bool has_bf16 =
        (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
    const bool on_onednn = gemm_library_in_use() != GemmLibrary::openblas;
    if (want == "native" && !(has_bf16 && on_onednn))
      throw Error(std::string("PIPE_CPU_BF16_GEMM=native: ") +
                  (on_onednn ? std::string("oneDNN dispatches to ") + gemm_isa_name() +
                                   ", which has no bf16 instructions"
                             : "PIPE_CPU_GEMM=openblas runs float32 products only"));
    return has_bf16 && on_onednn;
  }();
  return native;
}

bool gemm_isa_below_avx2() { return (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx2) != dnnl_cpu_isa_avx2; }

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

namespace {
// "OpenBLAS 0.3.21 (core Zen": openblas_get_config() is "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen
// MAX_THREADS=64"; its first two words and the core it chose (the caller closes the parenthesis).
std::string openblas_name() {
  std::string config = openblas_get_config();
  const std::size_t first = config.find(' ');
  const std::size_t second = first == std::string::npos ? first : config.find(' ', first + 1);
  if (second != std::string::npos) config.resize(second);
  return config + " (core " + openblas_get_corename();
}
}  // namespace

std::string gemm_library() {
  if (gemm_library_in_use() == GemmLibrary::openblas) return openblas_name() + ", PIPE_CPU_GEMM=openblas)";
  std::string name =
      "oneDNN " + onednn_version() + " (" + gemm_isa_name() + (bf16_gemm_is_native() ? ", bf16 native" : "") + ")";
  if (transposed_a_on_openblas()) name += "; A-transposed products on " + openblas_name() + ")";
  return name;
}

}  // namespace libpipe::cpu
