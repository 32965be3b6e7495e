// A model checkpoint as a Hugging Face directory: `model.safetensors`, or
// shards listed by `model.safetensors.index.json`, plus config.json,
// tokenizer files and anything else.  Tensors are found by name, whatever the
// shard layout.  A single .safetensors file can be opened too.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/json_util.h"
#include "formats/safetensors/safetensors_reader.h"

namespace chatvec {

// Most shard files an index may name (real checkpoints have a few hundred at
// most; each shard is a mapped file and an open descriptor).
constexpr size_t kMaxShards = 10'000;

// One tensor of a checkpoint: its name, dtype and shape, and where its bytes
// are (a range of a read-only memory map).  Readers of tensor data go through
// these accessors: no caller computes file offsets.  Data need not be
// aligned (read it with the conversions of core/dtype.h or memcpy).
class CheckpointTensor {
 public:
  CheckpointTensor(const MappedFile& map, const TensorInfo& info, uint64_t offset)
      : map_(&map), info_(&info), offset_(offset) {}

  const std::string& name() const { return info_->name; }
  DType dtype() const { return info_->dtype; }
  const std::vector<uint64_t>& shape() const { return info_->shape; }
  uint64_t numel() const { return info_->numel(); }
  uint64_t nbytes() const { return info_->nbytes(); }
  // Bytes per element; 0 for the packed sub-byte types (F4, F6), which are
  // only ever copied whole.
  uint64_t element_size() const { return dtype_bits(info_->dtype) / 8; }
  // Rows (the first dimension; 1 for a scalar) and elements per row.
  uint64_t rows() const { return info_->shape.empty() ? 1 : info_->shape[0]; }
  uint64_t row_elements() const;
  // The file holding it.
  const std::string& path() const { return map_->path(); }
  const MappedFile& map() const { return *map_; }
  // Absolute offset of its first byte in the file.
  uint64_t file_offset() const { return offset_; }

  // Its bytes; element `first` and row `row` (whole-byte dtypes).
  const uint8_t* data() const { return map_->data() + offset_; }
  const uint8_t* element(uint64_t first) const { return data() + first * element_size(); }
  const uint8_t* row(uint64_t r) const { return element(r * row_elements()); }

  // Page hints for elements [first, first + count): ask for them ahead, or
  // hand them back once consumed (they stay in the page cache).
  void prefetch(uint64_t first, uint64_t count) const;
  void release(uint64_t first, uint64_t count) const;
  void release_rows(uint64_t first_row, uint64_t count) const;
  // The same by byte range within the tensor.
  void prefetch_bytes(uint64_t begin, uint64_t n) const { map_->will_need(offset_ + begin, n); }
  void release_bytes(uint64_t begin, uint64_t n) const { map_->release(offset_ + begin, n); }
  // Bytes of the tensor now in the page cache.
  uint64_t resident_bytes() const { return map_->resident(offset_, nbytes()); }

 private:
  const MappedFile* map_;
  const TensorInfo* info_;
  uint64_t offset_;
};

class Checkpoint {
 public:
  // `path` is a model directory or a .safetensors file.  Validates the index
  // against the shards.  Throws InputError naming the file on any problem.
  static Checkpoint open(const std::string& path);

  const std::string& path() const { return path_; }
  // Directory holding the files (== path() for directories).
  const std::string& dir() const { return dir_; }
  bool is_directory() const { return is_dir_; }

  // Tensor names in storage order (shard by shard, by offset).
  const std::vector<std::string>& names() const { return names_; }
  const CheckpointTensor* find(std::string_view name) const;
  const CheckpointTensor& at(std::string_view name) const;  // throws InputError
  size_t tensor_count() const { return names_.size(); }
  uint64_t tensor_bytes() const { return tensor_bytes_; }
  uint64_t parameter_count() const;
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }

  // config.json, when the directory has one (null otherwise).
  const Json& config() const { return config_; }
  bool has_config() const { return !config_.is_null(); }
  // Non-fatal oddities found while opening (e.g. an index total_size that
  // disagrees with the shards).
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  std::string path_, dir_;
  bool is_dir_ = false;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, CheckpointTensor> by_name_;
  uint64_t tensor_bytes_ = 0;
  Json config_;
  std::vector<std::string> warnings_;
};

// Is this file name one of a checkpoint's weight files (safetensors shards,
// their index, PyTorch .bin/.pt/.pth, GGUF)?  Such files are never copied
// from an input model to an output.
bool is_weight_file_name(std::string_view name);

}  // namespace chatvec
