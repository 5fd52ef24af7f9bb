// Inside libpipe: a generated schedule as one flat list of instructions,
// without its steps or buffers, which is all the simulator needs: at 1,024
// stages x 4,096 micro-batches the steps' vectors would cost more than the
// simulation itself.
#pragma once

#include <string>
#include <vector>

#include "pipe/schedule.hpp"

namespace libpipe {

// make_schedule's schedule with no steps (its header: kind, stages, chunks, placement), its instructions in
// `program`, in order; the same errors.
Schedule schedule_program(const std::string& kind, int stages, int micro_batches, int stage, int virtual_stages,
                          std::vector<Instruction>& program);

// peak_in_flight over a flat program of `schedule`'s stage.
int peak_in_flight(const Schedule& schedule, const std::vector<Instruction>& program);

}  // namespace libpipe
