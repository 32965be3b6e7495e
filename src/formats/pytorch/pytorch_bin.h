// PyTorch checkpoints (pytorch_model.bin, *.pt, *.pth) written by
// torch.save of a state dict, read without executing anything.
//
// torch.save (since PyTorch 1.6) writes a zip archive of stored entries:
//   ARCHIVE/data.pkl     the pickled state dict, tensors as
//                        torch._utils._rebuild_tensor_v2(storage, offset,
//                        size, stride, ...) with storages as persistent ids
//   ARCHIVE/data/KEY     each storage's raw bytes (little-endian)
//   ARCHIVE/version, ARCHIVE/byteorder (newer torch), ...
// The pickle goes through the restricted unpickler (state_dict_pickle.h); the
// zip through the in-place reader (zip_reader.h).  Each tensor is then bytes
// inside the mapped file: its storage entry's data plus storage_offset
// elements.  Tensors sharing a storage (tied weights) point into the same
// bytes.  A non-contiguous tensor (e.g. saved as a transposed view) is
// refused with its name; a contiguous view with a storage offset is fine.
//
// The legacy format of PyTorch < 1.6 (a bare pickle stream, or a tar
// archive) is refused with a message.  Zip entries' CRCs are checked for
// data.pkl; storages are not read at open (that would read the whole file
// once more) - verify_pytorch_storages() does it on demand.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace chatvec {

// One tensor of a checkpoint file: what a reader hands the checkpoint
// layer, whatever the format.
struct MappedTensor {
  std::string name;
  DType dtype;
  std::vector<uint64_t> shape;
  uint64_t offset = 0;  // absolute offset of the first byte in the mapped file
  uint64_t nbytes = 0;  // numel * element size
};

// The tensors of a torch.save archive held in memory: `size` bytes at `data`
// (the whole file), `what` naming it in errors.  In the state dict's order.
// Throws InputError, one line naming the file (and the tensor, storage or
// global concerned).
std::vector<MappedTensor> parse_pytorch_bin(const uint8_t* data, uint64_t size, const std::string& what);

// Reads every storage entry a tensor uses and checks its CRC-32 (the whole
// file is read once).  Throws InputError naming the damaged entry.
void verify_pytorch_storages(const uint8_t* data, uint64_t size, const std::string& what);

// One .bin file, memory-mapped read-only.
class PytorchBinFile {
 public:
  explicit PytorchBinFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<MappedTensor>& tensors() const { return tensors_; }
  const MappedTensor* find(std::string_view name) const;
  const uint8_t* data(const MappedTensor& t) const { return file_.data() + t.offset; }
  const MappedFile& mapped() const { return file_; }

 private:
  MappedFile file_;
  std::vector<MappedTensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

// pytorch_model.bin.index.json: {"metadata": {"total_size": N}?, "weight_map":
// {tensor: shard file}}.  Shard names must be plain file names (no '/', no
// NUL, at most 255 bytes).
struct PytorchBinIndex {
  std::vector<std::string> shards;                              // distinct, in first-listed order
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard, as listed
  std::optional<uint64_t> total_size;
};
PytorchBinIndex read_pytorch_bin_index(const std::string& path);

}  // namespace chatvec
