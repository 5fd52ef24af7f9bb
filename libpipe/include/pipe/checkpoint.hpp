// Checkpoints: one safetensors file per layer, named by global layer index,
// holding the layer's parameters and its optimizer state; a JSON manifest
// (model fingerprint, step, settings, topology, a checksum per file) written
// last; and DIR/latest naming the newest complete checkpoint.
//
//   DIR/step-00000010/layer-00003.safetensors   weights "<param>", state "opt.m.<param>", "opt.v.<param>"
//   DIR/step-00000010/manifest.json
//   DIR/latest                                  "step-00000010"
//
// A save writes into DIR/step-00000010.partial (every file to a temporary
// name, fsynced, renamed, read back and checked), then the manifest; rank 0
// renames the directory into place and only then moves `latest`, so a crash at
// any moment leaves the previous checkpoint loadable. A step saved again (after
// resuming from an older checkpoint) becomes DIR/step-00000010.1, never
// replacing the one `latest` may name; that one is removed once `latest` names
// the new one.
// Layers are found by global index, so a
// checkpoint loads under any number of stages and data-parallel replicas.
// A tied weight is stored once, by the first layer of its tie group.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "pipe/describe.hpp"
#include "pipe/export.hpp"
#include "pipe/grid.hpp"
#include "pipe/optimizer.hpp"
#include "pipe/pipeline_module.hpp"

namespace libpipe {

// Collective. `next_step` is the step a resumed run starts at; `settings` a
// JSON object recorded in the manifest (schedule, optimizer, flags). Once the
// new checkpoint is complete and `latest` names it, only the `keep` newest
// complete checkpoints of DIR stay (the new one among them; 0 keeps all).
// Returns the checkpoint's directory.
PIPE_API std::string save_checkpoint(const std::string& dir, std::int64_t next_step, PipelineModule& module,
                                     Optimizer& optimizer, const PipelineParallelGrid& grid,
                                     const ModelDescription& description, const std::string& settings, int keep = 0);

// Before training: makes DIR and proves a file can be written, fsynced and
// removed there, so that a --save that cannot work fails at start, not after
// the training it was meant to keep. Errors: "--save DIR: cannot ...".
PIPE_API void check_checkpoint_dir(const std::string& dir);

// Holds DIR (made by check_checkpoint_dir) for this job until the handle goes (or the process ends): an
// exclusive lock on DIR/.pipe-train.lock, which names its holder. Two jobs saving into one directory would write the same step-N.partial and publish a
// mix of both; the second is refused: "--save DIR is in use by another pipe-train job (pid P on HOST) ...".
PIPE_API std::shared_ptr<void> lock_checkpoint_dir(const std::string& dir);

// A checkpoint's manifest.json as load_checkpoint reads it: its structure (every field of the right type, counts
// non-negative), its format version (1 to the current one) and, from version 2, its own checksum checked. Errors
// name `path`: "checkpoint PATH: 'step' must be a non-negative integer". Pure: tests/fuzz/fuzz_manifest.cpp feeds
// it any bytes.
struct CheckpointManifest {
  int version = 0;
  std::string model, model_fingerprint, optimizer;
  std::int64_t layers = 0, step = 0, optimizer_steps = 0;
  std::map<std::string, std::string> files;  // file name -> its checksum (16 hex digits of FNV-1a)
};
PIPE_API CheckpointManifest parse_checkpoint_manifest(const std::string& text, const std::string& path);

// The directory of the checkpoint DIR names: DIR itself when it holds manifest.json, else the step directory its
// `latest` file names (which must be a step-N directory inside DIR). Errors begin with `what` (by default
// "--load DIR", the flag that named it).
PIPE_API std::string checkpoint_step_dir(const std::string& dir);
PIPE_API std::string checkpoint_step_dir(const std::string& dir, const std::string& what);

// Loads DIR/latest (or DIR itself when it holds a manifest) into this rank's
// layers and optimizer state, verifying the model fingerprint, the optimizer
// kind, every file's checksum and every tensor's shape before it changes any
// state; returns the step to resume at. Local (no communication): errors name
// the file and leave the job to decide.
PIPE_API std::int64_t load_checkpoint(const std::string& dir, PipelineModule& module, Optimizer& optimizer,
                                      const ModelDescription& description);
// The same without the optimizer state (inference, export): weights only, every check but the optimizer's kind.
PIPE_API std::int64_t load_checkpoint_weights(const std::string& dir, PipelineModule& module,
                                              const ModelDescription& description);
// Either of the two: the optimizer state too when `optimizer` is set.
PIPE_API std::int64_t load_checkpoint(const std::string& dir, PipelineModule& module, Optimizer* optimizer,
                                      const ModelDescription& description);

}  // namespace libpipe
