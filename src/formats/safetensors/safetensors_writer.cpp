#include "formats/safetensors/safetensors_writer.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/json_util.h"

namespace chatvec {

uint64_t TensorSpec::nbytes() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n * dtype_bits(dtype) / 8;
}

std::string safetensors_header_bytes(const std::vector<const TensorSpec*>& tensors,
                                     const std::map<std::string, std::string>& metadata) {
  Json j = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    j["__metadata__"] = m;
  }
  uint64_t off = 0;
  for (const TensorSpec* t : tensors) {
    Json e = Json::object();
    e["dtype"] = std::string(dtype_name(t->dtype));
    e["shape"] = t->shape;
    e["data_offsets"] = {off, off + t->nbytes()};
    off += t->nbytes();
    j[t->name] = e;
  }
  std::string text = j.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + text;
}

std::vector<ShardLayout> plan_safetensors_shards(const std::vector<TensorSpec>& tensors, uint64_t shard_size,
                                                 const std::map<std::string, std::string>& metadata,
                                                 const std::string& basename) {
  // Greedy split in declaration order, as transformers does: start a new
  // shard when the next tensor would push the current one over the limit.
  std::vector<ShardLayout> shards;
  ShardLayout cur;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t b = tensors[i].nbytes();
    if (!cur.tensors.empty() && cur.data_bytes + b > shard_size) {
      shards.push_back(std::move(cur));
      cur = ShardLayout{};
    }
    cur.tensors.push_back(i);
    cur.data_bytes += b;
  }
  if (!cur.tensors.empty() || shards.empty()) shards.push_back(std::move(cur));
  const size_t n = shards.size();
  for (size_t s = 0; s < n; ++s) {
    if (n == 1) {
      shards[s].file_name = basename + ".safetensors";
    } else {
      char buf[64];
      std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", s + 1, n);
      shards[s].file_name = basename + buf;
    }
    std::vector<const TensorSpec*> ts;
    for (size_t i : shards[s].tensors) ts.push_back(&tensors[i]);
    shards[s].header = safetensors_header_bytes(ts, metadata);
  }
  return shards;
}

SafetensorsWriter::SafetensorsWriter(std::string dir, std::vector<TensorSpec> tensors, uint64_t shard_size,
                                     std::map<std::string, std::string> metadata, std::string basename)
    : dir_(std::move(dir)), tensors_(std::move(tensors)), basename_(std::move(basename)) {
  shards_ = plan_safetensors_shards(tensors_, shard_size, metadata, basename_);
  shard_of_.resize(tensors_.size());
  for (size_t s = 0; s < shards_.size(); ++s)
    for (size_t i : shards_[s].tensors) shard_of_[i] = s;
  open_shard(0);
  // Skip over leading empty tensors.
  while (current_ < tensors_.size() && tensors_[current_].nbytes() == 0) append(nullptr, 0);
}

SafetensorsWriter::~SafetensorsWriter() = default;

uint64_t SafetensorsWriter::total_bytes() const {
  uint64_t t = 0;
  for (const auto& s : shards_) t += s.file_bytes();
  return t;
}

void SafetensorsWriter::open_shard(size_t s) {
  close_shard();
  file_ = std::make_unique<OutputFile>(dir_ + "/" + shards_[s].file_name);
  file_->reserve(shards_[s].file_bytes());
  file_->write(shards_[s].header);
  open_shard_ = s;
}

void SafetensorsWriter::close_shard() {
  if (!file_) return;
  file_->sync();
  file_->close();
  file_.reset();
}

void SafetensorsWriter::append(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (true) {
    if (current_ >= tensors_.size()) {
      if (n == 0) return;
      throw std::logic_error("SafetensorsWriter: more bytes than declared");
    }
    const uint64_t need = tensors_[current_].nbytes() - written_in_current_;
    const size_t take = size_t(std::min<uint64_t>(need, n));
    if (take) {
      if (shard_of_[current_] != open_shard_) open_shard(shard_of_[current_]);
      file_->write(p, take);
      file_->flush_behind();
      p += take;
      n -= take;
      written_in_current_ += take;
    }
    if (written_in_current_ < tensors_[current_].nbytes()) {
      if (n) throw std::logic_error("SafetensorsWriter: internal accounting error");
      return;
    }
    ++current_;
    written_in_current_ = 0;
    if (current_ < tensors_.size() && shard_of_[current_] != open_shard_) open_shard(shard_of_[current_]);
    if (n == 0 && (current_ >= tensors_.size() || tensors_[current_].nbytes() != 0)) return;
  }
}

void SafetensorsWriter::finish() {
  if (current_ != tensors_.size())
    throw std::logic_error("SafetensorsWriter: tensor \"" + tensors_[current_].name + "\" not fully written");
  close_shard();
  if (shards_.size() > 1) {
    Json index = Json::object();
    uint64_t total = 0;
    for (const auto& t : tensors_) total += t.nbytes();
    index["metadata"] = Json::object({{"total_size", total}});
    std::vector<std::pair<std::string, std::string>> wm;
    for (size_t i = 0; i < tensors_.size(); ++i) wm.emplace_back(tensors_[i].name, shards_[shard_of_[i]].file_name);
    std::sort(wm.begin(), wm.end());
    Json m = Json::object();
    for (auto& [k, v] : wm) m[k] = v;
    index["weight_map"] = m;
    OutputFile f(dir_ + "/" + basename_ + ".safetensors.index.json");
    f.write(dump_json_pretty(index));
    f.sync();
    f.close();
  }
}

}  // namespace chatvec
