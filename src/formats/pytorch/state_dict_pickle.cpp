#include "formats/pytorch/state_dict_pickle.h"

#include <cstring>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/error.h"

namespace chatvec {

namespace {

// ---- values --------------------------------------------------------------

enum class K : uint8_t { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor };

// The globals a state dict uses.  For the storage classes and dtypes the
// DType is kept beside.
enum class G : uint8_t {
  OrderedDict, RebuildTensor, RebuildTensorV2, RebuildTensorV3, RebuildParameter, RebuildParameterWithState,
  StorageClass, DTypeObject,
};

// A value: scalars inline, everything else an index into the unpickler's
// arenas (so that copies through the memo are O(1) and cycles cannot leak).
struct V {
  K k = K::None;
  uint8_t g = 0;   // K::Global: the G
  uint8_t dt = 0;  // K::Global: the DType of a storage class or dtype
  union {
    int64_t i;
    double f;
    uint32_t ref;
  };
  V() : i(0) {}
};

struct TensorRec {
  size_t storage;
  DType dtype;
  uint64_t offset;
  std::vector<uint64_t> shape, stride;
};

struct StorageClassName {
  const char* name;
  DType dtype;
};
constexpr StorageClassName kStorageClasses[] = {
    {"DoubleStorage", DType::F64}, {"FloatStorage", DType::F32}, {"HalfStorage", DType::F16},
    {"BFloat16Storage", DType::BF16}, {"LongStorage", DType::I64}, {"IntStorage", DType::I32},
    {"ShortStorage", DType::I16}, {"CharStorage", DType::I8}, {"ByteStorage", DType::U8},
    {"BoolStorage", DType::BOOL}, {"UntypedStorage", DType::U8},
};
// torch.dtype objects pickle as globals of their canonical names.
constexpr StorageClassName kDTypes[] = {
    {"float64", DType::F64}, {"float32", DType::F32}, {"float16", DType::F16}, {"bfloat16", DType::BF16},
    {"int64", DType::I64}, {"int32", DType::I32}, {"int16", DType::I16}, {"int8", DType::I8},
    {"uint8", DType::U8}, {"bool", DType::BOOL}, {"uint16", DType::U16}, {"uint32", DType::U32},
    {"uint64", DType::U64}, {"float8_e4m3fn", DType::F8_E4M3}, {"float8_e5m2", DType::F8_E5M2},
    {"float8_e8m0fnu", DType::F8_E8M0},
};

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

// For messages: printable ASCII, at most 80 characters.
std::string printable(std::string_view s) {
  std::string o;
  for (char c : s.substr(0, 80)) o += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 80) o += "...";
  return o;
}

const char* opcode_name(uint8_t op) {
  switch (op) {
    case 'b': return "BUILD";
    case 'i': return "INST";
    case 'o': return "OBJ";
    case 0x81: return "NEWOBJ";
    case 0x92: return "NEWOBJ_EX";
    case 0x82: case 0x83: case 0x84: return "EXT";
    case 'P': return "PERSID";
    case 'S': case 'T': case 'U': return "STRING";
    case 'l': return "LIST";
    case 'd': return "DICT";
    case 'I': return "INT";
    case 'L': return "LONG";
    case 'F': return "FLOAT";
    case 'V': return "UNICODE";
    case 'p': return "PUT";
    case 'g': return "GET";
    case '2': return "DUP";
    case 0x8b: return "LONG4";
    case 'B': case 'C': case 0x8e: return "BINBYTES";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return "unknown";
  }
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t n, const std::string& what) : p_(data), n_(n), what_(what) {}

  PickledStateDict run();

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw InputError(what_ + ": " + msg + " (at byte " + std::to_string(op_pos_) + " of the pickle)");
  }
  [[noreturn]] void refuse_global(std::string_view module, std::string_view name) const {
    if (module == "torch" && (name.find("Complex") != std::string_view::npos || name.find("QInt") != std::string_view::npos ||
                              name.find("QUInt") != std::string_view::npos || name.rfind("complex", 0) == 0 ||
                              name.rfind("qint", 0) == 0 || name.rfind("quint", 0) == 0))
      throw InputError(what_ + ": the pickle uses torch." + printable(name) +
                       ": complex and quantised tensors are not supported");
    throw InputError(what_ + ": the pickle imports " + printable(module) + "." + printable(name) +
                     ", which a PyTorch state dict never uses: refused, nothing was executed (if you trust the file, "
                     "load it with PyTorch and save it as safetensors)");
  }

  void need(size_t k) {
    if (n_ - pos_ < k) fail("truncated pickle");
  }
  uint8_t u8() {
    need(1);
    return p_[pos_++];
  }
  uint64_t uint_le(size_t k) {
    need(k);
    uint64_t v = 0;
    for (size_t b = 0; b < k; ++b) v |= uint64_t(p_[pos_ + b]) << (8 * b);
    pos_ += k;
    return v;
  }
  std::string_view bytes(uint64_t k) {
    if (k > n_ - pos_) fail("truncated pickle (a string runs past the end)");
    std::string_view s(reinterpret_cast<const char*>(p_ + pos_), size_t(k));
    pos_ += size_t(k);
    return s;
  }
  std::string_view line() {
    const size_t limit = std::min(n_ - pos_, size_t(1024));
    const void* nl = std::memchr(p_ + pos_, '\n', limit);
    if (!nl) fail("GLOBAL name not terminated");
    const size_t len = size_t(static_cast<const uint8_t*>(nl) - (p_ + pos_));
    std::string_view s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len + 1;
    return s;
  }

  void charge() {
    if (++objects_ > kMaxPickleObjects) fail("more than " + std::to_string(kMaxPickleObjects) + " pickle objects");
  }
  void push(V v) {
    charge();
    stack_.push_back(v);
  }
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  V pop() {
    if (stack_.size() <= base()) fail("malformed pickle: stack underflow");
    V v = stack_.back();
    stack_.pop_back();
    return v;
  }
  V& top() {
    if (stack_.size() <= base()) fail("malformed pickle: stack underflow");
    return stack_.back();
  }
  // Items above the last mark, removing them and the mark.
  std::vector<V> pop_mark() {
    if (marks_.empty()) fail("malformed pickle: no MARK");
    const size_t b = marks_.back();
    marks_.pop_back();
    std::vector<V> items(stack_.begin() + ptrdiff_t(b), stack_.end());
    stack_.resize(b);
    return items;
  }

  V make_str(std::string_view s) {
    V v;
    v.k = K::Str;
    v.ref = uint32_t(strs_.size());
    strs_.emplace_back(s);
    return v;
  }
  V make_seq(K k, std::vector<V> items) {
    V v;
    v.k = k;
    v.ref = uint32_t(seqs_.size());
    seqs_.push_back(std::move(items));
    return v;
  }
  V make_dict() {
    V v;
    v.k = K::Dict;
    v.ref = uint32_t(dicts_.size());
    dicts_.emplace_back();
    return v;
  }
  V make_global(G g, DType dt = DType::U8) {
    V v;
    v.k = K::Global;
    v.g = uint8_t(g);
    v.dt = uint8_t(dt);
    return v;
  }
  const std::string& str(const V& v) const { return strs_[v.ref]; }
  const std::vector<V>& seq(const V& v) const { return seqs_[v.ref]; }

  std::string describe(const V& v) const {
    switch (v.k) {
      case K::None: return "None";
      case K::Bool: return "a bool";
      case K::Int: return "an int";
      case K::Float: return "a float";
      case K::Str: return "a str";
      case K::Tuple: return "a tuple";
      case K::List: return "a list";
      case K::Dict: return "a dict";
      case K::Global: return "a class or function";
      case K::Storage: return "a storage";
      case K::Tensor: return "a tensor";
    }
    return "?";
  }
  const char* global_name(const V& v) const {
    switch (G(v.g)) {
      case G::OrderedDict: return "collections.OrderedDict";
      case G::RebuildTensor: return "torch._utils._rebuild_tensor";
      case G::RebuildTensorV2: return "torch._utils._rebuild_tensor_v2";
      case G::RebuildTensorV3: return "torch._utils._rebuild_tensor_v3";
      case G::RebuildParameter: return "torch._utils._rebuild_parameter";
      case G::RebuildParameterWithState: return "torch._utils._rebuild_parameter_with_state";
      case G::StorageClass: return "a torch storage class";
      case G::DTypeObject: return "a torch dtype";
    }
    return "?";
  }

  V resolve_global(std::string_view module, std::string_view name) {
    if (module == "collections" && name == "OrderedDict") return make_global(G::OrderedDict);
    if (module == "torch._utils") {
      if (name == "_rebuild_tensor") return make_global(G::RebuildTensor);
      if (name == "_rebuild_tensor_v2") return make_global(G::RebuildTensorV2);
      if (name == "_rebuild_tensor_v3") return make_global(G::RebuildTensorV3);
      if (name == "_rebuild_parameter") return make_global(G::RebuildParameter);
      if (name == "_rebuild_parameter_with_state") return make_global(G::RebuildParameterWithState);
    }
    if (module == "torch" || (module == "torch.storage" && name == "UntypedStorage")) {
      for (const auto& s : kStorageClasses)
        if (name == s.name) return make_global(G::StorageClass, s.dtype);
    }
    if (module == "torch")
      for (const auto& d : kDTypes)
        if (name == d.name) return make_global(G::DTypeObject, d.dtype);
    refuse_global(module, name);
  }

  uint64_t nonneg_int(const V& v, const char* what) {
    if (v.k != K::Int || v.i < 0) fail(std::string("a tensor's ") + what + " is " + describe(v) + ", not a non-negative int");
    return uint64_t(v.i);
  }
  std::vector<uint64_t> int_tuple(const V& v, const char* what) {
    if (v.k != K::Tuple) fail(std::string("a tensor's ") + what + " is " + describe(v) + ", not a tuple");
    const auto& items = seq(v);
    if (items.size() > 64) fail(std::string("a tensor's ") + what + " has " + std::to_string(items.size()) + " dimensions (at most 64)");
    std::vector<uint64_t> out;
    out.reserve(items.size());
    for (const V& x : items) out.push_back(nonneg_int(x, what));
    return out;
  }
  bool empty_dict(const V& v) const { return v.k == K::Dict && dicts_[v.ref].empty(); }
  // _rebuild_tensor_v2's metadata: absent, None, or a dict of flags all False.
  void check_metadata(const V& v) {
    if (v.k == K::None) return;
    if (v.k == K::Dict) {
      bool all_false = true;
      for (const auto& [key, val] : dicts_[v.ref]) all_false = all_false && val.k == K::Bool && val.i == 0;
      if (all_false) return;
    }
    fail("a tensor carries metadata (conjugate or negative bit): not supported");
  }

  V rebuild_tensor(G g, const V& args_v) {
    if (args_v.k != K::Tuple) fail(std::string(global_name(make_global(g))) + " called with " + describe(args_v));
    const std::vector<V> a = seq(args_v);
    const size_t n = a.size();
    const bool ok = (g == G::RebuildTensor && n == 4) || (g == G::RebuildTensorV2 && (n == 6 || n == 7)) ||
                    (g == G::RebuildTensorV3 && (n == 7 || n == 8));
    if (!ok) fail(std::string(global_name(make_global(g))) + " called with " + std::to_string(n) + " arguments");
    if (a[0].k != K::Storage) fail("a tensor's storage is " + describe(a[0]) + ", not a storage");
    TensorRec t;
    t.storage = a[0].ref;
    t.dtype = storages_[t.storage].dtype;
    t.offset = nonneg_int(a[1], "storage offset");
    t.shape = int_tuple(a[2], "size");
    t.stride = int_tuple(a[3], "stride");
    if (t.stride.size() != t.shape.size()) fail("a tensor's size and stride have different lengths");
    if (n > 4) {
      if (a[4].k != K::Bool) fail("a tensor's requires_grad is " + describe(a[4]) + ", not a bool");
      if (!empty_dict(a[5])) fail("a tensor carries backward hooks (not a plain state dict)");
    }
    if (g == G::RebuildTensorV2 && n == 7) check_metadata(a[6]);
    if (g == G::RebuildTensorV3) {
      if (a[6].k != K::Global || G(a[6].g) != G::DTypeObject) fail("_rebuild_tensor_v3's dtype is " + describe(a[6]));
      t.dtype = DType(a[6].dt);
      if (n == 8) check_metadata(a[7]);
    }
    V v;
    v.k = K::Tensor;
    v.ref = uint32_t(tensors_.size());
    tensors_.push_back(std::move(t));
    return v;
  }

  V reduce(const V& callable, const V& args) {
    if (callable.k != K::Global) fail("REDUCE on " + describe(callable) + " (only allowed functions may be called)");
    switch (G(callable.g)) {
      case G::OrderedDict:
        if (args.k != K::Tuple || !seq(args).empty()) fail("collections.OrderedDict called with arguments");
        return make_dict();
      case G::RebuildTensor:
      case G::RebuildTensorV2:
      case G::RebuildTensorV3:
        return rebuild_tensor(G(callable.g), args);
      case G::RebuildParameter:
      case G::RebuildParameterWithState: {
        const bool with_state = G(callable.g) == G::RebuildParameterWithState;
        if (args.k != K::Tuple || seq(args).size() != (with_state ? 4u : 3u))
          fail(std::string(global_name(callable)) + " called with the wrong arguments");
        const std::vector<V> a = seq(args);
        if (a[0].k != K::Tensor) fail("a parameter's data is " + describe(a[0]) + ", not a tensor");
        if (a[1].k != K::Bool) fail("a parameter's requires_grad is " + describe(a[1]));
        if (!empty_dict(a[2])) fail("a parameter carries backward hooks (not a plain state dict)");
        if (with_state && !(a[3].k == K::None || empty_dict(a[3]))) fail("a parameter carries Python state (a Parameter subclass?)");
        return a[0];
      }
      case G::StorageClass:
      case G::DTypeObject:
        break;
    }
    fail(std::string("REDUCE calls ") + global_name(callable) + ", which a state dict never calls");
  }

  V persistent_load(const V& pid) {
    if (pid.k != K::Tuple) fail("persistent id is " + describe(pid) + ", not a tuple");
    const std::vector<V> a = seq(pid);
    if (a.size() != 5 || a[0].k != K::Str || str(a[0]) != "storage")
      fail("persistent id is not ('storage', type, key, location, numel)");
    if (a[1].k != K::Global || G(a[1].g) != G::StorageClass) fail("persistent id's storage type is " + describe(a[1]));
    if (a[2].k != K::Str || a[3].k != K::Str) fail("persistent id's key or location is not a str");
    const std::string& key = str(a[2]);
    if (key.empty() || key.size() > 256 || key.find_first_of(std::string("/\\\0", 3)) != std::string::npos || key == "." || key == "..")
      fail("persistent id has an invalid storage key \"" + printable(key) + "\"");
    const uint64_t numel = nonneg_int(a[4], "storage size");
    const DType dt = DType(a[1].dt);
    auto [it, fresh] = storage_index_.emplace(key, storages_.size());
    if (fresh) {
      storages_.push_back(PickledStorage{key, dt, numel, str(a[3])});
    } else {
      const PickledStorage& s = storages_[it->second];
      if (s.dtype != dt || s.numel != numel)
        fail("storage \"" + printable(key) + "\" is declared twice with different types or sizes");
    }
    V v;
    v.k = K::Storage;
    v.ref = uint32_t(it->second);
    return v;
  }

  const uint8_t* p_;
  size_t n_;
  std::string what_;
  size_t pos_ = 0, op_pos_ = 0;
  uint64_t objects_ = 0;
  std::vector<V> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, V> memo_;
  std::vector<std::string> strs_;
  std::vector<std::vector<V>> seqs_;
  std::vector<std::vector<std::pair<V, V>>> dicts_;
  std::vector<PickledStorage> storages_;
  std::unordered_map<std::string, size_t> storage_index_;
  std::vector<TensorRec> tensors_;
};

PickledStateDict Unpickler::run() {
  if (n_ > kMaxPickleBytes)
    fail("data.pkl is " + std::to_string(n_) + " bytes, more than the limit of " + std::to_string(kMaxPickleBytes));
  std::optional<V> result;
  while (!result) {
    op_pos_ = pos_;
    if (pos_ >= n_) fail("pickle ends without STOP (truncated)");
    const uint8_t op = p_[pos_++];
    switch (op) {
      case 0x80: {  // PROTO
        const uint8_t proto = u8();
        if (proto < 2 || proto > 5) fail("pickle protocol " + std::to_string(proto) + " (torch.save writes 2 to 5)");
        break;
      }
      case 0x95: {  // FRAME: a length hint, nothing to do
        if (uint_le(8) > n_ - pos_) fail("truncated pickle (a frame runs past the end)");
        break;
      }
      case '.': {  // STOP
        result = pop();
        break;
      }
      case '(':  // MARK
        marks_.push_back(stack_.size());
        charge();
        break;
      case '0':  // POP
        if (stack_.size() > base()) stack_.pop_back();
        else pop_mark();
        break;
      case '1':  // POP_MARK
        pop_mark();
        break;
      case '}':  // EMPTY_DICT
        push(make_dict());
        break;
      case ']':  // EMPTY_LIST
        push(make_seq(K::List, {}));
        break;
      case ')':  // EMPTY_TUPLE
        push(make_seq(K::Tuple, {}));
        break;
      case 't': {  // TUPLE
        std::vector<V> items = pop_mark();
        push(make_seq(K::Tuple, std::move(items)));
        break;
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        const size_t k = size_t(op - 0x84);
        std::vector<V> items(k);
        for (size_t j = k; j-- > 0;) items[j] = pop();
        push(make_seq(K::Tuple, std::move(items)));
        break;
      }
      case 'a': {  // APPEND
        const V x = pop();
        V& list = top();
        if (list.k != K::List) fail("APPEND to " + describe(list));
        charge();
        seqs_[list.ref].push_back(x);
        break;
      }
      case 'e': {  // APPENDS
        std::vector<V> items = pop_mark();
        V& list = top();
        if (list.k != K::List) fail("APPENDS to " + describe(list));
        auto& dst = seqs_[list.ref];
        dst.insert(dst.end(), items.begin(), items.end());
        break;
      }
      case 's': {  // SETITEM
        const V val = pop();
        const V key = pop();
        V& d = top();
        if (d.k != K::Dict) fail("SETITEM on " + describe(d));
        charge();
        dicts_[d.ref].emplace_back(key, val);
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<V> items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        V& d = top();
        if (d.k != K::Dict) fail("SETITEMS on " + describe(d));
        for (size_t j = 0; j < items.size(); j += 2) dicts_[d.ref].emplace_back(items[j], items[j + 1]);
        break;
      }
      case 'J': {  // BININT
        V v;
        v.k = K::Int;
        v.i = int64_t(int32_t(uint32_t(uint_le(4))));
        push(v);
        break;
      }
      case 'K': case 'M': {  // BININT1, BININT2
        V v;
        v.k = K::Int;
        v.i = int64_t(uint_le(op == 'K' ? 1 : 2));
        push(v);
        break;
      }
      case 0x8a: {  // LONG1: little-endian two's complement of n bytes
        const size_t k = u8();
        if (k > 8) fail("integer of " + std::to_string(k) + " bytes (more than 64 bits)");
        uint64_t u = uint_le(k);
        if (k > 0 && k < 8 && (u >> (8 * k - 1)) & 1) u |= ~uint64_t(0) << (8 * k);  // sign-extend
        V v;
        v.k = K::Int;
        v.i = int64_t(u);
        push(v);
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        need(8);
        uint64_t u = 0;
        for (int b = 0; b < 8; ++b) u = (u << 8) | p_[pos_ + size_t(b)];
        pos_ += 8;
        V v;
        v.k = K::Float;
        std::memcpy(&v.f, &u, 8);
        push(v);
        break;
      }
      case 'N': {
        push(V());
        break;
      }
      case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
        V v;
        v.k = K::Bool;
        v.i = op == 0x88;
        push(v);
        break;
      }
      case 'X': case 0x8c: case 0x8d: {  // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
        const uint64_t len = uint_le(op == 'X' ? 4 : op == 0x8c ? 1 : 8);
        push(make_str(bytes(len)));
        break;
      }
      case 'q': case 'r': case 0x94: {  // BINPUT, LONG_BINPUT, MEMOIZE
        const uint64_t idx = op == 'q' ? uint_le(1) : op == 'r' ? uint_le(4) : memo_.size();
        charge();
        memo_[idx] = top();
        break;
      }
      case 'h': case 'j': {  // BINGET, LONG_BINGET
        const uint64_t idx = uint_le(op == 'h' ? 1 : 4);
        const auto it = memo_.find(idx);
        if (it == memo_.end()) fail("memo entry " + std::to_string(idx) + " used before it is set");
        push(it->second);
        break;
      }
      case 'c': {  // GLOBAL
        const std::string module(line());
        const std::string name(line());
        push(resolve_global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const V name = pop();
        const V module = pop();
        if (name.k != K::Str || module.k != K::Str) fail("STACK_GLOBAL on non-strings");
        push(resolve_global(str(module), str(name)));
        break;
      }
      case 'R': {  // REDUCE
        const V args = pop();
        const V callable = pop();
        push(reduce(callable, args));
        break;
      }
      case 'b': {  // BUILD: only the state dict's _metadata on an OrderedDict
        const V state = pop();
        const V& obj = top();
        if (obj.k != K::Dict || !(state.k == K::Dict || state.k == K::None))
          fail("BUILD (setting the state of an object) on " + describe(obj) + " with " + describe(state) +
               ": only an OrderedDict's attributes are accepted");
        break;
      }
      case 'Q': {  // BINPERSID
        const V pid = pop();
        push(persistent_load(pid));
        break;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        fail(std::string("pickle opcode ") + hex + " (" + opcode_name(op) +
             ") is not one a state dict uses: refused, nothing was executed");
      }
    }
  }

  // The state dict: str -> tensor, names unique.
  const V top_level = *result;
  if (top_level.k != K::Dict)
    fail("the pickled object is " + describe(top_level) + ", not a state dict (a dict of tensors)");
  PickledStateDict out;
  out.storages = storages_;
  std::unordered_set<std::string> names;
  for (const auto& [key, val] : dicts_[top_level.ref]) {
    if (key.k != K::Str) fail("a state dict key is " + describe(key) + ", not a str");
    const std::string& name = str(key);
    if (!valid_utf8(name)) fail("a tensor name is not valid UTF-8");
    if (val.k != K::Tensor)
      fail("state dict entry \"" + printable(name) + "\" is " + describe(val) +
           ", not a tensor (a training checkpoint or a nested dict? chatvec reads plain state dicts)");
    if (!names.insert(name).second) fail("tensor \"" + printable(name) + "\" appears twice in the state dict");
    const TensorRec& t = tensors_[val.ref];
    out.tensors.push_back(PickledTensor{name, t.storage, t.dtype, t.offset, t.shape, t.stride});
  }
  return out;
}

}  // namespace

PickledStateDict unpickle_state_dict(const uint8_t* data, size_t n, const std::string& what) {
  return Unpickler(data, n, what).run();
}

}  // namespace chatvec
