#include "formats/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/file_util.h"

namespace chatvec {

namespace fs = std::filesystem;

namespace {
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
}  // namespace

uint64_t CheckpointTensor::row_elements() const {
  const uint64_t r = rows();
  return r ? numel() / r : 0;
}

void CheckpointTensor::prefetch(uint64_t first, uint64_t count) const {
  map_->will_need(offset_ + first * element_size(), count * element_size());
}

void CheckpointTensor::release(uint64_t first, uint64_t count) const {
  map_->release(offset_ + first * element_size(), count * element_size());
}

void CheckpointTensor::release_rows(uint64_t first_row, uint64_t count) const {
  release(first_row * row_elements(), count * row_elements());
}

bool is_weight_file_name(std::string_view name) {
  if (name == "tokenizer.gguf") return false;  // tokenizer metadata of a GGUF import, not weights
  return ends_with(name, ".safetensors") || name == "model.safetensors.index.json" ||
         ends_with(name, ".safetensors.index.json") || ends_with(name, ".bin") || ends_with(name, ".pt") ||
         ends_with(name, ".pth") || ends_with(name, ".gguf") || name == "pytorch_model.bin.index.json";
}

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint c;
  c.path_ = path;
  std::vector<std::string> shard_files;
  Json index;
  std::string index_path;
  if (chatvec::is_directory(path)) {
    c.is_dir_ = true;
    c.dir_ = path;
    const std::string single = path + "/model.safetensors";
    index_path = path + "/model.safetensors.index.json";
    if (path_exists(index_path)) {
      index = read_json_file(index_path);
      if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        throw InputError(index_path + ": no \"weight_map\" object");
      std::set<std::string> files;
      for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
        if (!it.value().is_string())
          throw InputError(index_path + ": weight_map entry \"" + it.key() + "\" is not a file name");
        const std::string f = it.value().get<std::string>();
        // (A name the file system cannot hold, or with a NUL that would cut
        // the path short, is bad input too.)
        if (f.empty() || f.find('/') != std::string::npos || f == "." || f == ".." || f.size() > 255 ||
            f.find('\0') != std::string::npos)
          throw InputError(index_path + ": weight_map names an invalid shard file \"" + f + "\"");
        files.insert(f);
      }
      if (files.empty()) throw InputError(index_path + ": weight_map is empty");
      if (files.size() > kMaxShards)
        throw InputError(index_path + ": weight_map names " + std::to_string(files.size()) +
                         " shard files, over the limit of " + std::to_string(kMaxShards));
      shard_files.assign(files.begin(), files.end());
      for (auto& f : shard_files) f = path + "/" + f;
    } else if (path_exists(single)) {
      shard_files.push_back(single);
    } else {
      std::string hint;
      if (path_exists(path + "/pytorch_model.bin") || path_exists(path + "/pytorch_model.bin.index.json"))
        hint = " (it has PyTorch .bin weights: only safetensors is supported; convert them with transformers' "
               "save_pretrained(safe_serialization=True))";
      throw InputError(path + ": no model.safetensors or model.safetensors.index.json" + hint);
    }
    if (path_exists(path + "/config.json")) c.config_ = read_json_file(path + "/config.json");
  } else if (path_exists(path)) {
    c.dir_ = fs::path(path).parent_path().string();
    if (c.dir_.empty()) c.dir_ = ".";
    shard_files.push_back(path);
  } else {
    throw InputError(path + ": no such file or directory");
  }

  for (const auto& f : shard_files) c.shards_.push_back(std::make_unique<SafetensorsFile>(f));

  // Collect tensors, refusing a name stored in two shards.
  for (const auto& shard : c.shards_) {
    std::vector<const TensorInfo*> order;
    for (const auto& t : shard->tensors()) order.push_back(&t);
    for (const TensorInfo* t : order) {
      auto [it, inserted] = c.by_name_.emplace(t->name, CheckpointTensor(shard->mapped(), *t, shard->file_offset(*t)));
      if (!inserted)
        throw InputError(shard->path() + ": tensor \"" + t->name + "\" is also stored in " + it->second.path());
      c.names_.push_back(t->name);
      c.tensor_bytes_ += t->nbytes();
    }
  }

  // The index and the shards must agree both ways.
  if (!index.is_null()) {
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      auto found = c.by_name_.find(it.key());
      const std::string want = c.dir_ + "/" + it.value().get<std::string>();
      if (found == c.by_name_.end())
        throw InputError(index_path + ": tensor \"" + it.key() + "\" is listed in the index but not stored in " +
                         want);
      if (found->second.path() != want)
        throw InputError(index_path + ": tensor \"" + it.key() + "\" is listed in " + it.value().get<std::string>() +
                         " but stored in " + fs::path(found->second.path()).filename().string());
    }
    for (const auto& name : c.names_)
      if (!index["weight_map"].contains(name))
        throw InputError(index_path + ": tensor \"" + name + "\" is stored in " +
                         fs::path(c.by_name_.at(name).path()).filename().string() +
                         " but missing from the index");
    if (index.contains("metadata") && index["metadata"].is_object() && index["metadata"].contains("total_size")) {
      const Json& ts = index["metadata"]["total_size"];
      if (ts.is_number() && ts.get<double>() != double(c.tensor_bytes_))
        c.warnings_.push_back(index_path + ": metadata.total_size " + ts.dump() + " differs from the " +
                              std::to_string(c.tensor_bytes_) + " bytes of tensors in the shards");
    }
  }
  return c;
}

const CheckpointTensor* Checkpoint::find(std::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &it->second;
}

const CheckpointTensor& Checkpoint::at(std::string_view name) const {
  const CheckpointTensor* t = find(name);
  if (!t) throw InputError(path_ + ": no tensor \"" + std::string(name) + "\"");
  return *t;
}

uint64_t Checkpoint::parameter_count() const {
  uint64_t n = 0;
  for (const auto& [name, t] : by_name_) n += t.numel();
  return n;
}

}  // namespace chatvec
