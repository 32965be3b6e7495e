#include "formats/safetensors/safetensors_reader.h"

#include <algorithm>

#include "core/error.h"
#include "core/json_util.h"

namespace chatvec {

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t checked_numel(const std::vector<uint64_t>& shape, const std::string& what) {
  uint64_t n = 1;
  for (auto d : shape)
    if (__builtin_mul_overflow(n, d, &n)) throw InputError(what + ": shape " + shape_string(shape) + " overflows");
  return n;
}

namespace {

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint64_t json_uint(const Json& v, const std::string& what) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    throw InputError(what + " must be a non-negative integer");
  return v.get<uint64_t>();
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const uint8_t* bytes, uint64_t file_size, const std::string& what) {
  if (file_size < 8) throw InputError(what + ": not a safetensors file: shorter than the 8-byte header length");
  const uint64_t n = read_u64_le(bytes);
  if (n > kMaxSafetensorsHeader)
    throw InputError(what + ": header length " + std::to_string(n) + " exceeds the 100 MB limit");
  if (n > file_size - 8)
    throw InputError(what + ": header length " + std::to_string(n) + " runs past the end of the file (" +
                     std::to_string(file_size) + " bytes)");
  if (n == 0 || bytes[8] != '{') throw InputError(what + ": header does not start with '{'");
  std::string_view text(reinterpret_cast<const char*>(bytes + 8), n);
  // JSON parsing validates UTF-8 inside strings; outside strings only ASCII
  // JSON syntax is valid, so the whole header is checked.
  Json j = parse_json_strict(text, what + ": header");
  if (!j.is_object()) throw InputError(what + ": header is not a JSON object");

  if (j.size() > kMaxSafetensorsTensors + 1)
    throw InputError(what + ": header lists " + std::to_string(j.size()) + " entries, over the limit of " +
                     std::to_string(kMaxSafetensorsTensors) + " tensors per file");
  SafetensorsHeader h;
  h.data_start = 8 + n;
  h.tensors.reserve(j.size());
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const Json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) throw InputError(what + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw InputError(what + ": __metadata__ value of \"" + m.key() + "\" is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tw = what + ": tensor \"" + key + "\"";
    if (!v.is_object()) throw InputError(tw + ": entry is not an object");
    TensorInfo t;
    t.name = key;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) throw InputError(tw + ": missing dtype");
    auto parsed = dtype_from_name(dt->get<std::string>());
    if (!parsed) throw InputError(tw + ": unknown dtype \"" + dt->get<std::string>() + "\"");
    t.dtype = *parsed;
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) throw InputError(tw + ": missing shape");
    if (sh->size() > kMaxTensorRank)
      throw InputError(tw + ": shape has " + std::to_string(sh->size()) + " dimensions, over the limit of " +
                       std::to_string(kMaxTensorRank));
    for (const auto& d : *sh) t.shape.push_back(json_uint(d, tw + ": shape entry"));
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2)
      throw InputError(tw + ": data_offsets must be [begin, end]");
    t.begin = json_uint((*off)[0], tw + ": data_offsets");
    t.end = json_uint((*off)[1], tw + ": data_offsets");
    if (t.end < t.begin) throw InputError(tw + ": data_offsets end before they begin");
    const uint64_t numel = checked_numel(t.shape, tw);
    uint64_t bits;
    if (__builtin_mul_overflow(numel, uint64_t(dtype_bits(t.dtype)), &bits))
      throw InputError(tw + ": size overflows");
    if (bits % 8 != 0)
      throw InputError(tw + ": " + std::to_string(numel) + " elements of " + std::string(dtype_name(t.dtype)) +
                       " do not fill whole bytes");
    if (bits / 8 != t.end - t.begin)
      throw InputError(tw + ": data_offsets span " + std::to_string(t.end - t.begin) + " bytes but shape " +
                       shape_string(t.shape) + " of " + std::string(dtype_name(t.dtype)) + " needs " +
                       std::to_string(bits / 8));
    h.tensors.push_back(std::move(t));
  }
  // Offsets must tile the data section from 0, in some order, with no holes
  // and no overlaps, and end exactly at the end of the file.
  std::stable_sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (const auto& t : h.tensors) {
    if (t.begin != pos) {
      if (t.begin > pos)
        throw InputError(what + ": tensor \"" + t.name + "\" starts at data offset " + std::to_string(t.begin) +
                         ", leaving a hole after offset " + std::to_string(pos));
      throw InputError(what + ": tensor \"" + t.name + "\" overlaps the previous tensor (starts at " +
                       std::to_string(t.begin) + ", previous ends at " + std::to_string(pos) + ")");
    }
    pos = t.end;
  }
  const uint64_t data_len = file_size - h.data_start;
  if (pos != data_len)
    throw InputError(what + ": tensor data ends at offset " + std::to_string(pos) + " but the data section is " +
                     std::to_string(data_len) + " bytes");
  return h;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  header_ = parse_safetensors_header(file_.data(), file_.size(), path);
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

}  // namespace chatvec
