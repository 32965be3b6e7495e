// Writing a GGUF file, streaming: the header (key-values and tensor infos)
// is computed from the declared tensors before any data, then tensor bytes
// are appended in declaration order as they are produced.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "gguf/gguf_format.h"

namespace chatvec::gguf {

struct TensorDecl {
  std::string name;
  uint32_t type = 0;          // ggml type id
  std::vector<uint64_t> ne;   // ggml order: ne[0] contiguous
  uint64_t numel() const;
  uint64_t nbytes() const;    // bytes of data (ne[0] must fill whole blocks)
};

inline uint64_t pad_to(uint64_t n, uint64_t align) { return (n + align - 1) / align * align; }

// The complete header: everything before the data section, padded to the
// alignment.  Tensor offsets are assigned back to back, each padded.
// Throws InputError for a value the format cannot hold (a name too long, a
// dimension count above 4, a row not made of whole blocks).
std::string header_bytes(const std::vector<KeyValue>& kvs, const std::vector<TensorDecl>& tensors,
                         uint32_t alignment = kDefaultAlignment);

class Writer {
 public:
  // Creates `path` (new) and writes the header.
  Writer(std::string path, const std::vector<KeyValue>& kvs, std::vector<TensorDecl> tensors,
         uint32_t alignment = kDefaultAlignment);
  ~Writer();

  const std::vector<TensorDecl>& tensors() const { return tensors_; }
  uint64_t total_bytes() const { return total_; }
  uint64_t written() const;
  // The tensor whose bytes append() expects next.
  size_t current_tensor() const { return current_; }
  // Append bytes of the current tensor (must not cross into the next one).
  void append(const void* data, size_t n);
  // Check that every tensor was written, fsync and close.
  void finish();

 private:
  void complete_tensor();
  std::vector<TensorDecl> tensors_;
  uint32_t alignment_;
  std::unique_ptr<OutputFile> file_;
  uint64_t total_ = 0;
  size_t current_ = 0;
  uint64_t in_current_ = 0;
};

}  // namespace chatvec::gguf
