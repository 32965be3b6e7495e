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

struct CheckpointTensor {
  const SafetensorsFile* file;
  const TensorInfo* info;
  const uint8_t* data() const { return file->data(*info); }
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
  // Files in the directory that are not weights (config, tokenizer, ...).
  std::vector<std::string> auxiliary_files() const;
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
