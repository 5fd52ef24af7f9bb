// Checkpoints: one safetensors file per layer, named by global layer index,
// holding the layer's parameters and its optimizer state; a JSON manifest
// (model fingerprint, step, settings, topology, a checksum per file) written
// last; and DIR/latest naming the newest complete checkpoint.
//
//   DIR/step-00000010/layer-00003.safetensors   weights "<param>", state "opt.m.<param>", "opt.v.<param>"
//   DIR/step-00000010/manifest.json
//   DIR/latest                                  "step-00000010"
//
// Every file is written to a temporary name, fsynced and renamed; `latest`
// moves only after the manifest is in place, so a crash at any moment leaves
// the previous checkpoint loadable. A step saved again (after resuming from an
// older checkpoint) goes to a new directory, DIR/step-00000010.1, never over the
// one `latest` may name; that one is removed once `latest` names the new one.
// Layers are found by global index, so a
// checkpoint loads under any number of stages and data-parallel replicas.
// A tied weight is stored once, by the first layer of its tie group.
#pragma once

#include <cstdint>
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

// Loads DIR/latest (or DIR itself when it holds a manifest) into this rank's
// layers and optimizer state, verifying the model fingerprint, the optimizer
// kind and every file's checksum; returns the step to resume at. Local (no
// communication): errors name the file and leave the job to decide.
PIPE_API std::int64_t load_checkpoint(const std::string& dir, PipelineModule& module, Optimizer& optimizer,
                                      const ModelDescription& description);

}  // namespace libpipe
