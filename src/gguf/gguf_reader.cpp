#include "gguf/gguf_reader.h"

#include <cstring>
#include <fcntl.h>
#include <unistd.h>

#include <fmt/core.h>

#include "core/dtype.h"
#include "core/error.h"
#include "gguf/gguf_writer.h"

namespace chatvec::gguf {

namespace {

class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t size, const std::string& what) : p_(p), size_(size), what_(what) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  [[noreturn]] void fail(const std::string& msg) const {
    throw InputError(fmt::format("{}: invalid GGUF: {} (at byte {})", what_, msg, pos_));
  }
  void need(uint64_t n, const char* what) const {
    if (n > left()) fail(fmt::format("truncated: {} needs {} bytes, {} left", what, n, left()));
  }
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const uint64_t n = get<uint64_t>(what);
    if (n > left()) fail(fmt::format("{} has length {} but only {} bytes remain", what, n, left()));
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(n));
    pos_ += n;
    return s;
  }
  void bytes(uint64_t n, std::vector<uint8_t>& out, const char* what) {
    need(n, what);
    out.assign(p_ + pos_, p_ + pos_ + n);
    pos_ += n;
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& what_;
};

bool valid_value_type(uint32_t t) { return t < kValueTypeCount; }

void read_scalar(Cursor& c, Value& v) {
  switch (v.type) {
    case ValueType::U8: v.u = c.get<uint8_t>("u8 value"); break;
    case ValueType::I8: v.i = c.get<int8_t>("i8 value"); break;
    case ValueType::U16: v.u = c.get<uint16_t>("u16 value"); break;
    case ValueType::I16: v.i = c.get<int16_t>("i16 value"); break;
    case ValueType::U32: v.u = c.get<uint32_t>("u32 value"); break;
    case ValueType::I32: v.i = c.get<int32_t>("i32 value"); break;
    case ValueType::F32: v.f = c.get<float>("f32 value"); break;
    case ValueType::U64: v.u = c.get<uint64_t>("u64 value"); break;
    case ValueType::I64: v.i = c.get<int64_t>("i64 value"); break;
    case ValueType::F64: v.f = c.get<double>("f64 value"); break;
    case ValueType::BOOL: {
      const uint8_t b = c.get<uint8_t>("bool value");
      if (b > 1) c.fail(fmt::format("bool value {} is neither 0 nor 1", b));
      v.u = b;
      break;
    }
    default: break;
  }
}

}  // namespace

Header parse_header(const uint8_t* bytes, uint64_t size, const std::string& what) {
  Cursor c(bytes, size, what);
  Header h;
  c.need(4, "magic");
  if (std::memcmp(bytes, "GGUF", 4) != 0) c.fail("bad magic (not a GGUF file)");
  c.get<uint32_t>("magic");
  h.version = c.get<uint32_t>("version");
  if (h.version == 1) c.fail("GGUF version 1 is not supported");
  if (h.version == 0 || h.version > kVersion)
    c.fail(fmt::format("unsupported version {} (2 and 3 are read)", h.version));
  const uint64_t n_tensors = c.get<uint64_t>("tensor count");
  const uint64_t n_kv = c.get<uint64_t>("key-value count");
  // Smallest encodings: a key-value is 8 (key length) + 4 (type) + 1 byte,
  // a tensor info 8 + 4 + 4 + 8 bytes (0 dims, empty name).
  if (n_kv > c.left() / 13) c.fail(fmt::format("key-value count {} exceeds what the file can hold", n_kv));
  if (n_tensors > c.left() / 24) c.fail(fmt::format("tensor count {} exceeds what the file can hold", n_tensors));

  std::map<std::string, size_t, std::less<>> keys;
  h.kvs.reserve(size_t(n_kv));
  for (uint64_t k = 0; k < n_kv; ++k) {
    KeyValue kv;
    kv.key = c.str("key");
    if (kv.key.empty()) c.fail(fmt::format("key-value {} has an empty key", k));
    if (keys.count(kv.key)) c.fail(fmt::format("duplicate key {}", kv.key));
    const uint32_t t = c.get<uint32_t>("value type");
    if (!valid_value_type(t)) c.fail(fmt::format("key {} has invalid value type {}", kv.key, t));
    kv.value.type = ValueType(t);
    if (kv.value.type == ValueType::STRING) {
      kv.value.s = c.str("string value");
    } else if (kv.value.type == ValueType::ARRAY) {
      const uint32_t et = c.get<uint32_t>("array element type");
      if (!valid_value_type(et)) c.fail(fmt::format("key {}: array of invalid type {}", kv.key, et));
      if (ValueType(et) == ValueType::ARRAY) c.fail(fmt::format("key {}: nested arrays are not supported", kv.key));
      kv.value.array_type = ValueType(et);
      const uint64_t n = c.get<uint64_t>("array length");
      kv.value.count = n;
      if (kv.value.array_type == ValueType::STRING) {
        if (n > c.left() / 8) c.fail(fmt::format("key {}: array of {} strings exceeds the file", kv.key, n));
        kv.value.strings.reserve(size_t(n));
        for (uint64_t i = 0; i < n; ++i) kv.value.strings.push_back(c.str("array string"));
      } else {
        const uint64_t es = value_type_size(kv.value.array_type);
        if (n > c.left() / es) c.fail(fmt::format("key {}: array of {} elements exceeds the file", kv.key, n));
        c.bytes(n * es, kv.value.raw, "array data");
        if (kv.value.array_type == ValueType::BOOL)
          for (uint8_t b : kv.value.raw)
            if (b > 1) c.fail(fmt::format("key {}: bool element {} is neither 0 nor 1", kv.key, b));
      }
    } else {
      read_scalar(c, kv.value);
    }
    keys.emplace(kv.key, h.kvs.size());
    h.kvs.push_back(std::move(kv));
  }
  if (auto it = keys.find("general.alignment"); it != keys.end()) {
    const Value& a = h.kvs[it->second].value;
    if (a.type != ValueType::U32) c.fail(fmt::format("general.alignment has type {}, expected u32", value_type_name(a.type)));
    if (a.u == 0 || (a.u & (a.u - 1)) != 0) c.fail(fmt::format("general.alignment {} is not a power of two", a.u));
    h.alignment = uint32_t(a.u);
  }

  std::map<std::string, size_t, std::less<>> names;
  h.tensors.reserve(size_t(n_tensors));
  uint64_t expected_offset = 0;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    TensorEntry t;
    t.name = c.str("tensor name");
    if (t.name.size() > kMaxNameLength)
      c.fail(fmt::format("tensor name of {} bytes is longer than {}: {}", t.name.size(), kMaxNameLength, t.name.substr(0, 80)));
    if (names.count(t.name)) c.fail(fmt::format("duplicate tensor name {}", t.name));
    const uint32_t nd = c.get<uint32_t>("dimension count");
    if (nd > kMaxDims) c.fail(fmt::format("tensor {} has {} dimensions (at most {})", t.name, nd, kMaxDims));
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const int64_t v = c.get<int64_t>("dimension");
      if (v < 0) c.fail(fmt::format("tensor {} has negative dimension {}", t.name, v));
      // A tensor of no elements has no place in a model, and its other
      // dimensions would be bounded by nothing: [0, 2^34] takes 0 bytes, yet
      // the readers that walk its rows (q/k unpermuting in import and in the
      // engine) looped 2^34 times.
      if (v == 0) c.fail(fmt::format("tensor {} has a dimension of 0 (no elements)", t.name));
      if (numel > uint64_t(INT64_MAX) / uint64_t(v))
        c.fail(fmt::format("tensor {}: element count overflows int64", t.name));
      numel *= uint64_t(v);
      t.ne.push_back(uint64_t(v));
    }
    t.numel = numel;
    t.type = c.get<uint32_t>("tensor type");
    const TypeTraits tt = type_traits(t.type);
    if (!tt.name) c.fail(fmt::format("tensor {} has invalid ggml type {}", t.name, t.type));
    const uint64_t row = t.ne.empty() ? 1 : t.ne[0];
    if (row % tt.block != 0)
      c.fail(fmt::format("tensor {} of type {}: row length {} is not a multiple of the block size {}", t.name, tt.name,
                         row, tt.block));
    // numel < 2^63 but numel / block * bytes can exceed 2^64 (an F32 tensor
    // of 2^62 elements would wrap to 0 bytes): bound it by the file first.
    if (numel / tt.block > c.left() / tt.bytes)
      c.fail(fmt::format("tensor {}: {} elements of {} take more bytes than the file holds", t.name, numel, tt.name));
    t.nbytes = numel / tt.block * tt.bytes;
    t.offset = c.get<uint64_t>("tensor offset");
    if (t.offset != expected_offset)
      c.fail(fmt::format("tensor {} has offset {}, expected {} (tensors back to back, aligned to {})", t.name, t.offset,
                         expected_offset, h.alignment));
    const uint64_t padded = pad_to(t.nbytes, h.alignment);
    if (padded < t.nbytes || expected_offset > UINT64_MAX - padded) c.fail("data section size overflows");
    expected_offset += padded;
    names.emplace(t.name, h.tensors.size());
    h.tensors.push_back(std::move(t));
  }
  h.data_offset = pad_to(c.pos(), h.alignment);
  if (n_tensors > 0 && h.data_offset > size)
    c.fail(fmt::format("data section starts at {}, beyond the end of the file ({} bytes)", h.data_offset, size));
  for (const TensorEntry& t : h.tensors) {
    if (t.offset + t.nbytes > size - std::min(size, h.data_offset))
      throw InputError(fmt::format("{}: invalid GGUF: tensor {} data [{}, {}) is not within the file ({} bytes)", what,
                                   t.name, h.data_offset + t.offset, h.data_offset + t.offset + t.nbytes, size));
  }
  return h;
}

File::File(const std::string& path) : map_(path) {
  h_ = parse_header(map_.data(), map_.size(), path);
  for (size_t i = 0; i < h_.kvs.size(); ++i) kv_index_.emplace(h_.kvs[i].key, i);
  for (size_t i = 0; i < h_.tensors.size(); ++i) tensor_index_.emplace(h_.tensors[i].name, i);
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &h_.kvs[it->second].value;
}

const TensorEntry* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &h_.tensors[it->second];
}

std::string File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) throw InputError(fmt::format("{}: GGUF metadata has no {}", path(), key));
  if (v->type != ValueType::STRING) throw InputError(fmt::format("{}: GGUF key {} is not a string", path(), key));
  return v->s;
}

uint64_t File::get_uint(std::string_view key) const {
  const Value* v = find(key);
  if (!v) throw InputError(fmt::format("{}: GGUF metadata has no {}", path(), key));
  switch (v->type) {
    case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64: return v->u;
    case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64:
      if (v->i >= 0) return uint64_t(v->i);
      break;
    default: break;
  }
  throw InputError(fmt::format("{}: GGUF key {} is not a non-negative integer", path(), key));
}

double File::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (!v) throw InputError(fmt::format("{}: GGUF metadata has no {}", path(), key));
  if (v->type == ValueType::F32 || v->type == ValueType::F64) return v->f;
  if (v->is_integer()) return v->type == ValueType::U8 || v->type == ValueType::U16 || v->type == ValueType::U32 ||
                                     v->type == ValueType::U64
                                 ? double(v->u)
                                 : double(v->i);
  throw InputError(fmt::format("{}: GGUF key {} is not a number", path(), key));
}

bool looks_like_gguf(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char m[4] = {};
  const bool ok = ::read(fd, m, 4) == 4 && std::memcmp(m, "GGUF", 4) == 0;
  ::close(fd);
  return ok;
}

void tensor_to_f32(const File& f, const TensorEntry& t, uint64_t at, uint64_t n, float* out) {
  const uint8_t* d = f.data(t);
  switch (t.type) {
    case uint32_t(TensorType::F32): convert_to_f32(DType::F32, d + at * 4, n, out); return;
    case uint32_t(TensorType::F16): convert_to_f32(DType::F16, d + at * 2, n, out); return;
    case uint32_t(TensorType::BF16): convert_to_f32(DType::BF16, d + at * 2, n, out); return;
    case uint32_t(TensorType::Q8_0):
      if (at % kQ8Block || n % kQ8Block) throw RuntimeFailure("q8_0 access not block aligned");
      dequantize_q8_0(d + at / kQ8Block * kQ8BlockBytes, n, out);
      return;
    default:
      throw InputError(fmt::format("{}: tensor {} is {}; only F32, F16, BF16 and Q8_0 can be read for arithmetic",
                                   f.path(), t.name, type_name(t.type)));
  }
}

}  // namespace chatvec::gguf
