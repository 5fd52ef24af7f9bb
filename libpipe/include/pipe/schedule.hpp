// Pipeline schedules as pure data: for one stage (rank) of an S-stage pipeline
// running M micro-batches, the list of steps it executes, each a short list of
// typed instructions (load, forward, backward-input, backward-weight,
// send/receive of activations and gradients, reductions, optimizer step). No
// MPI here: the engine interprets these, pipe-sim and the tests print and
// check them.
//
// Virtual stages: the model may be cut into C = S x V chunks, V per stage,
// placed looped (chunk c on stage c mod S: interleaved 1F1B) or V-shaped
// (the chunks go down the stages and back up: ZB-V). Every instruction names
// which of its stage's chunks it works on (0..V-1: the stage's leg of the
// pipeline, global chunk leg x S + position); activations flow from chunk c
// to chunk c+1 and gradients back, wherever those live (on the same stage the
// engine hands them over in memory). With V = 1 every chunk index is 0 and
// everything reads as before.
//
// The checker simulates all stages together before anything runs, so that a
// schedule that would deadlock, mismatch messages or overwrite a live buffer is
// an error with the stage, step and instruction, not a hang on a cluster.
//
// Layout of every step (the same rule for all kinds, so the engine needs one):
//   1. sends of what the stage computed in the previous step (SA / SG),
//   2. LoadMicroBatch of this step's micro-batch (first and last chunks),
//   3. receives this step's compute needs (RA before a forward, RG before a
//      backward),
//   4. the compute (F; or B then W),
//   5. in the last step of a training schedule: RT, RD, OPT.
// Which instruction lands in which step is DeepSpeed's for gpipe, 1f1b and
// inference (TrainSchedule, InferenceSchedule). Within a step we put sends
// before receives, where DeepSpeed's backward steps receive the gradient
// before sending the activation: with non-blocking sends that takes one
// message round trip off the critical path and can never deadlock (a send
// never waits).
//
// In gpipe, 1f1b and inference each message is sent and received in the same
// step index, so a step is atomic: an engine may complete (wait on) all of a
// step's sends at the end of that step, after which every buffer is safe to
// reuse. The other kinds need a Comm that posts receives ahead (MPI).
#pragma once

#include <string>
#include <vector>

#include "pipe/export.hpp"
#include "pipe/work_kind.hpp"

namespace libpipe {

// The instructions are the WorkKinds LoadMicroBatch to OptimizerStep
// (work_kind.hpp: L, F, B, W, SA, RA, SG, RG, RT, RD, OPT); the engine
// traces its work, and pipe-sim draws it, in the same vocabulary.

// One instruction. micro_batch and buffer are -1 for the step-wide ones (RT,
// RD, OPT). buffer is the slot (0..num_buffers-1) of the stage's activation
// and gradient storage that holds the micro-batch.
struct Instruction {
  WorkKind kind;
  int micro_batch = -1;
  int buffer = -1;
  // Which of the stage's chunks it works on: 0..V-1 in stage_chunks' order (0 without virtual stages, and for
  // the step-wide ones).
  int chunk = 0;
};
PIPE_API bool operator==(const Instruction& a, const Instruction& b);
inline bool operator!=(const Instruction& a, const Instruction& b) { return !(a == b); }

// The instructions of one step, run in order.
using Step = std::vector<Instruction>;

// Where the chunks of a pipeline live (see the top of this file).
enum class ChunkPlacement {
  looped,   // chunk c on stage c mod S
  v_shape,  // chunk c on stage c mod S going down (even c / S), S-1 - c mod S coming back up (odd)
};
PIPE_API const char* placement_name(ChunkPlacement placement);  // "looped", "v-shape"

// The stage that holds `chunk` of a pipeline of stages x virtual_stages chunks.
PIPE_API int chunk_stage(ChunkPlacement placement, int chunk, int stages);
// The chunks `stage` holds, ascending.
PIPE_API std::vector<int> stage_chunks(ChunkPlacement placement, int stage, int stages, int virtual_stages);
// Which of its stage's chunks `chunk` is (its index in stage_chunks: the leg of the pipeline it is on), for any
// placement: what instructions and traces name.
inline int chunk_index_on_stage(int chunk, int stages) { return chunk / stages; }

// The whole schedule of one stage.
struct Schedule {
  std::string kind;       // one of schedule_kinds()
  int stages = 0;         // S
  int micro_batches = 0;  // M
  int stage = 0;          // this stage, 0..S-1
  int num_buffers = 0;    // buffer slots the stage must allocate (one holds one chunk's micro-batch)
  int virtual_stages = 1;  // V: chunks per stage
  ChunkPlacement placement = ChunkPlacement::looped;
  std::vector<Step> steps;
  int chunks() const { return stages * virtual_stages; }  // C
};

// The schedule of `stage`. Kinds:
//  - "inference": forward only, M+S-1 steps, 2 buffers; the first stage never
//    receives, the last never sends (DeepSpeed's InferenceSchedule).
//  - "gpipe": fill-drain, all M forwards then all M backwards (in micro-batch
//    order), 2(M+S-1) steps, M buffers (every micro-batch is live at once).
//  - "1f1b": DeepSpeed's TrainSchedule: 2(M+S-1) steps; stage s runs
//    min(S-s, M) warm-up forwards, then alternates one backward and one
//    forward, then drains the remaining backwards; max(2, min(S-s, M)) buffers.
// Steps of these training kinds alternate between stages by parity, so a step
// is half a forward+backward slot and a stage idles in every other step of the
// warm-up and cool-down. Training kinds end with RT, RD, OPT in the last step.
// B and W of a micro-batch sit together (B then W) in one step.
//  - "zb-h1": zero-bubble ZB-H1 (Qi et al., 2024): B and W apart, each W
//    deferred s micro-batches on stage s to fill the cool-down; one compute
//    per step (a third of a forward+backward slot), 3M+S-1 steps; at most S
//    micro-batches live per stage (1F1B's peak); needs M >= S.
//  - "interleaved-1f1b": Megatron-LM's interleaved 1F1B over V looped chunks
//    per stage: stage s warms up with 2(S-1-s) + (V-1)S chunk forwards, then
//    alternates forward and backward; the bubble shrinks by V to
//    (S-1)/(VM+S-1). Needs M a multiple of S. One compute per step.
//  - "zb-v": zero-bubble ZB-V: V = 2 chunks per stage in a V (stage s holds
//    chunks s and 2S-1-s), B and W apart, W's filling the gaps; made by a
//    greedy list scheduler on unit costs that runs B first, then F while the
//    stage holds fewer than 2S chunk activations (1F1B's peak in bytes), then
//    W. Needs M >= S.
// A message of the one-compute-per-step kinds may be received in a later step
// than it is sent (so not in NCCL step batches).
// virtual_stages: V, 1 for the kinds without chunks; 0 takes the kind's
// default (2 for zb-v, 1 otherwise).
// Errors: unknown kind (the message lists the known ones), stages or
// micro_batches < 1, stage outside 0..stages-1, a V or M the kind cannot run
// (the message says what it needs).
// "custom" is the kind of schedules read from text (parse_schedules): a
// training schedule with no generator and no closed-form bubble.
PIPE_API Schedule make_schedule(const std::string& kind, int stages, int micro_batches, int stage,
                                int virtual_stages = 0);

// V for a kind: `requested` if the kind can run it (0: the kind's default);
// else an error saying which V the kind takes.
PIPE_API int schedule_virtual_stages(const std::string& kind, int requested);

// The chunk placement of a kind (looped for all but zb-v).
PIPE_API ChunkPlacement schedule_placement(const std::string& kind);

// One line per kind for --help: its name and what it needs.
PIPE_API std::string describe_schedule_kinds();

// Gives every (chunk, micro-batch) of the stage the lowest free buffer from
// its first instruction to its last, and sets num_buffers to the most in use.
PIPE_API void assign_buffers(Schedule& schedule);

// The known kinds, for --help and error messages.
PIPE_API std::vector<std::string> schedule_kinds();

// Whether the kind trains (has backwards and an optimizer step).
PIPE_API bool is_training_schedule(const std::string& kind);

// Compact text: the kind's symbol (work_kind_symbol) and the micro-batch:
// "L3", "F3", "B3" (backward-input), "W3", "SA3"/"RA3" (send / receive
// activation), "SG3"/"RG3" (send / receive gradient), "RT", "RD", "OPT";
// a chunk other than 0 follows as "c1" ("F3c1": forward of micro-batch 3 on
// the stage's chunk 1). Buffers are not shown.
PIPE_API std::string to_text(WorkKind kind);
PIPE_API std::string to_text(const Instruction& instruction);
// Instructions separated by one space ("RA2 F2"); "" for an idle step.
PIPE_API std::string to_text(const Step& step);

// A step x stage table: a header line, then one line per step (the step index,
// then one column per stage), idle steps shown as ".". Columns are left
// aligned, two spaces apart, with no trailing spaces; every line ends in '\n'.
// Stages may have different step counts (a broken schedule prints too); a
// stage with no such step shows ".". per_stage[i] must be stage i.
PIPE_API std::string format_grid(const std::vector<Schedule>& per_stage);

// Simulates all stages together and throws libpipe::Error naming the step,
// stage and instruction at the first problem found. With virtual stages
// "stage" below reads "chunk" wherever data flows (first/last, neighbours,
// message links between chunks c and c+1); programs and buffers stay per stage. per_stage holds one
// Schedule per stage, in stage order, all of the same kind, S and M.
//
// Semantics simulated: each stage runs its steps in order and the
// instructions of a step in order; a send never blocks (it is buffered); a
// receive blocks until the matching send has been issued; messages between two
// stages are received in the order they were sent (as MPI does for one source
// and tag).
//
// Checked, in this order:
//  1. each instruction on its own: a kind schedules hold
//     (is_schedule_instruction), micro-batch in 0..M-1 (or -1 for RT, RD,
//     OPT), buffer in 0..num_buffers-1, a neighbour to talk to, only first and
//     last stages load, no backward or reduction in an inference schedule;
//  2. every send has its receive on the neighbour and vice versa, and the
//     receives come in the order of the sends;
//  3. running all stages: a Forward runs after its input is loaded / received
//     (and, on the last stage, its labels loaded), a BackwardInput after its
//     Forward and (but on the last stage) its gradient received, a
//     BackwardWeight after its BackwardInput and after the BackwardWeight of
//     the chunk's previous micro-batch (weight gradients add up in
//     micro-batch order, as in one process), a send after the compute that
//     produces it; nothing runs twice; a micro-batch stays in one buffer, and a
//     buffer is not reused while it holds a live micro-batch (one the stage
//     still has instructions to run for); RT and RD after every W, OPT after
//     both and last; the simulation progresses (else: deadlock, naming where
//     each blocked stage waits and for which send);
//  4. every micro-batch is forwarded (and backwarded) on every stage, and a
//     training schedule has its RT, RD and OPT.
PIPE_API void check_schedules(const std::vector<Schedule>& per_stage);

// Whether every message is received in the same step index as it is sent,
// which a Comm that issues each step's transfers as one batch (NCCL) needs:
// a send left to a later step of its receiver would wait for ever. An
// error names the first message that is not (the engine checks this before
// running schedules in step batches); MPI, which posts receives ahead, does not need it.
PIPE_API void check_messages_within_steps(const std::vector<Schedule>& per_stage);

// All stages' schedules, checked.
PIPE_API std::vector<Schedule> make_checked_schedules(const std::string& kind, int stages, int micro_batches,
                                                      int virtual_stages = 0);

// Forward-only schedules for evaluating a model split into V chunks per stage
// placed as `placement` (under any training schedule's chunks): "inference"
// for V = 1; else each stage runs its chunks in turn, all M micro-batches
// through one before the next. Checked.
PIPE_API std::vector<Schedule> make_checked_inference_schedules(int stages, int micro_batches, int virtual_stages,
                                                                ChunkPlacement placement);

// The text form of a pipeline's schedules, one line per stage, steps apart by
// '|' (an idle step is empty), instructions as to_text writes them:
//   stage 0 (buffers 4): L0 F0 | SA0 L1 F1 | ... | RG3 B3 W3 RT RD OPT
// (with chunks, first a line "virtual-stages V looped|v-shape").
// pipe-sim --print writes it; pipe-train --schedule-file and pipe-sim
// --schedule-file read it back, so a schedule can be written by hand.
PIPE_API std::string format_schedules(const std::vector<Schedule>& per_stage);

// Reads the text form: stage lines in order from 0 (S is their number), M is
// one more than the largest micro-batch named, the kind "custom", a
// micro-batch's buffer its number modulo the stage's buffers (one per
// micro-batch when "(buffers N)" is left out). With chunks, a line
// "virtual-stages V looped|v-shape" comes before the stages, instructions name
// the stage's chunk ("F3c1") and buffers are given by assign_buffers. '#' starts a comment. Errors
// name source:line, the step and the token. The schedules are not proven:
// check_schedules does that, naming the stage, step and instruction.
PIPE_API std::vector<Schedule> parse_schedules(const std::string& text, const std::string& source);

// The most micro-batches the stage holds activations for at once, counted
// per chunk: from a micro-batch's Forward until its BackwardWeight (training)
// or until it is sent on (inference; on the last chunk, until its Forward
// ends). Under 1f1b it is min(S - stage, M); under gpipe, M: the activation
// memory of the stage in units of one chunk's micro-batch.
PIPE_API int peak_in_flight(const Schedule& schedule);

// The fraction of a step's time a stage idles when every stage costs the same
// per micro-batch: (S-1)/(M+S-1) for gpipe, 1f1b and inference (FACTS.md);
// for zb-h1 with F = B = W, (S-1)/(3M+S-1): its idle time (S-1)(F+B-W) over a
// makespan of M(F+B+W) + (S-1)(F+B-W); for interleaved-1f1b (S-1)/(VM+S-1).
// NaN for "custom" and zb-v (no closed form).
PIPE_API double theoretical_bubble(const std::string& kind, int stages, int micro_batches, int virtual_stages = 1);

// theoretical_bubble's closed form as text for reports, such as
// "(S-1)/(M+S-1)"; empty where there is none.
PIPE_API std::string theoretical_bubble_formula(const std::string& kind);

}  // namespace libpipe
