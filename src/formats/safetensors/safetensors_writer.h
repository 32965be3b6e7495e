// Writing a (possibly sharded) safetensors checkpoint, streaming.
//
// The caller declares every output tensor (name, dtype, shape) up front, in
// the order it will produce them.  The writer splits them into shards of at
// most `shard_size` bytes of tensor data (a tensor larger than that gets a
// shard of its own), computes each shard's header before writing it, and then
// takes the tensors' bytes as they are produced: no shard is ever held in
// memory.  File names follow transformers: a single `model.safetensors`, or
// `model-00001-of-00003.safetensors`... plus `model.safetensors.index.json`
// (`metadata.total_size`, `weight_map`, keys sorted).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/file_util.h"

namespace chatvec {

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t nbytes() const;
};

struct ShardLayout {
  std::string file_name;
  std::vector<size_t> tensors;  // indices into the declared tensor list
  uint64_t data_bytes = 0;
  std::string header;  // complete header bytes: 8-byte length + padded JSON
  uint64_t file_bytes() const { return header.size() + data_bytes; }
};

// Split and lay out the shards (pure: no I/O).  `metadata` goes into each
// header's __metadata__.
std::vector<ShardLayout> plan_safetensors_shards(const std::vector<TensorSpec>& tensors, uint64_t shard_size,
                                                 const std::map<std::string, std::string>& metadata,
                                                 const std::string& basename = "model");

// The bytes of one safetensors header for tensors laid out back to back in
// the given order (8-byte length prefix, JSON padded with spaces to 8 bytes).
std::string safetensors_header_bytes(const std::vector<const TensorSpec*>& tensors,
                                     const std::map<std::string, std::string>& metadata);

class SafetensorsWriter {
 public:
  // `dir` must exist; files are created new inside it.
  SafetensorsWriter(std::string dir, std::vector<TensorSpec> tensors, uint64_t shard_size,
                    std::map<std::string, std::string> metadata, std::string basename = "model");
  ~SafetensorsWriter();

  const std::vector<ShardLayout>& shards() const { return shards_; }
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  uint64_t total_bytes() const;  // all files, headers included

  // Index of the tensor whose bytes append() expects next (== tensors().size()
  // when all are written).
  size_t current_tensor() const { return current_; }
  // Append bytes of the current tensor; may complete it and move on.  Bytes
  // must not cross into the next tensor.
  void append(const void* data, size_t n);
  // Check that every tensor was written, write the index (when sharded),
  // fsync everything.
  void finish();

 private:
  void open_shard(size_t s);
  void close_shard();

  std::string dir_;
  std::vector<TensorSpec> tensors_;
  std::string basename_;
  std::vector<ShardLayout> shards_;
  std::vector<size_t> shard_of_;  // tensor index -> shard
  std::unique_ptr<OutputFile> file_;
  size_t open_shard_ = SIZE_MAX;
  size_t current_ = 0;
  uint64_t written_in_current_ = 0;
};

}  // namespace chatvec
