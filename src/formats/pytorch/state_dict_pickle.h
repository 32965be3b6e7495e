// A restricted unpickler for the data.pkl of a torch.save'd state dict.
//
// It executes nothing.  It is not a general unpickler with a blacklist: it
// interprets exactly the opcodes and the globals that pickling a state dict
// produces, as data, and refuses anything else with one line naming the
// file and the opcode or global.  Accepted:
//
//   opcodes  PROTO (2-5) FRAME STOP MARK POP POP_MARK, EMPTY_DICT EMPTY_LIST
//            EMPTY_TUPLE TUPLE TUPLE1-3, APPEND(S) SETITEM(S), BININT BININT1
//            BININT2 LONG1 (to 64 bits), BINFLOAT, NONE NEWTRUE NEWFALSE,
//            BINUNICODE SHORT_BINUNICODE BINUNICODE8, BINPUT LONG_BINPUT
//            MEMOIZE BINGET LONG_BINGET, GLOBAL STACK_GLOBAL, REDUCE, BUILD,
//            BINPERSID
//   globals  collections.OrderedDict (called with no arguments);
//            torch._utils._rebuild_tensor_v2 / _rebuild_tensor /
//            _rebuild_tensor_v3 / _rebuild_parameter /
//            _rebuild_parameter_with_state (their argument tuples checked);
//            the storage classes torch.{Double,Float,Half,BFloat16,Long,Int,
//            Short,Char,Byte,Bool}Storage and torch.UntypedStorage (only as
//            the type in a persistent id); the dtypes torch.float32 ...
//            torch.float8_e4m3fn (only as _rebuild_tensor_v3's dtype)
//   persistent ids  ('storage', STORAGE_CLASS, key, location, numel)
//   BUILD    only on an OrderedDict (the state dict's _metadata attribute;
//            ignored)
//
// Everything is bounded by the input: at most kMaxPickleObjects values on the
// stack, in the memo and in containers together, tensors of rank at most 64.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace chatvec {

// Largest data.pkl read (torch writes some 70-120 bytes a tensor, names
// included: 32 MB is about 300,000 tensors in one file).
constexpr uint64_t kMaxPickleBytes = 32ull << 20;
constexpr uint64_t kMaxPickleObjects = 8'000'000;

struct PickledStorage {
  std::string key;       // the archive entry is PREFIX/data/KEY
  DType dtype;           // of the storage class (U8 for UntypedStorage)
  uint64_t numel = 0;    // elements of that dtype (bytes for UntypedStorage)
  std::string location;  // "cpu", "cuda:0", ...
};

struct PickledTensor {
  std::string name;  // its key in the state dict
  size_t storage = 0;  // index into PickledStateDict::storages
  DType dtype;       // of the tensor (== the storage's but for _rebuild_tensor_v3)
  uint64_t storage_offset = 0;  // in elements of dtype
  std::vector<uint64_t> shape;
  std::vector<uint64_t> stride;  // in elements
};

struct PickledStateDict {
  std::vector<PickledStorage> storages;  // distinct keys, first-seen order
  std::vector<PickledTensor> tensors;    // in the state dict's order
};

// Interprets `n` bytes of pickle.  `what` names the file in errors
// ("model.bin (data.pkl)").  The top-level object must be a dict or
// OrderedDict of str -> tensor (or nn.Parameter), with no duplicate names.
// Throws InputError.
PickledStateDict unpickle_state_dict(const uint8_t* data, size_t n, const std::string& what);

}  // namespace chatvec
