#include "core/staging.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#include <cerrno>
#include <cstdio>
#include <cstring>
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
    // ".NAME.chatvec-tmp-PID", "-PID.N" (a process's N-th staging path) or
    // "-PID-dir..." (the model directory staged beside a GGUF file).
    if (!end || (*end != '\0' && *end != '.' && *end != '-') || pid <= 0) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // still alive
    remove_tree(e.path().string());
  }
}

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

// renameat2(2) through syscall(2) (the glibc wrapper appeared only in 2.28).
// -1 with errno ENOSYS where the kernel lacks it.
std::atomic<bool> g_no_rename2{false};

int rename2(const std::string& from, const std::string& to, unsigned flags) {
  if (g_no_rename2.load(std::memory_order_relaxed)) {
    errno = EINVAL;  // as a file system without the flags answers
    return -1;
  }
#ifdef SYS_renameat2
  return int(::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
#else
  (void)from, (void)to, (void)flags;
  errno = ENOSYS;
  return -1;
#endif
}

// The file system (or kernel) does not implement the flag.
bool unsupported(int e) { return e == EINVAL || e == ENOSYS || e == EOPNOTSUPP; }

// rename(2) failing because something is at the destination.
bool occupied(int e) { return e == EEXIST || e == ENOTEMPTY || e == ENOTDIR || e == EISDIR; }

[[noreturn]] void refuse_existing(const std::string& final_path) {
  throw InputError(final_path + ": already exists (another run wrote it while this one ran; use --force to replace it)");
}

// Staging paths of one process are numbered after the first.
std::atomic<unsigned> g_staging_count{0};

}  // namespace

void staging_test_disable_rename2(bool disable) { g_no_rename2 = disable; }

int rename_noreplace(const std::string& from, const std::string& to) {
  const int r = rename2(from, to, RENAME_NOREPLACE);
  if (r == 0 || !unsupported(errno)) return r;
  return ::rename(from.c_str(), to.c_str());
}

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
  if (const unsigned n = g_staging_count.fetch_add(1); n > 0) {
    staging_ += '.';
    staging_ += std::to_string(n);
  }
  remove_tree(staging_);
  if (kind_ == Kind::Directory && ::mkdir(staging_.c_str(), 0755) != 0)
    throw_errno(staging_ + ": cannot create");
}

StagedOutput::~StagedOutput() {
  if (!committed_) remove_tree(staging_);
}

// Without --force nothing may be replaced, atomically: the existence check of
// the constructor ran long ago, and another run may have put its output in
// place since.  rename(RENAME_NOREPLACE) fails with EEXIST then.  Where the
// file system does not implement the flag: a file is hard-linked into place
// (link(2) never replaces) and its staging name unlinked; a directory is
// renamed with plain rename(2), which refuses a non-empty directory or a
// file at the destination (an output directory is never empty).
void StagedOutput::commit_noreplace() {
  if (rename2(staging_, final_, RENAME_NOREPLACE) == 0) return;
  int e = errno;
  if (e == EEXIST) refuse_existing(final_);
  if (!unsupported(e)) {
    errno = e;
    throw_errno(final_ + ": cannot move the output into place");
  }
  if (kind_ == Kind::File) {
    if (::link(staging_.c_str(), final_.c_str()) == 0) {
      ::unlink(staging_.c_str());
      return;
    }
    e = errno;
    if (e == EEXIST) refuse_existing(final_);
    throw RuntimeFailure(final_ + ": cannot move the output into place without risking replacing another run's (" +
                         "the file system supports neither RENAME_NOREPLACE nor hard links: " + std::strerror(e) +
                         "); use --force to allow replacing");
  }
  if (path_exists(final_)) refuse_existing(final_);
  if (::rename(staging_.c_str(), final_.c_str()) == 0) return;
  e = errno;
  if (occupied(e)) refuse_existing(final_);
  errno = e;
  throw_errno(final_ + ": cannot move the output into place");
}

// With --force an existing output is replaced, and whatever several runs do
// at once the final path always holds one complete output: the new one is
// exchanged with the old atomically (RENAME_EXCHANGE) and the old one, now
// at the staging path, removed.  Where the flag is not implemented: the old
// output is moved aside and the new one renamed into place, retried while
// another run's output appears in between.
void StagedOutput::commit_replace() {
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (rename2(staging_, final_, RENAME_NOREPLACE) == 0) return;
    int e = errno;
    if (e == EEXIST) {
      if (rename2(staging_, final_, RENAME_EXCHANGE) == 0) {
        remove_tree(staging_);  // the old output
        return;
      }
      e = errno;
      if (e == ENOENT) continue;  // it went away in between: try again
    }
    if (!unsupported(e)) {
      errno = e;
      throw_errno(final_ + ": cannot move the output into place");
    }
    // Fallback: move aside, then rename.
    // Unique per staged output (threads of one process share the PID), and
    // named like the staging path so that remove_stale() finds it after a crash.
    const std::string old = staging_ + "-old";
    remove_tree(old);
    if (::rename(final_.c_str(), old.c_str()) != 0 && errno != ENOENT)
      throw_errno(final_ + ": cannot move the old output aside");
    if (::rename(staging_.c_str(), final_.c_str()) == 0) {
      remove_tree(old);
      return;
    }
    e = errno;
    remove_tree(old);
    if (!occupied(e)) {
      errno = e;
      throw_errno(final_ + ": cannot move the output into place");
    }
    // Another run's output arrived between the two renames: replace it too.
  }
  throw RuntimeFailure(final_ + ": cannot move the output into place: other runs keep replacing it");
}

void StagedOutput::commit() {
  if (kind_ == Kind::Directory) sync_directory(staging_);
  if (force_) commit_replace();
  else commit_noreplace();
  committed_ = true;
  sync_directory(parent_);
}

}  // namespace chatvec
