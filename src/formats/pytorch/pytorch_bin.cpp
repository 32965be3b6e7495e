#include "formats/pytorch/pytorch_bin.h"

#include <cstring>

#include "core/error.h"
#include "core/json_util.h"
#include "formats/pytorch/state_dict_pickle.h"
#include "formats/pytorch/zip_reader.h"

namespace chatvec {

namespace {

std::string shape_text(const std::vector<uint64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// A tensor name for a one-line message: control characters shown as '?'
// (names are valid UTF-8, checked by the unpickler, but may hold newlines).
std::string shown(const std::string& name) {
  std::string o = name;
  for (char& c : o)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return o;
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t& out) { return __builtin_mul_overflow(a, b, &out); }

// The archive's folder: the one entry ARCHIVE/data.pkl.
std::string archive_prefix(const ZipDirectory& z, const std::string& what) {
  std::string prefix;
  int found = 0;
  for (const ZipEntry& e : z.entries()) {
    const std::string& n = e.name;
    if (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0 && n.find('/') == n.size() - 9) {
      prefix = n.substr(0, n.size() - 8);
      ++found;
    }
  }
  if (found == 0) throw InputError(what + ": a zip archive without ARCHIVE/data.pkl: not a file written by torch.save");
  if (found > 1) throw InputError(what + ": several */data.pkl entries: not a file written by torch.save");
  if (z.find(prefix + "constants.pkl"))
    throw InputError(what + ": a TorchScript archive (torch.jit.save), not a state dict written by torch.save");
  return prefix;
}

void refuse_non_zip(const uint8_t* data, uint64_t size, const std::string& what) {
  if (size >= 2 && data[0] == 0x80 && data[1] >= 1 && data[1] <= 5)
    throw InputError(what + ": a PyTorch file in the legacy format of PyTorch < 1.6 (a bare pickle), which chatvec "
                            "does not read; re-save it with a current PyTorch (torch.save) or convert it to "
                            "safetensors, where you trust the file");
  if (size >= 262 && std::memcmp(data + 257, "ustar", 5) == 0)
    throw InputError(what + ": a PyTorch file in the legacy tar format of PyTorch < 1.6, which chatvec does not "
                            "read; re-save it with a current PyTorch or convert it to safetensors");
  if (size < 4 || data[0] != 'P' || data[1] != 'K')
    throw InputError(what + ": not a PyTorch checkpoint (torch.save writes a zip archive, and this is not one)");
}

}  // namespace

std::vector<MappedTensor> parse_pytorch_bin(const uint8_t* data, uint64_t size, const std::string& what) {
  refuse_non_zip(data, size, what);
  const ZipDirectory z = ZipDirectory::parse(data, size, what);
  const std::string prefix = archive_prefix(z, what);

  if (const ZipEntry* bo = z.find(prefix + "byteorder")) {
    const ZipEntry& e = z.stored(bo->name);
    const std::string order(reinterpret_cast<const char*>(data + e.data_offset), std::min<uint64_t>(e.size, 16));
    if (order != "little") throw InputError(what + ": byteorder is \"" + shown(order) + "\"; only little-endian checkpoints are read");
  }
  const ZipEntry& pkl = z.stored(prefix + "data.pkl");
  if (pkl.size > kMaxPickleBytes)
    throw InputError(what + ": data.pkl is " + std::to_string(pkl.size) + " bytes, more than the limit of " +
                     std::to_string(kMaxPickleBytes));
  z.verify_crc(data, pkl);
  const PickledStateDict sd = unpickle_state_dict(data + pkl.data_offset, size_t(pkl.size), what + " (data.pkl)");

  // Each storage: its entry, of exactly numel elements.
  struct StorageBytes {
    uint64_t offset, nbytes;
  };
  std::vector<StorageBytes> storage(sd.storages.size());
  for (size_t i = 0; i < sd.storages.size(); ++i) {
    const PickledStorage& s = sd.storages[i];
    const std::string entry = prefix + "data/" + s.key;
    if (!z.find(entry))
      throw InputError(what + ": storage \"" + shown(s.key) + "\" (" + shown(entry) + ") is missing from the archive");
    const ZipEntry& e = z.stored(entry);
    uint64_t bytes;
    if (mul_overflows(s.numel, dtype_bits(s.dtype) / 8, bytes) || bytes != e.size)
      throw InputError(what + ": storage \"" + shown(s.key) + "\" should hold " + std::to_string(s.numel) + " " +
                       std::string(dtype_name(s.dtype)) + " elements but its entry has " + std::to_string(e.size) +
                       " bytes");
    storage[i] = {e.data_offset, e.size};
  }

  std::vector<MappedTensor> out;
  out.reserve(sd.tensors.size());
  for (const PickledTensor& t : sd.tensors) {
    const std::string tw = what + ": tensor \"" + shown(t.name) + "\"";
    const uint64_t esize = dtype_bits(t.dtype) / 8;
    uint64_t numel = 1;
    for (uint64_t d : t.shape)
      if (mul_overflows(numel, d, numel)) throw InputError(tw + ": shape " + shape_text(t.shape) + " overflows");
    // Contiguous as torch defines it: strides of size-1 dimensions do not matter.
    if (numel > 0) {
      uint64_t expected = 1;
      for (size_t d = t.shape.size(); d-- > 0;) {
        if (t.shape[d] != 1 && t.stride[d] != expected)
          throw InputError(tw + " is not contiguous (size " + shape_text(t.shape) + ", stride " + shape_text(t.stride) +
                           "; a transposed or strided view was saved): save it made contiguous, e.g. "
                           "torch.save({k: v.contiguous() for k, v in state_dict.items()}, path)");
        expected *= t.shape[d];
      }
    }
    const StorageBytes& s = storage[t.storage];
    uint64_t begin = 0, nbytes = 0;
    if (numel > 0) {
      uint64_t end;
      if (mul_overflows(t.storage_offset, esize, begin) || mul_overflows(numel, esize, nbytes) ||
          __builtin_add_overflow(begin, nbytes, &end) || end > s.nbytes)
        throw InputError(tw + ": storage offset " + std::to_string(t.storage_offset) + " and size " +
                         shape_text(t.shape) + " run past its storage \"" + shown(sd.storages[t.storage].key) + "\" (" +
                         std::to_string(s.nbytes) + " bytes)");
    }
    out.push_back(MappedTensor{t.name, t.dtype, t.shape, s.offset + begin, nbytes});
  }
  return out;
}

void verify_pytorch_storages(const uint8_t* data, uint64_t size, const std::string& what) {
  refuse_non_zip(data, size, what);
  const ZipDirectory z = ZipDirectory::parse(data, size, what);
  const std::string prefix = archive_prefix(z, what) + "data/";
  for (const ZipEntry& e : z.entries())
    if (e.name.compare(0, prefix.size(), prefix) == 0) z.verify_crc(data, z.stored(e.name));
}

PytorchBinFile::PytorchBinFile(const std::string& path) : file_(path) {
  tensors_ = parse_pytorch_bin(file_.data(), file_.size(), path);
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const MappedTensor* PytorchBinFile::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

PytorchBinIndex read_pytorch_bin_index(const std::string& path) {
  const Json j = read_json_file(path);
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw InputError(path + ": no \"weight_map\" object");
  PytorchBinIndex idx;
  std::unordered_map<std::string, size_t> seen;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) throw InputError(path + ": weight_map entry \"" + it.key() + "\" is not a file name");
    const std::string f = it.value().get<std::string>();
    if (f.empty() || f.size() > 255 || f == "." || f == ".." || f.find('/') != std::string::npos ||
        f.find('\\') != std::string::npos || f.find('\0') != std::string::npos)
      throw InputError(path + ": weight_map names an invalid shard file \"" + f + "\"");
    if (seen.emplace(f, idx.shards.size()).second) idx.shards.push_back(f);
    idx.weight_map.emplace_back(it.key(), f);
  }
  if (idx.weight_map.empty()) throw InputError(path + ": weight_map is empty");
  if (j.contains("metadata") && j["metadata"].is_object() && j["metadata"].contains("total_size")) {
    const Json& ts = j["metadata"]["total_size"];
    if (ts.is_number_unsigned()) idx.total_size = ts.get<uint64_t>();
    else if (ts.is_number_integer() && ts.get<int64_t>() >= 0) idx.total_size = uint64_t(ts.get<int64_t>());
    else if (ts.is_number_float() && ts.get<double>() >= 0 && ts.get<double>() < 1.8e19)
      idx.total_size = uint64_t(ts.get<double>());
    else throw InputError(path + ": metadata.total_size is not a byte count");
  }
  return idx;
}

}  // namespace chatvec
