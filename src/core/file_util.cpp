#include "core/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/sigbus_guard.h"

namespace chatvec {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!path_exists(path)) throw InputError(path + ": no such file");
    throw_errno(path + ": cannot open");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw_errno(path + ": read error");
  return ss.str();
}

std::vector<std::string> read_nonempty_lines(const std::string& path, int64_t max_lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!path_exists(path)) throw InputError(path + ": no such file");
    throw_errno(path + ": cannot open");
  }
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    lines.push_back(line);
    if (max_lines > 0 && int64_t(lines.size()) >= max_lines) break;
  }
  return lines;
}

bool path_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint64_t free_space(const std::string& path) {
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) throw_errno(path + ": cannot query free space");
  return uint64_t(vfs.f_bavail) * uint64_t(vfs.f_frsize);
}

OutputFile::OutputFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_errno(path + ": cannot create");
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void OutputFile::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      // EFAULT: the bytes came from an input's map (a same-dtype copy) and
      // the input was truncated meanwhile.  Say that, not "Bad address".
      if (errno == EFAULT) {
        const int e = errno;
        check_input_faults();
        errno = e;
      }
      throw_errno(path_ + ": write failed");
    }
    p += w;
    n -= size_t(w);
    written_ += uint64_t(w);
  }
}

void OutputFile::reserve(uint64_t bytes) {
  if (bytes == 0) return;
  int r = ::posix_fallocate(fd_, 0, off_t(bytes));
  if (r == ENOSPC) {
    errno = ENOSPC;
    throw_errno(path_ + ": cannot reserve " + human_bytes(bytes));
  }
  // Other errors (EOPNOTSUPP on some file systems) are not fatal: the writes
  // themselves will report a full disk.
}

void OutputFile::flush_behind() {
  constexpr uint64_t kWindow = 64ull << 20;
  if (written_ - flushed_ < kWindow) return;
  // Start write-back of the new range, and drop the previous window (whose
  // write-back was started last time) from the page cache.
  ::sync_file_range(fd_, off_t(flushed_), off_t(written_ - flushed_), SYNC_FILE_RANGE_WRITE);
  if (flushed_ >= kWindow) {
    ::sync_file_range(fd_, 0, off_t(flushed_), SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                                   SYNC_FILE_RANGE_WAIT_AFTER);
    ::posix_fadvise(fd_, 0, off_t(flushed_), POSIX_FADV_DONTNEED);
  }
  flushed_ = written_;
}

void OutputFile::sync() {
  if (::fsync(fd_) != 0) throw_errno(path_ + ": fsync failed");
}

void OutputFile::close() {
  if (fd_ < 0) return;
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw_errno(path_ + ": close failed");
}

void write_file(const std::string& path, std::string_view content) {
  OutputFile f(path);
  f.write(content);
  f.close();
}

void copy_file(const std::string& from, const std::string& to) { write_file(to, read_file(from)); }

void sync_directory(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_errno(path + ": cannot open directory");
  int r = ::fsync(fd);
  ::close(fd);
  if (r != 0 && errno != EINVAL) throw_errno(path + ": fsync failed");
}

uint64_t parse_size(std::string_view s) {
  std::string orig(s);
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) throw InputError("invalid size \"" + orig + "\": expected a number such as 5GB, 500MB or 2GiB");
  double value;
  try {
    value = std::stod(std::string(s.substr(0, i)));
  } catch (...) {
    throw InputError("invalid size \"" + orig + "\"");
  }
  std::string unit;
  for (char c : s.substr(i))
    if (c != ' ') unit += char(std::toupper(static_cast<unsigned char>(c)));
  double mult;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KB" || unit == "K") mult = 1e3;
  else if (unit == "MB" || unit == "M") mult = 1e6;
  else if (unit == "GB" || unit == "G") mult = 1e9;
  else if (unit == "TB" || unit == "T") mult = 1e12;
  else if (unit == "KIB") mult = 1024.0;
  else if (unit == "MIB") mult = 1024.0 * 1024;
  else if (unit == "GIB") mult = 1024.0 * 1024 * 1024;
  else if (unit == "TIB") mult = 1024.0 * 1024 * 1024 * 1024;
  else throw InputError("invalid size \"" + orig + "\": unknown unit \"" + unit + "\" (use B, KB, MB, GB, KiB, MiB, GiB)");
  double bytes = value * mult;
  if (bytes < 1 || bytes > 1.8e19) throw InputError("invalid size \"" + orig + "\": out of range");
  return uint64_t(bytes);
}

std::string human_bytes(uint64_t n) {
  char buf[64];
  if (n < 1000) std::snprintf(buf, sizeof buf, "%llu B", (unsigned long long)n);
  else if (n < 1000000) std::snprintf(buf, sizeof buf, "%.1f kB", double(n) / 1e3);
  else if (n < 1000000000) std::snprintf(buf, sizeof buf, "%.1f MB", double(n) / 1e6);
  else std::snprintf(buf, sizeof buf, "%.2f GB", double(n) / 1e9);
  return buf;
}

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.1fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

}  // namespace chatvec
