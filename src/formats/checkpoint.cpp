#include "formats/checkpoint.h"

#include <algorithm>
#include <cstdio>
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

namespace {

// A PyTorch file by name (the extensions torch.save files carry) or by its
// zip signature; a safetensors file otherwise.
bool looks_like_pytorch(const std::string& path) {
  const std::string name = fs::path(path).filename().string();
  if (ends_with(name, ".bin") || ends_with(name, ".pt") || ends_with(name, ".pth")) return true;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  unsigned char m[4] = {0, 0, 0, 0};
  const size_t got = std::fread(m, 1, 4, f);
  std::fclose(f);
  return got == 4 && m[0] == 'P' && m[1] == 'K' && m[2] == 3 && m[3] == 4;
}

// The block size of FP8 weights: config.json's
// quantization_config.weight_block_size, else 128x128 (DeepSeek-V3's and
// Qwen3 FP8's, which every such checkpoint states anyway).
std::pair<uint64_t, uint64_t> fp8_block_size(const Json& config, const std::string& dir, std::string& source) {
  source = "128x128 (no quantization_config.weight_block_size in config.json: the DeepSeek-V3 default)";
  if (!config.is_object() || !config.contains("quantization_config")) return {128, 128};
  const Json& q = config["quantization_config"];
  if (!q.is_object() || !q.contains("weight_block_size")) return {128, 128};
  const Json& b = q["weight_block_size"];
  if (!b.is_array() || b.size() != 2 || !b[0].is_number_unsigned() || !b[1].is_number_unsigned() ||
      b[0].get<uint64_t>() == 0 || b[1].get<uint64_t>() == 0 || b[0].get<uint64_t>() > (1u << 20) ||
      b[1].get<uint64_t>() > (1u << 20))
    throw InputError(dir + "/config.json: quantization_config.weight_block_size " + b.dump() +
                     " is not two positive integers");
  source = "config.json quantization_config.weight_block_size";
  return {b[0].get<uint64_t>(), b[1].get<uint64_t>()};
}

}  // namespace

void CheckpointTensor::read_f32(uint64_t first, uint64_t count, float* out) const {
  if (fp8_) dequant_fp8_block_elements(*fp8_, first, count, out);
  else convert_to_f32(dtype(), element(first), count, out);
}

bool CheckpointTensor::readable_as_f32() const { return fp8_ || dtype_is_float_computable(dtype()); }

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint c;
  c.path_ = path;
  std::vector<std::string> shard_files;
  Json index;
  std::string index_path;
  bool pytorch = false;
  if (chatvec::is_directory(path)) {
    c.is_dir_ = true;
    c.dir_ = path;
    // safetensors first, as transformers prefers them when both are there.
    const std::string single = path + "/model.safetensors";
    const std::string st_index = path + "/model.safetensors.index.json";
    const std::string bin_single = path + "/pytorch_model.bin";
    const std::string bin_index = path + "/pytorch_model.bin.index.json";
    if (path_exists(st_index)) {
      index_path = st_index;
    } else if (path_exists(single)) {
      shard_files.push_back(single);
    } else if (path_exists(bin_index)) {
      index_path = bin_index;
      pytorch = true;
    } else if (path_exists(bin_single)) {
      shard_files.push_back(bin_single);
      pytorch = true;
    } else {
      throw InputError(path + ": no model.safetensors, model.safetensors.index.json, pytorch_model.bin or "
                              "pytorch_model.bin.index.json");
    }
    if (!index_path.empty()) {
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
    }
    if (path_exists(path + "/config.json")) c.config_ = read_json_file(path + "/config.json");
  } else if (path_exists(path)) {
    c.dir_ = fs::path(path).parent_path().string();
    if (c.dir_.empty()) c.dir_ = ".";
    shard_files.push_back(path);
    pytorch = looks_like_pytorch(path);
  } else {
    throw InputError(path + ": no such file or directory");
  }

  // Every tensor of every shard, refusing a name stored in two shards.
  auto add = [&](const MappedFile& map, const TensorInfo& t, uint64_t offset, const std::string& shard_path) {
    auto [it, inserted] = c.by_name_.emplace(t.name, CheckpointTensor(map, t, offset));
    if (!inserted) throw InputError(shard_path + ": tensor \"" + t.name + "\" is also stored in " + it->second.path());
    c.names_.push_back(t.name);
    c.tensor_bytes_ += t.nbytes();
  };
  if (pytorch) {
    c.format_ = "pytorch";
    for (const auto& f : shard_files) {
      auto shard = std::make_unique<BinShard>();
      if (!path_exists(f)) throw InputError(f + ": no such file (named by " + index_path + ")");
      shard->file = std::make_unique<PytorchBinFile>(f);
      // Offsets are absolute in the file: TensorInfo's begin/end are those
      // offsets, so that nbytes() is the tensor's size.
      for (const MappedTensor& t : shard->file->tensors())
        shard->infos.push_back(TensorInfo{t.name, t.dtype, t.shape, t.offset, t.offset + t.nbytes});
      c.shards_.push_back({f, shard->file->mapped().size(), shard->infos.size()});
      c.bin_files_.push_back(std::move(shard));
      const BinShard& b = *c.bin_files_.back();
      for (const TensorInfo& t : b.infos) add(b.file->mapped(), t, t.begin, f);
    }
  } else {
    for (const auto& f : shard_files) {
      c.st_files_.push_back(std::make_unique<SafetensorsFile>(f));
      const SafetensorsFile& shard = *c.st_files_.back();
      c.shards_.push_back({f, shard.file_size(), shard.tensors().size()});
      for (const TensorInfo& t : shard.tensors()) add(shard.mapped(), t, shard.file_offset(t), f);
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
      // (PyTorch shards may hold tied weights once: their index counts the
      // bytes once too; the sum here counts each name.)
      if (ts.is_number() && ts.get<double>() != double(c.tensor_bytes_))
        c.warnings_.push_back(index_path + ": metadata.total_size " + ts.dump() + " differs from the " +
                              std::to_string(c.tensor_bytes_) + " bytes of tensors in the shards");
    }
  }

  // FP8 block-scaled weights: X (F8_E4M3) with X_scale_inv beside it.
  constexpr std::string_view kScaleSuffix = "_scale_inv";
  std::vector<std::string> weights;
  for (const auto& name : c.names_)
    if (ends_with(name, kScaleSuffix) && name.size() > kScaleSuffix.size()) {
      const std::string w = name.substr(0, name.size() - kScaleSuffix.size());
      const auto it = c.by_name_.find(w);
      if (it != c.by_name_.end() && it->second.dtype() == DType::F8_E4M3) weights.push_back(w);
    }
  if (!weights.empty()) {
    std::string source;
    const auto [br, bc] = fp8_block_size(c.config_, c.dir_, source);
    std::set<std::string> scale_set;
    for (const auto& w : weights) {
      const std::string sname = w + std::string(kScaleSuffix);
      CheckpointTensor& wt = c.by_name_.at(w);
      const CheckpointTensor& st = c.by_name_.at(sname);
      check_fp8_block_scaled(wt.dtype(), wt.shape(), st.dtype(), st.shape(), br, bc,
                             wt.path() + ": tensor \"" + w + "\"", st.path() + ": tensor \"" + sname + "\"");
      auto f = std::make_unique<Fp8BlockScaled>();
      f->weight = wt.data();
      f->rows = wt.shape()[0];
      f->cols = wt.shape()[1];
      f->scale = st.data();
      f->scale_dtype = st.dtype();
      f->block_rows = br;
      f->block_cols = bc;
      wt.fp8_ = f.get();
      c.fp8_.push_back(std::move(f));
      c.quant_.scale_dtype = std::string(dtype_name(st.dtype()));
      scale_set.insert(sname);
    }
    c.quant_.scheme = "fp8-block";
    c.quant_.block_rows = br;
    c.quant_.block_cols = bc;
    c.quant_.weights = weights.size();
    c.quant_.block_source = source;
    std::vector<std::string> kept;
    for (const auto& name : c.names_) {
      if (!scale_set.count(name)) {
        kept.push_back(name);
        continue;
      }
      auto node = c.by_name_.extract(name);
      c.tensor_bytes_ -= node.mapped().nbytes();
      c.scale_names_.push_back(name);
      c.scales_.emplace(name, node.mapped());
    }
    c.names_ = std::move(kept);
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
