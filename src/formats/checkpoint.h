// A model checkpoint as a Hugging Face directory: `model.safetensors`, or
// shards listed by `model.safetensors.index.json`, or PyTorch weights
// (`pytorch_model.bin`, or shards listed by `pytorch_model.bin.index.json`,
// read without executing their pickles: formats/pytorch/pytorch_bin.h), plus
// config.json, tokenizer files and anything else.  Tensors are found by name,
// whatever the format and shard layout: each is a byte range of a read-only
// memory map.  A single .safetensors or .bin/.pt/.pth file can be opened too.
//
// FP8 block-scaled weights (DeepSeek-V3, Qwen3 FP8: an F8_E4M3 `X.weight`
// beside `X.weight_scale_inv`, formats/fp8_block.h) are paired at open: the
// weight keeps its F8_E4M3 bytes and carries its scales (fp8_block_scales()),
// and the scale tensors are not tensors of the model (not in names(), not
// found by find(); fp8_scale_names() lists them).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/json_util.h"
#include "formats/fp8_block.h"
#include "formats/pytorch/pytorch_bin.h"
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

  // FP8 block-scaled weight: its scales (weight points at data()); null for
  // every other tensor.  Its real values are dequant_fp8_block_rows() of it.
  const Fp8BlockScaled* fp8_block_scales() const { return fp8_; }
  // Widen elements [first, first + count) to fp32: convert_to_f32 of the
  // stored dtype, or the block dequantisation of an FP8 weight.
  void read_f32(uint64_t first, uint64_t count, float* out) const;
  // Can read_f32 widen it (a float dtype convert_to_f32 takes, or FP8 with
  // block scales)?
  bool readable_as_f32() const;

 private:
  friend class Checkpoint;
  const MappedFile* map_;
  const TensorInfo* info_;
  uint64_t offset_;
  const Fp8BlockScaled* fp8_ = nullptr;
};

// One weight file of a checkpoint.
struct CheckpointShard {
  std::string path;
  uint64_t file_size = 0;
  size_t tensors = 0;
};

// How the weights are quantised, when they are (inspect shows it).
struct CheckpointQuantization {
  std::string scheme;  // "fp8-block" (F8_E4M3 weights with weight_scale_inv block scales)
  uint64_t block_rows = 0, block_cols = 0;
  size_t weights = 0;  // block-scaled weights
  std::string scale_dtype;
  std::string block_source;  // where the block size came from ("config.json quantization_config...")
};

class Checkpoint {
 public:
  // `path` is a model directory, a .safetensors file or a PyTorch
  // .bin/.pt/.pth file.  Validates the index against the shards.  Throws
  // InputError naming the file on any problem.
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
  const std::vector<CheckpointShard>& shards() const { return shards_; }
  // "safetensors" or "pytorch" (torch.save zip archives).
  const std::string& format() const { return format_; }
  // Quantisation scheme (scheme empty when none).
  const CheckpointQuantization& quantization() const { return quant_; }
  const std::vector<std::string>& fp8_scale_names() const { return scale_names_; }

  // config.json, when the directory has one (null otherwise).
  const Json& config() const { return config_; }
  bool has_config() const { return !config_.is_null(); }
  // Non-fatal oddities found while opening (e.g. an index total_size that
  // disagrees with the shards).
  const std::vector<std::string>& warnings() const { return warnings_; }

 private:
  std::string path_, dir_;
  bool is_dir_ = false;
  struct BinShard {
    std::unique_ptr<PytorchBinFile> file;
    std::vector<TensorInfo> infos;
  };
  std::vector<std::unique_ptr<SafetensorsFile>> st_files_;
  std::vector<std::unique_ptr<BinShard>> bin_files_;
  std::vector<CheckpointShard> shards_;
  std::string format_ = "safetensors";
  CheckpointQuantization quant_;
  std::vector<std::unique_ptr<Fp8BlockScaled>> fp8_;
  std::vector<std::string> scale_names_;
  std::unordered_map<std::string, CheckpointTensor> scales_;
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
