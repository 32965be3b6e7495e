#include "core/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/sigbus_guard.h"

namespace chatvec {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) {
    if (errno == ENOENT) throw InputError(path + ": no such file");
    throw_errno(path + ": cannot open");
  }
  struct stat st {};
  if (::fstat(fd_, &st) != 0) throw_errno(path + ": cannot stat");
  if (!S_ISREG(st.st_mode)) throw InputError(path + ": not a regular file");
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) throw_errno(path + ": cannot memory-map");
    data_ = static_cast<const uint8_t*>(p);
    watch_mapped_input(data_, size_, path_, fd_);  // truncation while mapped: an error, not SIGBUS
  }
}

MappedFile::~MappedFile() {
  unwatch_mapped_input(data_);
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept
    : path_(std::move(o.path_)), data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)), fd_(std::exchange(o.fd_, -1)) {}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    this->~MappedFile();
    new (this) MappedFile(std::move(o));
  }
  return *this;
}

namespace {
// Page-align a range inwards/outwards as madvise requires.
void page_range(const uint8_t* base, size_t offset, size_t len, uint8_t** start, size_t* n) {
  static const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  uintptr_t s = reinterpret_cast<uintptr_t>(base + offset) & ~(page - 1);
  uintptr_t e = reinterpret_cast<uintptr_t>(base + offset + len);
  *start = reinterpret_cast<uint8_t*>(s);
  *n = e - s;
}
}  // namespace

void MappedFile::will_need(size_t offset, size_t len) const {
  if (!data_ || len == 0) return;
  uint8_t* s;
  size_t n;
  page_range(data_, offset, len, &s, &n);
  ::madvise(s, n, MADV_WILLNEED);
}

void MappedFile::release(size_t offset, size_t len) const {
  if (!data_ || len == 0) return;
  uint8_t* s;
  size_t n;
  page_range(data_, offset, len, &s, &n);
  ::madvise(s, n, MADV_DONTNEED);
}

void MappedFile::populate_huge() const {
  if (!data_ || size_ == 0) return;
  void* p = const_cast<uint8_t*>(data_);  // page-aligned: the start of the map
#ifdef MADV_HUGEPAGE
  ::madvise(p, size_, MADV_HUGEPAGE);
#endif
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0 || size_ > uint64_t(pages) * uint64_t(page) / 2) return;
  constexpr int kPopulateRead = 22;  // MADV_POPULATE_READ (Linux 5.14)
  ::madvise(p, size_, kPopulateRead);
}

size_t MappedFile::resident(size_t offset, size_t len) const {
  if (!data_ || len == 0 || offset >= size_) return 0;
  len = std::min(len, size_ - offset);
  static const size_t page = size_t(::sysconf(_SC_PAGESIZE));
  uint8_t* s;
  size_t n;
  page_range(data_, offset, len, &s, &n);
  size_t total = 0;
  std::vector<unsigned char> vec;
  constexpr size_t kStep = 1ull << 30;  // a 1 GiB window at a time: 256 KiB of flags
  for (size_t done = 0; done < n; done += kStep) {
    const size_t m = std::min(kStep, n - done);
    vec.resize((m + page - 1) / page);
    if (::mincore(s + done, m, vec.data()) != 0) return 0;
    for (unsigned char v : vec) total += (v & 1) ? page : 0;
  }
  return std::min(total, len);
}

}  // namespace chatvec
