// The per-rank memory model (pipe/memory_model.hpp) on gpt-tiny: each part
// recomputed here from describe's figures, the activations held as the
// schedule's simulation says (1F1B: S - s micro-batches on stage s; GPipe: all
// M), activation checkpointing and bf16, and the errors.
#define BOOST_TEST_MODULE memory_model
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "pipe/describe.hpp"
#include "pipe/error.hpp"
#include "pipe/memory_model.hpp"
#include "pipe/partition_method.hpp"
#include "pipe/schedule.hpp"
#include "shipped_model.hpp"
#include "test_util.hpp"

using pipe_test::error_of;

namespace {

const libpipe::ModelDescription& gpt_tiny() { return pipe_test::shipped_model("gpt-tiny"); }

std::vector<libpipe::Schedule> schedules(const std::string& kind, int S, int M, int V = 1) {
  std::vector<libpipe::Schedule> out;
  for (int s = 0; s < S; ++s) out.push_back(libpipe::make_schedule(kind, S, M, s, V));
  return out;
}

// Activation bytes of layers [begin, end) per sample.
double activations(int begin, int end) {
  double a = 0;
  for (int i = begin; i < end; ++i) a += static_cast<double>(gpt_tiny().layers[i].description.activation_bytes);
  return a;
}

// The gradients that layers [begin, end) received in backward (their outputs' size) per sample, and the largest
// layer's activation bytes per sample.
double outputs(int begin, int end) {
  double o = 0;
  for (int i = begin; i < end; ++i) {
    const auto& out = gpt_tiny().layers[i].description.output;
    o += static_cast<double>(libpipe::numel(out.shape) * libpipe::dtype_size(out.dtype));
  }
  return o;
}
double largest(int begin, int end) {
  double a = 0;
  for (int i = begin; i < end; ++i)
    a = std::max(a, static_cast<double>(gpt_tiny().layers[i].description.activation_bytes));
  return a;
}

}  // namespace

BOOST_AUTO_TEST_CASE(one_f_one_b_on_two_stages) {
  const auto& d = gpt_tiny();
  const libpipe::Parts parts = libpipe::plan_partition(d, "parameters", 2).parts;
  libpipe::MemoryModelOptions o;
  o.micro_batch_size = 16;
  const auto m = libpipe::predict_memory(d, parts, schedules("1f1b", 2, 8), o);
  BOOST_REQUIRE_EQUAL(m.size(), 2u);
  // gpt-tiny ties the embedding and the head: on 2 stages each holds its copy; parameters of each stage's layers.
  double p0 = 0, p1 = 0;
  for (int i = parts[0]; i < parts[1]; ++i) p0 += static_cast<double>(d.layers[i].description.param_count());
  for (int i = parts[1]; i < parts[2]; ++i) p1 += static_cast<double>(d.layers[i].description.param_count());
  BOOST_CHECK_EQUAL(m[0].parameters, 4 * p0);
  BOOST_CHECK_EQUAL(m[1].parameters, 4 * p1);
  BOOST_CHECK_EQUAL(m[0].gradients, 4 * p0);
  BOOST_CHECK_EQUAL(m[0].optimizer, 8 * p0);  // AdamW's m and v
  BOOST_CHECK_EQUAL(m[0].bf16_copies, 0);
  // 1F1B holds S - s micro-batches on stage s.
  BOOST_CHECK_EQUAL(m[0].peak_in_flight, 2);
  BOOST_CHECK_EQUAL(m[1].peak_in_flight, 1);
  // At the peak, one of them is between its B and W: it also holds the gradients its layers received.
  BOOST_CHECK_EQUAL(m[0].activations, 16 * (2 * activations(parts[0], parts[1]) + outputs(parts[0], parts[1])));
  BOOST_CHECK_EQUAL(m[1].activations, 16 * (activations(parts[1], parts[2]) + outputs(parts[1], parts[2])));
  // The largest layer's backward makes a gradient of each tensor it saved.
  BOOST_CHECK_EQUAL(m[0].workspace, 16 * largest(parts[0], parts[1]));
  BOOST_CHECK_EQUAL(m[1].workspace, 16 * largest(parts[1], parts[2]));
  BOOST_CHECK_GT(m[0].buffers, 0);
  BOOST_CHECK_EQUAL(m[0].total(), m[0].parameters + m[0].gradients + m[0].optimizer + m[0].activations +
                                      m[0].workspace + m[0].buffers);
}

BOOST_AUTO_TEST_CASE(one_stage_holds_a_tied_weight_once_and_gpipe_holds_every_micro_batch) {
  const auto& d = gpt_tiny();
  libpipe::MemoryModelOptions o;
  const auto m = libpipe::predict_memory(d, {0, static_cast<int>(d.layers.size())}, schedules("gpipe", 1, 4), o);
  BOOST_CHECK_EQUAL(m[0].parameters, 4.0 * static_cast<double>(d.params));  // the tied weight once
  BOOST_CHECK_EQUAL(m[0].peak_in_flight, 4);
  const int n = static_cast<int>(d.layers.size());
  BOOST_CHECK_EQUAL(m[0].activations, 4 * activations(0, n) + outputs(0, n));
}

BOOST_AUTO_TEST_CASE(sgd_bf16_and_checkpointing) {
  const auto& d = gpt_tiny();
  const libpipe::Parts parts = libpipe::plan_partition(d, "parameters", 2).parts;
  libpipe::MemoryModelOptions o;
  o.micro_batch_size = 16;
  const auto plain = libpipe::predict_memory(d, parts, schedules("1f1b", 2, 8), o);
  o.optimizer = "sgd";
  o.bf16 = true;
  o.checkpoint_interval = 1;
  const auto m = libpipe::predict_memory(d, parts, schedules("1f1b", 2, 8), o);
  BOOST_CHECK_EQUAL(m[0].optimizer, plain[0].optimizer / 2);   // one momentum buffer
  BOOST_CHECK_EQUAL(m[0].bf16_copies, plain[0].parameters / 2);  // 2 bytes per parameter
  // Every layer with parameters keeps only its input: far less than all its activations, even with the one
  // layer recomputed at a time added back.
  BOOST_CHECK_LT(m[0].activations, plain[0].activations / 2);
  BOOST_CHECK_GT(m[0].activations, 0);
}

// --zero 1 over 4 replicas: AdamW's state is split; the float32 masters are split only under bf16, where the
// bfloat16 values are what the layers compute with (in float32 the master is the value itself).
BOOST_AUTO_TEST_CASE(zero_splits_the_state_and_bf16_masters) {
  const auto& d = gpt_tiny();
  const libpipe::Parts parts = libpipe::plan_partition(d, "parameters", 2).parts;
  libpipe::MemoryModelOptions o;
  const auto plain = libpipe::predict_memory(d, parts, schedules("1f1b", 2, 8), o);
  o.optimizer_shards = 4;
  const auto split = libpipe::predict_memory(d, parts, schedules("1f1b", 2, 8), o);
  BOOST_CHECK_EQUAL(split[0].optimizer, plain[0].optimizer / 4);
  BOOST_CHECK_EQUAL(split[0].parameters, plain[0].parameters);
  o.bf16 = true;
  const auto mixed = libpipe::predict_memory(d, parts, schedules("1f1b", 2, 8), o);
  BOOST_CHECK_EQUAL(mixed[0].parameters, plain[0].parameters / 4);
  BOOST_CHECK_EQUAL(mixed[0].bf16_copies, plain[0].parameters / 2);
  // The bound the capped partitioner uses counts the same bytes per parameter.
  const libpipe::StageMemoryBound bound(d, schedules("1f1b", 2, 8), o);
  libpipe::MemoryModelOptions unsplit = o;
  unsplit.optimizer_shards = 1;
  const libpipe::StageMemoryBound whole(d, schedules("1f1b", 2, 8), unsplit);
  const double params = plain[0].parameters / 4;
  BOOST_CHECK_CLOSE(whole(0, parts[0], parts[1]) - bound(0, parts[0], parts[1]),
                    params * (4 - 1 + 8 - 2), 1e-9);
}

// The CPU libraries' own memory is one constant per rank, whatever the stage holds.
BOOST_AUTO_TEST_CASE(runtime_counts_once_per_rank) {
  const auto& d = gpt_tiny();
  const libpipe::Parts parts = libpipe::plan_partition(d, "parameters", 2).parts;
  libpipe::MemoryModelOptions o;
  const auto tensors = libpipe::predict_memory(d, parts, schedules("gpipe", 2, 8), o);
  o.runtime_bytes = libpipe::kCpuRuntimeBytes;
  const auto cpu = libpipe::predict_memory(d, parts, schedules("gpipe", 2, 8), o);
  for (std::size_t s = 0; s < 2; ++s) {
    BOOST_CHECK_EQUAL(tensors[s].runtime, 0.0);
    BOOST_CHECK_EQUAL(cpu[s].runtime, libpipe::kCpuRuntimeBytes);
    BOOST_CHECK_EQUAL(cpu[s].total(), tensors[s].total() + libpipe::kCpuRuntimeBytes);
    BOOST_CHECK_EQUAL(cpu[s].activations, tensors[s].activations);
  }
}

BOOST_AUTO_TEST_CASE(zero_bubble_v_holds_what_the_simulation_says) {
  const auto& d = gpt_tiny();
  const libpipe::PartitionPlan plan =
      libpipe::plan_partition_v_shape(d, libpipe::PartitionMethod::parse("type:TransformerBlock"), 2);
  libpipe::MemoryModelOptions o;
  const auto sch = schedules("zb-v", 2, 8, 2);
  const auto m = libpipe::predict_memory(d, plan.parts, sch, o);
  for (int s = 0; s < 2; ++s) BOOST_CHECK_EQUAL(m[s].peak_in_flight, libpipe::peak_in_flight(sch[s]));
}

BOOST_AUTO_TEST_CASE(errors) {
  const auto& d = gpt_tiny();
  libpipe::MemoryModelOptions o;
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::predict_memory(d, {0, 3, 8}, schedules("1f1b", 3, 4), o); }),
                    "the memory model needs 3 chunks (3 stages x 1), the partition has 2");
  o.optimizer = "lion";
  BOOST_CHECK_EQUAL(error_of([&] { libpipe::predict_memory(d, {0, 3, 8}, schedules("1f1b", 2, 4), o); }),
                    "the memory model knows optimizers adamw and sgd, not 'lion'");
}
