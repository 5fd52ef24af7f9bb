// Locating libpipe's plugins and models relative to libpipe.so itself.
#include "pipe/paths.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>
#include <sys/stat.h>

#include "pipe/error.hpp"

namespace fs = std::filesystem;

namespace libpipe {

std::string library_dir() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&library_dir), &info) == 0 || !info.dli_fname)
    throw Error("cannot locate libpipe.so (dladdr failed)");
  return fs::canonical(info.dli_fname).parent_path().string();
}

std::string builtin_plugin_dir() { return (fs::path(library_dir()) / PIPE_PLUGIN_SUBDIR).string(); }

std::string builtin_model_dir() {
  return (fs::path(library_dir()) / PIPE_MODEL_RELDIR).lexically_normal().string();
}

std::vector<std::string> builtin_model_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(builtin_model_dir(), ec))
    if (entry.path().extension() == ".toml") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string resolve_model_path(const std::string& name_or_path) {
  if (fs::is_regular_file(name_or_path)) return name_or_path;
  if (name_or_path.find('/') == std::string::npos) {
    fs::path shipped = fs::path(builtin_model_dir()) / name_or_path;
    if (shipped.extension() != ".toml") shipped += ".toml";
    if (fs::is_regular_file(shipped)) return shipped.string();
  }
  // Something that is not a file (a directory, a device) and no shipped model's name: refused as what it is.
  std::error_code error;
  if (fs::exists(name_or_path, error)) require_regular_file(name_or_path, "model file '" + name_or_path + "'");
  std::string list;
  for (const auto& n : builtin_model_names()) list += (list.empty() ? "" : ", ") + n;
  throw Error("model '" + name_or_path + "' is neither a file nor a shipped model (shipped: " +
              (list.empty() ? "none found in " + builtin_model_dir() : list) + ")");
}

void require_regular_file(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || S_ISREG(st.st_mode)) return;
  const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                     : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : "not a file";
  throw Error(what + ": not a regular file (" + kind + ")");
}

}  // namespace libpipe
