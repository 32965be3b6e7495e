// Reading one .safetensors file: a memory map plus a validated header.
//
// Format (https://github.com/huggingface/safetensors): 8-byte little-endian
// header length N, N bytes of UTF-8 JSON, then the data section.  The header
// maps tensor names to {dtype, shape, data_offsets:[begin,end]} (offsets
// relative to the data section) and may hold "__metadata__": {str: str}.
//
// The reader is at least as strict as the reference implementation: see
// parse_safetensors_header() for the rules.  Data need not be aligned.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace chatvec {

// Largest header the reader accepts (the reference's limit).
constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;
// Most tensors in one file and most dimensions of a tensor (far above any
// real checkpoint; they bound what a hostile header can make us allocate).
constexpr size_t kMaxSafetensorsTensors = 1'000'000;
constexpr size_t kMaxTensorRank = 64;

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t begin = 0;  // offset of the data, relative to the data section
  uint64_t end = 0;

  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length
};

// Validate and parse a header given the whole file's bytes (`file_size` is
// the file's length; only the first 8 + N bytes are read).  `what` names the
// file in errors.  Throws InputError on any violation.
SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, uint64_t file_size, const std::string& what);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;
  // Bytes of a tensor's data, inside the map.
  const uint8_t* data(const TensorInfo& t) const { return file_.data() + header_.data_start + t.begin; }
  uint64_t file_size() const { return file_.size(); }
  const MappedFile& mapped() const { return file_; }
  // Absolute file offset of a tensor's first byte.
  uint64_t file_offset(const TensorInfo& t) const { return header_.data_start + t.begin; }

 private:
  MappedFile file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

// Product of dims, or throws InputError (naming `what`) on overflow.
uint64_t checked_numel(const std::vector<uint64_t>& shape, const std::string& what);
std::string shape_string(const std::vector<uint64_t>& shape);

}  // namespace chatvec
