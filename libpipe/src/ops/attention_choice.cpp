#include "ops/attention_choice.hpp"

#include <cstdlib>
#include <string>

#include "pipe/error.hpp"

namespace libpipe {

AttentionChoice attention_choice() {
  static const AttentionChoice choice = [] {
    const char* env = std::getenv("PIPE_ATTENTION");
    if (env == nullptr || *env == '\0' || std::string(env) == "auto") return AttentionChoice::automatic;
    if (std::string(env) == "flash") return AttentionChoice::flash;
    if (std::string(env) == "materialized") return AttentionChoice::materialized;
    throw Error(std::string("PIPE_ATTENTION='") + env + "': expected flash, materialized or auto");
  }();
  return choice;
}

}  // namespace libpipe
