// Fuzz target: the checkpoint manifest reader. Any bytes go through parse_checkpoint_manifest, what
// load_checkpoint reads before it touches a layer (structure, format version, the manifest's own checksum).
//
// A libpipe::Error is the documented answer to a bad manifest; anything else escaping, a crash, a leak or a
// sanitizer report is a finding, and so is an accepted manifest that breaks what the loader relies on (a version
// outside 1..current, a negative count).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "pipe/checkpoint.hpp"
#include "pipe/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const libpipe::CheckpointManifest m = libpipe::parse_checkpoint_manifest(text, "fuzz/manifest.json");
    if (m.version < 1 || m.version > 2 || m.layers < 0 || m.step < 0 || m.optimizer_steps < 0) {
      std::fprintf(stderr, "fuzz_manifest: accepted a manifest of version %d with a negative count\n", m.version);
      std::abort();
    }
  } catch (const libpipe::Error&) {
    // the documented answer to a bad manifest
  }
  return 0;
}
