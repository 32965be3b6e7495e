// A read-only memory map of a whole file.
//
// Inputs are only ever mapped read-only, so they can never be modified.  The
// map can hand pages back to the kernel (release) once a range has been
// consumed, so that resident memory stays bounded while streaming.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace chatvec {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Tell the kernel we will read [offset, offset+len) soon, sequentially.
  void will_need(size_t offset, size_t len) const;
  // Unmap the pages of [offset, offset+len) from this process (they stay in
  // the page cache): they have been consumed and no longer count in RSS.
  void release(size_t offset, size_t len) const;
  // Bytes of [offset, offset+len) now in the page cache (mincore), whole
  // pages counted; 0 when the kernel will not say.
  size_t resident(size_t offset, size_t len) const;
  // For a map read whole and often (the engine's weights): ask for huge
  // pages (MADV_HUGEPAGE: pages read from now on come in 2 MiB folios, mapped
  // with one TLB entry each) and map every page now (MADV_POPULATE_READ, one
  // call instead of a fault per 64 KiB on the first forward pass), when the
  // file is at most half the machine's memory.  Hints: a kernel that does
  // not know them changes nothing.
  void populate_huge() const;

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace chatvec
