// dlopen-based plugin loading.
//
// Plugins are never dlclose'd: layers and factories they created hold vtables
// inside the plugin's code, and unloading under them would crash at exit. The
// registry keeps the handles only to record what was loaded.
#include "pipe/plugin_loader.hpp"

#include <dlfcn.h>
#include <elf.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include "pipe/error.hpp"
#include "pipe/paths.hpp"
#include "pipe/plugin.hpp"

namespace fs = std::filesystem;

namespace libpipe {

using PluginEntry = int (*)(int, LayerRegistry*);

namespace {

// What dlopen would trip over: dlopen maps a file's segments as its program headers say, and touching a page past
// the end of a truncated file is SIGBUS inside dlopen, not an error. So before dlopen: a regular file, a 64-bit
// ELF shared object whose program headers, and every segment they map from the file, lie inside it. The reason
// why not, or "" when it looks loadable.
std::string elf_problem(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "cannot open the file";
  in.seekg(0, std::ios::end);
  const auto size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);
  Elf64_Ehdr header{};
  if (size < sizeof header || !in.read(reinterpret_cast<char*>(&header), sizeof header) ||
      std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0)
    return "not an ELF file";
  if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_type != ET_DYN) return "not a 64-bit ELF shared object";
  if (header.e_phentsize != sizeof(Elf64_Phdr) ||
      header.e_phoff + static_cast<std::uint64_t>(header.e_phnum) * sizeof(Elf64_Phdr) > size)
    return "truncated or corrupt: its program headers lie outside the file (" + std::to_string(size) + " bytes)";
  std::vector<Elf64_Phdr> segments(header.e_phnum);
  in.seekg(static_cast<std::streamoff>(header.e_phoff));
  if (!in.read(reinterpret_cast<char*>(segments.data()), static_cast<std::streamsize>(segments.size() * sizeof(Elf64_Phdr))))
    return "truncated: cannot read its program headers";
  for (const Elf64_Phdr& segment : segments)
    if (segment.p_type == PT_LOAD && segment.p_offset + segment.p_filesz > size)
      return "truncated: a segment ends at byte " + std::to_string(segment.p_offset + segment.p_filesz) +
             " of a " + std::to_string(size) + "-byte file";
  return "";
}

}  // namespace

void load_plugin(LayerRegistry& registry, const std::string& path) {
  require_regular_file(path, "plugin " + path);
  if (const std::string problem = elf_problem(path); !problem.empty())
    throw Error("cannot load plugin " + path + ": " + problem);
  // RTLD_LOCAL: two plugins may use the same internal symbol names.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* error = dlerror();
    std::string why = error ? error : "unknown dlopen error";
    if (why.rfind(path + ": ", 0) == 0) why.erase(0, path.size() + 2);  // dlerror repeats the path
    throw Error("cannot load plugin " + path + ": " + why);
  }
  registry.keep_handle(handle);
  dlerror();
  auto entry = reinterpret_cast<PluginEntry>(dlsym(handle, PIPE_PLUGIN_ENTRY_SYMBOL));
  if (!entry)
    throw Error("plugin " + path + " has no entry point '" PIPE_PLUGIN_ENTRY_SYMBOL
                "' (define one with PIPE_PLUGIN from <pipe/plugin.hpp>)");
  registry.set_current_source(path);
  int plugin_abi = 0;
  try {
    plugin_abi = entry(PIPE_PLUGIN_ABI, &registry);
  } catch (...) {
    registry.set_current_source("<built in>");
    throw;
  }
  registry.set_current_source("<built in>");
  if (plugin_abi != PIPE_PLUGIN_ABI)
    throw Error("plugin " + path + " was built for plugin ABI " + std::to_string(plugin_abi) +
                " but this libpipe has plugin ABI " + std::to_string(PIPE_PLUGIN_ABI) +
                ": rebuild the plugin against this libpipe");
}

namespace {

std::vector<std::string> plugin_files(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("plugin directory '" + dir + "' does not exist");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".so") files.push_back(entry.path().string());
  if (ec) throw Error("cannot read plugin directory '" + dir + "': " + ec.message());
  std::sort(files.begin(), files.end());
  return files;
}

// Loads the plugins of `dir` not yet in `loaded` (by real path).
void load_new(LayerRegistry& registry, const std::string& dir, std::set<std::string>& loaded,
              std::vector<std::string>& out) {
  for (const auto& file : plugin_files(dir)) {
    std::error_code ec;
    std::string real = fs::canonical(file, ec).string();
    if (!ec && !loaded.insert(real).second) continue;
    load_plugin(registry, file);
    out.push_back(file);
  }
}

}  // namespace

std::vector<std::string> load_plugin_dir(LayerRegistry& registry, const std::string& dir) {
  std::set<std::string> loaded;
  std::vector<std::string> out;
  load_new(registry, dir, loaded, out);
  return out;
}

std::vector<std::string> load_plugins(LayerRegistry& registry, const PluginSearch& search) {
  std::vector<std::string> dirs;
  if (search.builtin) dirs.push_back(builtin_plugin_dir());
  if (search.environment) {
    if (const char* env = std::getenv("PIPE_PLUGIN_PATH")) {
      std::string value = env;
      std::size_t start = 0;
      while (start <= value.size()) {
        std::size_t end = value.find(':', start);
        if (end == std::string::npos) end = value.size();
        if (end > start) dirs.push_back(value.substr(start, end - start));
        start = end + 1;
      }
    }
  }
  dirs.insert(dirs.end(), search.dirs.begin(), search.dirs.end());

  std::set<std::string> loaded;
  std::vector<std::string> out;
  for (const auto& dir : dirs) load_new(registry, dir, loaded, out);
  return out;
}

}  // namespace libpipe
