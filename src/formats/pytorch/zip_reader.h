// The central directory of a zip archive held in memory (a memory map), and
// the in-place location of its stored entries.
//
// Why a small reader of our own and not libzip (Debian's libzip-dev): a
// torch.save archive is a zip whose entries are *stored* (method 0), each
// tensor storage one entry, aligned to 64 bytes by PyTorch's writer.  We want
// those bytes where they lie in the memory-mapped file, to be streamed and
// released page by page like safetensors data, with no copy and no
// decompression buffer.  libzip reads entries through zip_fread into caller
// buffers (a copy of every weight, i.e. the memory ceiling of the whole
// model or a second pass through the page cache), and gives no supported
// way to learn an entry's data offset.  What we need of the format is small:
// the end-of-central-directory records (zip64 included), the central
// directory and the local headers, all of which this reader validates
// against each other and against the file's bounds; it never inflates.
//
// Format: PKWARE APPNOTE.TXT (sections 4.3.6-4.3.16, 4.5.3).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace chatvec {

// Most entries an archive may have (a state dict has one per storage, plus a
// few; real checkpoints have at most a few thousand).
constexpr uint64_t kMaxZipEntries = 1'000'000;

struct ZipEntry {
  std::string name;
  uint16_t flags = 0;
  uint16_t method = 0;  // 0: stored
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;            // uncompressed
  uint64_t header_offset = 0;   // its local header
  uint64_t data_offset = 0;     // its first data byte, absolute in the file
};

class ZipDirectory {
 public:
  // Validates the whole directory of the `size` bytes at `data` (the whole
  // file; `what` names it in errors) and throws InputError, one line, on
  // anything out of bounds or inconsistent: no end record, several disks,
  // entry counts or directory sizes that disagree, zip64 fields missing
  // where the 32-bit ones say they are there, names with NUL bytes or
  // duplicated, encrypted entries, local headers that disagree with the
  // central directory (name, method, and CRC and sizes unless they are
  // deferred to a data descriptor), data running past the central directory
  // or entries overlapping one another.
  static ZipDirectory parse(const uint8_t* data, uint64_t size, const std::string& what);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(std::string_view name) const;

  // The bytes of a stored entry in place: [data_offset, data_offset + size).
  // Throws InputError (naming the archive and the entry) when the entry is
  // compressed or its sizes disagree.
  const ZipEntry& stored(std::string_view name) const;
  // Checks an entry's CRC-32 against the directory (reads all its bytes).
  void verify_crc(const uint8_t* data, const ZipEntry& e) const;

 private:
  std::string what_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// CRC-32 (ISO-HDLC, as zip uses), continuing from `crc` (0 to start).
uint32_t crc32_update(uint32_t crc, const uint8_t* data, size_t n);

}  // namespace chatvec
