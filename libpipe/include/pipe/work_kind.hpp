// The one vocabulary of pipeline work: what a schedule instruction does, what
// the engine's trace events measured, and what a timeline block (simulated or
// read from a Chrome trace) was spent on are all a WorkKind, with one name
// each. The name is the "cat" of every Chrome trace event we write, and the
// only text we read back as that kind: there are no aliases.
//
// Room for what comes next: a forward, backward-input and backward-weight of
// a micro-batch are three kinds, so zero-bubble schedules (B and W apart) need
// no new ones; virtual stages would add a chunk number beside the micro-batch
// (of an Instruction, a TraceEvent and a Block), not new kinds.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace libpipe {

enum class WorkKind : std::uint8_t {
  // Instructions of a schedule (schedule.hpp), in the order of its step layout.
  LoadMicroBatch,   // load_micro_batch  L:   read a micro-batch's input (first stage) or labels (last stage)
  Forward,          // forward           F
  BackwardInput,    // backward_input    B:   gradient with respect to the stage's input
  BackwardWeight,   // backward_weight   W:   gradients of the stage's parameters
  SendActivation,   // send_activation   SA:  output activation to the next stage
  RecvActivation,   // recv_activation   RA:  input activation from the previous stage (traced: the wait for it)
  SendGrad,         // send_grad         SG:  input gradient to the previous stage
  RecvGrad,         // recv_grad         RG:  output gradient from the next stage (traced: the wait for it)
  ReduceTiedGrads,  // reduce_tied_grads RT:  all-reduce of tied weights' gradients across their tie group
  ReduceGrads,      // reduce_grads      RD:  all-reduce of gradients across data-parallel replicas
  OptimizerStep,    // optimizer_step    OPT: clipping and the update
  // Work that is traced but is no instruction of a schedule.
  WaitSends,   // wait_sends  WS:   completing the step's non-blocking sends
  Checkpoint,  // checkpoint  CKPT: checkpoint I/O (pipe-train)
  Other,       // other       ?:    work of a kind not named here (a Chrome trace of another tool)
};
constexpr int kNumWorkKinds = static_cast<int>(WorkKind::Other) + 1;

namespace work_kind_detail {
struct Names {
  std::string_view name, symbol;
};
// In enum order.
inline constexpr Names kNames[kNumWorkKinds] = {
    {"load_micro_batch", "L"}, {"forward", "F"},
    {"backward_input", "B"},   {"backward_weight", "W"},
    {"send_activation", "SA"}, {"recv_activation", "RA"},
    {"send_grad", "SG"},       {"recv_grad", "RG"},
    {"reduce_tied_grads", "RT"}, {"reduce_grads", "RD"},
    {"optimizer_step", "OPT"}, {"wait_sends", "WS"},
    {"checkpoint", "CKPT"},    {"other", "?"},
};
}  // namespace work_kind_detail

// The kind's one name ("backward_input"): the category of its Chrome trace
// events and the text of pipe-train's per-rank events.
constexpr std::string_view work_kind_name(WorkKind kind) {
  const int k = static_cast<int>(kind);
  return k >= 0 && k < kNumWorkKinds ? work_kind_detail::kNames[k].name : std::string_view("other");
}

// The short symbol of schedule grids and labels ("B", as in "B3"). Written
// only, never parsed.
constexpr std::string_view work_kind_symbol(WorkKind kind) {
  const int k = static_cast<int>(kind);
  return k >= 0 && k < kNumWorkKinds ? work_kind_detail::kNames[k].symbol : std::string_view("?");
}

// The kind whose name is exactly `name` (case and spelling as
// work_kind_name writes it); nullopt for any other text.
constexpr std::optional<WorkKind> parse_work_kind(std::string_view name) {
  for (int k = 0; k < kNumWorkKinds; ++k)
    if (work_kind_detail::kNames[k].name == name) return static_cast<WorkKind>(k);
  return std::nullopt;
}

// Whether a schedule may hold the kind as an instruction (load to optimizer
// step); the others are only traced.
constexpr bool is_schedule_instruction(WorkKind kind) {
  return static_cast<int>(kind) <= static_cast<int>(WorkKind::OptimizerStep);
}

// Whether the kind is computation (forward, backward input, backward weight):
// the busy time of a stage, against which the bubble is measured.
constexpr bool is_compute(WorkKind kind) {
  return kind == WorkKind::Forward || kind == WorkKind::BackwardInput || kind == WorkKind::BackwardWeight;
}

}  // namespace libpipe
