// Reading a GGUF file: a memory map and a header validated as strictly as
// ggml's gguf.cpp does it: magic and version (2 or 3), counts checked
// against the bytes that remain, strings and arrays bounded by the file,
// known value types only (no nested arrays), no duplicate keys or tensor
// names, general.alignment a u32 power of two, at most 4 dimensions,
// non-negative dimensions whose product fits in int64, known ggml types with
// rows of whole blocks, tensor offsets exactly back to back (each padded to
// the alignment) and tensor data within the file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/mapped_file.h"
#include "gguf/gguf_format.h"

namespace chatvec::gguf {

struct TensorEntry {
  std::string name;
  uint32_t type = 0;
  std::vector<uint64_t> ne;
  uint64_t offset = 0;  // relative to the data section
  uint64_t numel = 0;
  uint64_t nbytes = 0;
};

struct Header {
  uint32_t version = 0;
  uint32_t alignment = kDefaultAlignment;
  std::vector<KeyValue> kvs;
  std::vector<TensorEntry> tensors;
  uint64_t data_offset = 0;  // absolute offset of the data section
};

// Validate and parse; `what` names the file in errors.  Throws InputError.
Header parse_header(const uint8_t* bytes, uint64_t size, const std::string& what);

class File {
 public:
  explicit File(const std::string& path);
  const std::string& path() const { return map_.path(); }
  const Header& header() const { return h_; }
  const std::vector<KeyValue>& kvs() const { return h_.kvs; }
  const std::vector<TensorEntry>& tensors() const { return h_.tensors; }
  const Value* find(std::string_view key) const;
  const TensorEntry* find_tensor(std::string_view name) const;
  const uint8_t* data(const TensorEntry& t) const { return map_.data() + h_.data_offset + t.offset; }
  uint64_t file_offset(const TensorEntry& t) const { return h_.data_offset + t.offset; }
  const MappedFile& mapped() const { return map_; }

  // Typed metadata access (InputError naming the key when absent or of
  // another type).
  std::string get_string(std::string_view key) const;
  uint64_t get_uint(std::string_view key) const;   // any unsigned/signed integer >= 0
  double get_float(std::string_view key) const;    // F32/F64
  // General architecture ("llama", "qwen2", ...).
  std::string architecture() const { return get_string("general.architecture"); }

 private:
  MappedFile map_;
  Header h_;
  std::map<std::string, size_t, std::less<>> kv_index_, tensor_index_;
};

// Does the file start with the GGUF magic?
bool looks_like_gguf(const std::string& path);

// Elements [at, at + n) of a tensor as fp32.  F32, F16, BF16 and Q8_0 (for
// which `at` and `n` must be multiples of 32); InputError for other types.
void tensor_to_f32(const File& f, const TensorEntry& t, uint64_t at, uint64_t n, float* out);

}  // namespace chatvec::gguf
