#include "core/staging.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"

namespace chatvec {

namespace fs = std::filesystem;

void remove_tree(const std::string& path) noexcept {
  std::error_code ec;
  fs::remove_all(path, ec);
}

namespace {

const char kTag[] = ".chatvec-tmp-";

// Remove staging paths of `name` in `parent` whose process is gone.
void remove_stale(const std::string& parent, const std::string& name) {
  const std::string prefix = "." + name + kTag;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string f = e.path().filename().string();
    if (f.rfind(prefix, 0) != 0) continue;
    const std::string pid_s = f.substr(prefix.size());
    char* end = nullptr;
    long pid = std::strtol(pid_s.c_str(), &end, 10);
    if (!end || *end != '\0' || pid <= 0) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // still alive
    remove_tree(e.path().string());
  }
}

}  // namespace

StagedOutput::StagedOutput(std::string final_path, Kind kind, bool force)
    : final_(std::move(final_path)), kind_(kind), force_(force) {
  while (final_.size() > 1 && final_.back() == '/') final_.pop_back();
  fs::path fp(final_);
  parent_ = fp.parent_path().string();
  if (parent_.empty()) parent_ = ".";
  const std::string name = fp.filename().string();
  if (name.empty() || name == "." || name == "..") throw InputError(final_ + ": not a valid output path");
  if (!is_directory(parent_)) throw InputError(final_ + ": parent directory " + parent_ + " does not exist");
  if (path_exists(final_) && !force_)
    throw InputError(final_ + ": already exists (use --force to replace it)");
  if (path_exists(final_) && kind_ == Kind::Directory && !is_directory(final_))
    throw InputError(final_ + ": exists and is not a directory");
  remove_stale(parent_, name);
  staging_ = parent_ + "/." + name + kTag + std::to_string(::getpid());
  remove_tree(staging_);
  if (kind_ == Kind::Directory && ::mkdir(staging_.c_str(), 0755) != 0)
    throw_errno(staging_ + ": cannot create");
}

StagedOutput::~StagedOutput() {
  if (!committed_) remove_tree(staging_);
}

void StagedOutput::commit() {
  if (kind_ == Kind::Directory) sync_directory(staging_);
  std::string old;
  if (path_exists(final_)) {
    // Move the old output aside first, so the final path is never a mix.
    old = parent_ + "/." + fs::path(final_).filename().string() + ".chatvec-old-" + std::to_string(::getpid());
    remove_tree(old);
    if (::rename(final_.c_str(), old.c_str()) != 0) throw_errno(final_ + ": cannot move the old output aside");
  }
  if (::rename(staging_.c_str(), final_.c_str()) != 0) throw_errno(final_ + ": cannot move the output into place");
  committed_ = true;
  sync_directory(parent_);
  if (!old.empty()) remove_tree(old);
}

}  // namespace chatvec
