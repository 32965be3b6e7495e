// Small, checked file-system helpers.  Every failure names the path.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chatvec {

std::string read_file(const std::string& path);
// The non-empty lines of a text file (CR stripped), at most `max_lines`
// when positive.
std::vector<std::string> read_nonempty_lines(const std::string& path, int64_t max_lines = 0);
bool path_exists(const std::string& path);
bool is_directory(const std::string& path);
// Bytes available to an unprivileged user on the file system holding `path`.
uint64_t free_space(const std::string& path);

// A file opened for writing, created new.  write() loops over short writes;
// errors (including ENOSPC) throw with the path.
class OutputFile {
 public:
  explicit OutputFile(const std::string& path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Reserve space up front (fallocate) so that a full disk fails early.
  void reserve(uint64_t bytes);
  // Ask the kernel to start writing back what was written and to drop it
  // from the page cache once written: keeps dirty memory bounded.
  void flush_behind();
  void sync();   // fsync
  void close();  // close, checking for errors
  uint64_t written() const { return written_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t written_ = 0;
  uint64_t flushed_ = 0;
};

// Write a small file in one go (used for config and card files).
void write_file(const std::string& path, std::string_view content);
void copy_file(const std::string& from, const std::string& to);
// fsync a directory so that renames inside it are durable.
void sync_directory(const std::string& path);

// Parse a size such as "5GB" (decimal), "2GiB" (binary), "500MB", "1234".
uint64_t parse_size(std::string_view s);
// "2.47 GB" style, decimal units.
std::string human_bytes(uint64_t n);
// A duration as "4.2s", "1m23s" or "2h05m".
std::string format_duration(double seconds);

}  // namespace chatvec
