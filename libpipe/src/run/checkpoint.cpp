// Checkpoints (see checkpoint.hpp).
#include "pipe/checkpoint.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "run/mpi_check.hpp"
#include "pipe/collective.hpp"
#include "pipe/comm.hpp"
#include "pipe/error.hpp"
#include "pipe/paths.hpp"
#include "pipe/ops.hpp"
#include "pipe/backend.hpp"
#include "pipe/safetensors.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace libpipe {
namespace {

constexpr const char* kFormat = "libpipe-checkpoint";
// 2: the manifest carries a checksum of itself. Version 1 checkpoints (without it) still load.
constexpr int kVersion = 2;

std::string hex(std::uint64_t v) {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(v));
  return buffer;
}

std::uint64_t fnv1a(const std::uint8_t* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ULL;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ULL;
  return h;
}

// The manifest's own checksum: FNV-1a of its compact JSON without the "checksum" key, so that an edited step or
// optimizer-step count is refused, not resumed as a different run.
std::string manifest_checksum(json manifest) {
  manifest.erase("checksum");
  const std::string text = manifest.dump();
  return hex(fnv1a(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

std::string step_name(std::int64_t step) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "step-%08lld", static_cast<long long>(step));
  return buffer;
}

std::string layer_file(int index) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "layer-%05d.safetensors", index);
  return buffer;
}

// A checkpoint being written: never loaded, never counted among the complete ones.
constexpr const char* kPartialSuffix = ".partial";

// fsync of a directory, so that a rename inside it survives a crash.
void sync_directory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, and an
// fsync of the directory so that the rename itself survives a crash.
void write_atomically(const std::string& path, const void* bytes, std::size_t size) {
  const std::string partial = path + ".partial";
  int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("checkpoint: cannot create " + partial + " (" + std::strerror(errno) + ")");
  const auto* p = static_cast<const char*>(bytes);
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::strerror(errno) : "nothing written: disk full?";
      ::close(fd);
      throw Error("checkpoint: writing " + partial + " failed (" + why + ")");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw Error("checkpoint: cannot flush " + partial + " (" + std::strerror(errno) + ")");
  if (std::rename(partial.c_str(), path.c_str()) != 0)
    throw Error("checkpoint: cannot rename " + partial + " (" + std::strerror(errno) + ")");
  sync_directory(fs::path(path).parent_path());
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  require_regular_file(path, "checkpoint: " + path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("checkpoint: cannot read " + path);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The first layer of each tie group owns (stores) the shared weight.
std::vector<int> tie_owner_of(const ModelDescription& d) {
  std::vector<int> owner(d.layers.size(), -1);
  for (const auto& t : d.ties)
    for (int layer : t.layers) owner[layer] = t.layers.front();
  return owner;
}

bool stores(const Parameter& p, int layer, const std::vector<int>& owner) {
  return !p.spec.tieable || owner[layer] < 0 || owner[layer] == layer;
}

// What the file gets: the tensor itself on the host, a host copy of a device tensor.
Tensor host_copy(const Tensor& t) { return ops::to_device(t, Device::cpu); }

// The whole of a sharded optimizer state tensor (ZeRO-1: each data-parallel rank holds one slice): the slices
// all-gathered over `group` into a host tensor of the parameter's shape. Collective over the group.
Tensor gathered_state(const Tensor& slice, const Parameter& p, const ShardRange& range, Comm& group) {
  Tensor full = Tensor::zeros(p.value.shape(), DType::float32, Device::cpu);
  const Tensor mine = host_copy(slice);
  if (range.size() > 0)
    std::memcpy(full.f32() + range.begin, mine.f32(), static_cast<std::size_t>(range.size()) * sizeof(float));
  group.all_gather(full);
  return full;
}

// Keeps the `keep` newest complete checkpoints of `dir` (by their manifests' times; `newest` is one of them) and
// removes the others. Directories without a manifest (a save that failed) are not ours to judge and stay.
void remove_older_checkpoints(const std::string& dir, const fs::path& newest, int keep) {
  std::error_code error;
  std::vector<std::pair<fs::file_time_type, fs::path>> others;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const fs::path manifest = entry.path() / "manifest.json";
    const std::string name = entry.path().filename().string();
    const std::size_t suffix = std::strlen(kPartialSuffix);
    const bool partial = name.size() > suffix && name.compare(name.size() - suffix, suffix, kPartialSuffix) == 0;
    if (entry.path() == newest || name.rfind("step-", 0) != 0 || partial || !fs::is_regular_file(manifest, error))
      continue;
    others.emplace_back(fs::last_write_time(manifest, error), entry.path());
  }
  std::sort(others.begin(), others.end(), [](const auto& a, const auto& b) { return a > b; });  // newest first, then by name
  for (std::size_t i = static_cast<std::size_t>(keep - 1); i < others.size(); ++i) fs::remove_all(others[i].second, error);
}

}  // namespace

std::string save_checkpoint(const std::string& dir, std::int64_t next_step, PipelineModule& module,
                            Optimizer& optimizer, const PipelineParallelGrid& grid, const ModelDescription& d,
                            const std::string& settings, int keep) {
  // Every rank writes into DIR/step-N.partial; once all have written and verified their files and rank 0 the
  // manifest, rank 0 renames it to step-N and only then moves `latest`. A step that already has a checkpoint (saved
  // again after resuming from an older one) is renamed to step-N.1 (.2, ...), never over it: `latest` may name
  // it. Once `latest` names the new one, the one it replaces goes. A save that fails leaves only a .partial
  // directory, which nothing loads or counts.
  auto copy_dir = [&](int copy) {
    return fs::path(dir) / (step_name(next_step) + (copy == 0 ? "" : "." + std::to_string(copy)));
  };
  const fs::path partial = fs::path(dir) / (step_name(next_step) + kPartialSuffix);
  const std::vector<int> owner = tie_owner_of(d);
  // Replica 0 of each stage writes its layers; the others hold the same values.
  const bool writer = grid.data_parallel_id() == 0 && grid.model_parallel_id() == 0;
  // Under ZeRO-1 the optimizer state is in slices over the data-parallel group: the writers gather it first, one
  // tensor at a time and before anything can fail on a disk, so that the checkpoint is the same as without
  // --zero and loads under any data-parallel degree.
  std::map<std::string, Tensor> gathered;  // "LAYER/opt.m.NAME" -> the whole tensor (writers only)
  if (optimizer.sharded()) {
    const std::unique_ptr<Comm> group = make_mpi_comm(grid.data_parallel_comm(), "the data-parallel group");
    for (auto& local : module.layers())
      for (auto& p : local.layer->parameters()) {
        if (!stores(p, local.index, owner)) continue;
        const Optimizer::State state = optimizer.state_of(p);
        const ShardRange range = optimizer.shard_of(p);
        if (const Tensor* master = optimizer.master_slice(p)) {  // mixed precision: the float32 master is split too
          Tensor whole = gathered_state(*master, p, range, *group);
          if (writer) gathered[std::to_string(local.index) + "/" + p.spec.name] = whole;
        }
        const std::string prefix = std::to_string(local.index) + "/opt.";
        Tensor m = gathered_state(*state.first, p, range, *group);
        if (writer) gathered[prefix + "m." + p.spec.name] = m;
        if (!state.second) continue;
        Tensor v = gathered_state(*state.second, p, range, *group);
        if (writer) gathered[prefix + "v." + p.spec.name] = v;
      }
  }
  auto state_copy = [&](int layer, const std::string& key, const Tensor& local_state) {
    return optimizer.sharded() ? gathered.at(std::to_string(layer) + "/" + key) : host_copy(local_state);
  };
  json mine = json::object();
  PhaseResult result;
  // Three phases, each ending with every rank agreeing (which is also the
  // barrier): rank 0 makes the directory, the writers write into it, then rank
  // 0 writes the manifest and puts the checkpoint in place.
  auto make_directory = [&] {
    if (grid.global_rank() != 0) return;
    std::error_code error;
    fs::remove_all(partial, error);  // what a failed save left
    fs::create_directories(partial, error);  // a file in the way fails here
    if (error)
      throw Error("--save " + dir + ": cannot create the checkpoint's directory " + partial.string() + " (" +
                  error.message() + ")");
  };
  auto write_layers = [&] {
    if (!writer) return;
    for (auto& local : module.layers()) {
      std::vector<std::pair<std::string, Tensor>> held;
      for (auto& p : local.layer->parameters()) {
        if (!stores(p, local.index, owner)) continue;
        held.emplace_back(p.spec.name, optimizer.master_slice(p)  // float32 under mixed precision too
                                           ? gathered.at(std::to_string(local.index) + "/" + p.spec.name)
                                           : host_copy(master_of(p)));
        Optimizer::State state = optimizer.state_of(p);
        held.emplace_back("opt.m." + p.spec.name, state_copy(local.index, "opt.m." + p.spec.name, *state.first));
        if (state.second)
          held.emplace_back("opt.v." + p.spec.name, state_copy(local.index, "opt.v." + p.spec.name, *state.second));
      }
      std::vector<std::pair<std::string, const Tensor*>> tensors;
      for (const auto& [name, tensor] : held) tensors.emplace_back(name, &tensor);
      const std::string name = layer_file(local.index);
      const std::string path = (partial / name).string();
      auto bytes = serialize_safetensors(tensors, {{"layer", std::to_string(local.index)}, {"type", local.type}}, path);
      write_atomically(path, bytes.data(), bytes.size());
      const std::string sum = hex(fnv1a(bytes.data(), bytes.size()));
      // Read back: what is on the disk is what the manifest will vouch for.
      const std::vector<std::uint8_t> written = read_file(path);
      if (hex(fnv1a(written.data(), written.size())) != sum)
        throw Error("checkpoint: " + path + " reads back other bytes than were written");
      mine[name] = sum;
    }
  };
  // A failure to write on any rank fails the save on every rank, and the
  // previous checkpoint stays the latest.
  bool ok = run_phase_on_all(grid.world(), make_directory, result, "making the checkpoint's directory");
  ok = ok && run_phase_on_all(grid.world(), write_layers, result, "writing the checkpoint's layers");
  auto checksums = gather_strings(grid.world(), mine.dump());
  if (!ok) throw JobError(result.ok ? "checkpoint: another rank failed to save" : result.message, result.ok);
  int copy = 0;
  auto finish = [&] {
    if (grid.global_rank() != 0) return;
    json files = json::object();
    for (const auto& c : checksums) files.update(json::parse(c));
    json manifest = {{"format", kFormat},
                     {"version", kVersion},
                     {"model", d.name},
                     {"model_fingerprint", hex(model_fingerprint(d))},
                     {"layers", d.layers.size()},
                     {"step", next_step},
                     {"optimizer", optimizer.config().kind},
                     {"optimizer_steps", optimizer.steps()},
                     {"topology", grid.topology().str()},
                     {"parts", module.parts()},
                     {"settings", json::parse(settings.empty() ? "{}" : settings)},
                     {"files", files}};
    manifest["checksum"] = manifest_checksum(manifest);
    const std::string text = manifest.dump(2) + "\n";
    write_atomically((partial / "manifest.json").string(), text.data(), text.size());
    while (fs::exists(copy_dir(copy))) ++copy;
    std::error_code error;
    fs::rename(partial, copy_dir(copy), error);
    if (error)
      throw Error("checkpoint: cannot rename " + partial.string() + " to " + copy_dir(copy).string() + " (" +
                  error.message() + ")");
    sync_directory(dir);
    const std::string latest = copy_dir(copy).filename().string() + "\n";
    write_atomically((fs::path(dir) / "latest").string(), latest.data(), latest.size());
    for (int older = 0; older < copy; ++older) {  // the checkpoints of this step that the new one replaces
      std::error_code ignored;
      fs::remove_all(copy_dir(older), ignored);
    }
    if (keep > 0) remove_older_checkpoints(dir, copy_dir(copy), keep);
  };
  if (!run_phase_on_all(grid.world(), finish, result, "putting the checkpoint in place"))
    throw JobError(result.ok ? "checkpoint: rank 0 failed to put it in place" : result.message, result.ok);
  return copy_dir(broadcast_int(grid.world(), copy, 0, "the name of the checkpoint's directory")).string();
}

void check_checkpoint_dir(const std::string& dir) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) throw Error("--save " + dir + ": cannot create the directory (" + error.message() + ")");
  if (!fs::is_directory(dir)) throw Error("--save " + dir + ": not a directory");
  const std::string probe = (fs::path(dir) / ".pipe-train-write-check").string();
  try {
    write_atomically(probe, "ok\n", 3);
  } catch (const Error& e) {
    throw Error("--save " + dir + ": cannot write there (" + e.what() + ")");
  }
  fs::remove(probe, error);
}

std::shared_ptr<void> lock_checkpoint_dir(const std::string& dir) {
  const std::string path = (fs::path(dir) / ".pipe-train.lock").string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("--save " + dir + ": cannot open " + path + " (" + std::strerror(errno) + ")");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int why = errno;
    char holder[256] = {0};
    const ssize_t n = ::pread(fd, holder, sizeof holder - 1, 0);
    ::close(fd);
    std::string who = n > 0 ? std::string(holder, static_cast<std::size_t>(n)) : "";
    while (!who.empty() && (who.back() == '\n' || who.back() == '\0')) who.pop_back();
    if (why == EWOULDBLOCK)
      throw Error("--save " + dir + " is in use by another pipe-train job" + (who.empty() ? "" : " (" + who + ")") +
                  ": two jobs saving into one directory would overwrite each other's checkpoints");
    throw Error("--save " + dir + ": cannot lock " + path + " (" + std::strerror(why) + ")");
  }
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  const std::string me = "pid " + std::to_string(::getpid()) + " on " + host + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    // The lock holds without its note; only the refusal's message of a second job loses the holder's name.
  }
  return std::shared_ptr<void>(nullptr, [fd](void*) { ::close(fd); });
}

std::string checkpoint_step_dir(const std::string& dir) { return checkpoint_step_dir(dir, "--load " + dir); }

std::string checkpoint_step_dir(const std::string& dir, const std::string& what) {
  fs::path root = dir;
  if (!fs::exists(root / "manifest.json")) {
    require_regular_file((root / "latest").string(), what + ": latest");
    std::ifstream latest(root / "latest");
    std::string name;
    if (!latest) throw Error(what + ": no checkpoint there (neither manifest.json nor latest)");
    if (!(latest >> name)) throw Error(what + ": latest is empty (it should name a step-N directory)");
    // latest names a checkpoint of this folder, never a path elsewhere (nor a link out of it).
    std::error_code target_error, root_error;
    const fs::path target = fs::canonical(root / name, target_error), folder = fs::canonical(root, root_error);
    const bool inside = name.rfind("step-", 0) == 0 && name.find('/') == std::string::npos && !target_error &&
                        !root_error && target.parent_path() == folder;
    if (!inside)
      throw Error(what + ": latest names '" + name + "', which is not a step-N directory of " + dir);
    root /= name;
  }
  return root.string();
}

std::int64_t load_checkpoint(const std::string& dir, PipelineModule& module, Optimizer& optimizer,
                             const ModelDescription& d) {
  return load_checkpoint(dir, module, &optimizer, d);
}

std::int64_t load_checkpoint_weights(const std::string& dir, PipelineModule& module, const ModelDescription& d) {
  return load_checkpoint(dir, module, nullptr, d);
}

std::int64_t load_checkpoint(const std::string& dir, PipelineModule& module, Optimizer* optimizer,
                             const ModelDescription& d) {
  const fs::path root = checkpoint_step_dir(dir);
  const std::string manifest_path = (root / "manifest.json").string();
  const std::vector<std::uint8_t> manifest_bytes = read_file(manifest_path);
  const CheckpointManifest manifest =
      parse_checkpoint_manifest(std::string(manifest_bytes.begin(), manifest_bytes.end()), manifest_path);
  if (manifest.model_fingerprint != hex(model_fingerprint(d)))
    throw Error("checkpoint " + manifest_path + " is of another model ('" + manifest.model + "', " +
                std::to_string(manifest.layers) + " layers): its layers, shapes or ties differ");
  const std::map<std::string, std::string>& files = manifest.files;
  const std::vector<int> owner = tie_owner_of(d);

  // Each local layer's file (and the tie owner's for a tied weight).
  std::map<int, std::map<std::string, Tensor>> cache;
  auto tensors_of = [&](int layer) -> std::map<std::string, Tensor>& {
    auto it = cache.find(layer);
    if (it != cache.end()) return it->second;
    const std::string name = layer_file(layer);
    const std::string path = (root / name).string();
    if (!files.count(name)) throw Error("checkpoint " + manifest_path + " lists no file for layer " +
                                        std::to_string(layer) + " (" + name + ")");
    auto bytes = read_file(path);
    if (hex(fnv1a(bytes.data(), bytes.size())) != files.at(name))
      throw Error("checkpoint " + path + ": checksum mismatch (the file is corrupt or was changed)");
    return cache[layer] = parse_safetensors(bytes.data(), bytes.size(), path);
  };
  // Every tensor is found and checked first; only then is anything copied, so that a bad checkpoint leaves the
  // run as it was.
  std::vector<std::pair<Tensor*, const Tensor*>> copies;
  auto restore = [&](Tensor& into, const std::map<std::string, Tensor>& from, const std::string& key, int layer) {
    auto it = from.find(key);
    if (it == from.end())
      throw Error("checkpoint " + (root / layer_file(layer)).string() + ": missing tensor '" + key + "'");
    if (it->second.shape() != into.shape() || it->second.dtype() != into.dtype())
      throw Error("checkpoint " + (root / layer_file(layer)).string() + ": tensor '" + key + "' is " +
                  type_str({it->second.shape(), it->second.dtype()}) + ", the layer needs " +
                  type_str({into.shape(), into.dtype()}));
    copies.emplace_back(&into, &it->second);
  };
  // Optimizer state: the whole tensor, or under ZeRO-1 this rank's slice of it (any data-parallel degree loads
  // any checkpoint: the files hold the whole state).
  std::deque<Tensor> slices;  // views of the files' tensors, alive until the copies below
  auto restore_state = [&](Tensor& into, const Parameter& p, const ShardRange& range,
                           const std::map<std::string, Tensor>& from, const std::string& key, int layer) {
    if (into.shape() == p.value.shape()) return restore(into, from, key, layer);  // not sharded
    auto it = from.find(key);
    if (it == from.end())
      throw Error("checkpoint " + (root / layer_file(layer)).string() + ": missing tensor '" + key + "'");
    if (it->second.shape() != p.value.shape() || it->second.dtype() != DType::float32)
      throw Error("checkpoint " + (root / layer_file(layer)).string() + ": tensor '" + key + "' is " +
                  type_str({it->second.shape(), it->second.dtype()}) + ", the layer needs " +
                  type_str({p.value.shape(), DType::float32}));
    slices.push_back(shard_view(const_cast<Tensor&>(it->second), range));
    copies.emplace_back(&into, &slices.back());
  };
  if (optimizer && manifest.optimizer != optimizer->config().kind)
    throw Error("checkpoint " + manifest_path + " was saved with optimizer '" + manifest.optimizer +
                "'; this run uses '" + optimizer->config().kind + "'");
  // Every local layer's file is read and checked, those of layers without parameters too: a checkpoint with a
  // missing or changed file is refused whole, as the manifest promises.
  for (auto& local : module.layers())
    if (files.count(layer_file(local.index))) tensors_of(local.index);
  std::vector<Parameter*> restored;
  // Split masters: each parameter's value is rounded from the whole master in the file.
  std::vector<std::pair<Parameter*, const Tensor*>> rounded_values;
  for (auto& local : module.layers())
    for (auto& p : local.layer->parameters()) {
      // A tied weight held by a later layer comes from its owner's file.
      int source = local.index;
      std::string key = p.spec.name;
      if (!stores(p, local.index, owner)) {
        source = owner[local.index];
        for (const auto& spec : d.layers[source].description.params)
          if (spec.tieable) key = spec.name;
      }
      const auto& tensors = tensors_of(source);
      if (Tensor* master = optimizer ? optimizer->master_slice(p) : nullptr) {
        // Split master (ZeRO-1 under bf16): this rank's slice, and the value rounded from the whole.
        restore_state(*master, p, optimizer->shard_of(p), tensors, key, source);
        rounded_values.emplace_back(&p, &tensors.at(key));
      } else {
        restore(master_of(p), tensors, key, source);
      }
      if (optimizer) {
        Optimizer::State state = optimizer->state_of(p);
        restore_state(*state.first, p, optimizer->shard_of(p), tensors, "opt.m." + key, source);
        if (state.second) restore_state(*state.second, p, optimizer->shard_of(p), tensors, "opt.v." + key, source);
      }
      restored.push_back(&p);
    }
  for (const auto& [into, from] : copies)
    backend_for(into->device()).copy_from_host(into->data(), from->data(), into->bytes());
  for (Parameter* p : restored) refresh_from_master(*p);
  for (const auto& [p, whole] : rounded_values) {
    const Tensor rounded = ops::to_dtype(*whole, p->value.dtype());
    backend_for(p->value.device()).copy_from_host(p->value.data(), rounded.data(), p->value.bytes());
  }
  if (optimizer) optimizer->set_steps(manifest.optimizer_steps);
  return manifest.step;
}

CheckpointManifest parse_checkpoint_manifest(const std::string& text, const std::string& path) {
  json manifest;
  try {
    manifest = json::parse(text);
  } catch (const json::exception& e) {
    throw Error("checkpoint " + path + ": not a valid manifest (" + e.what() + ")");
  }
  // The structure is checked once, here, so that nothing after can meet a value of the wrong type (found by
  // fuzzing).
  auto integer = [&](const char* key) {
    if (!manifest.is_object() || !manifest.contains(key) || !manifest[key].is_number_integer() ||
        manifest[key].get<std::int64_t>() < 0)
      throw Error("checkpoint " + path + ": '" + key + "' must be a non-negative integer");
    return manifest[key].get<std::int64_t>();
  };
  auto text_of = [&](const char* key) {
    if (!manifest.is_object() || !manifest.contains(key) || !manifest[key].is_string())
      throw Error("checkpoint " + path + ": '" + key + "' must be a string");
    return manifest[key].get<std::string>();
  };
  CheckpointManifest m;
  const std::string format = text_of("format");
  m.model = text_of("model");
  m.model_fingerprint = text_of("model_fingerprint");
  m.optimizer = text_of("optimizer");
  const std::int64_t version = integer("version");
  m.layers = integer("layers");
  m.step = integer("step");
  m.optimizer_steps = integer("optimizer_steps");
  if (!manifest.contains("files") || !manifest["files"].is_object())
    throw Error("checkpoint " + path + ": 'files' must be an object");
  for (const auto& [name, sum] : manifest["files"].items()) {
    if (!sum.is_string()) throw Error("checkpoint " + path + ": the checksum of " + name + " is not a string");
    m.files[name] = sum.get<std::string>();
  }
  if (format != kFormat || version < 1 || version > kVersion)
    throw Error("checkpoint " + path + ": not a libpipe checkpoint of format version 1 to " + std::to_string(kVersion));
  m.version = static_cast<int>(version);
  if (version >= 2 && text_of("checksum") != manifest_checksum(manifest))
    throw Error("checkpoint " + path + ": the manifest does not match its checksum (it was edited or is corrupt)");
  return m;
}

}  // namespace libpipe
