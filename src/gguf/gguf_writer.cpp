#include "gguf/gguf_writer.h"

#include <cstring>

#include <fmt/core.h>

#include "core/error.h"
#include "formats/safetensors/safetensors_reader.h"

namespace chatvec::gguf {

uint64_t TensorDecl::numel() const {
  uint64_t n = 1;
  for (uint64_t d : ne) {
    if (d != 0 && n > UINT64_MAX / d) throw InputError(fmt::format("GGUF tensor {}: element count overflows", name));
    n *= d;
  }
  return n;
}

uint64_t TensorDecl::nbytes() const {
  const TypeTraits tt = type_traits(type);
  if (!tt.name) throw InputError(fmt::format("GGUF tensor {}: unknown ggml type {}", name, type));
  if (ne.empty() || ne[0] % tt.block != 0)
    throw InputError(fmt::format("GGUF tensor {}: row length {} is not a multiple of the {} block size {}", name,
                                 ne.empty() ? 0 : ne[0], tt.name, tt.block));
  return numel() / tt.block * tt.bytes;
}

namespace {
void put_u32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put_u64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
void put_str(std::string& s, const std::string& v) {
  put_u64(s, v.size());
  s += v;
}
void put_scalar(std::string& s, const Value& v) {
  switch (v.type) {
    case ValueType::U8: case ValueType::BOOL: s.push_back(char(uint8_t(v.u))); break;
    case ValueType::I8: s.push_back(char(int8_t(v.i))); break;
    case ValueType::U16: { uint16_t x = uint16_t(v.u); s.append(reinterpret_cast<const char*>(&x), 2); break; }
    case ValueType::I16: { int16_t x = int16_t(v.i); s.append(reinterpret_cast<const char*>(&x), 2); break; }
    case ValueType::U32: put_u32(s, uint32_t(v.u)); break;
    case ValueType::I32: { int32_t x = int32_t(v.i); s.append(reinterpret_cast<const char*>(&x), 4); break; }
    case ValueType::F32: { float x = float(v.f); s.append(reinterpret_cast<const char*>(&x), 4); break; }
    case ValueType::U64: put_u64(s, v.u); break;
    case ValueType::I64: { int64_t x = v.i; s.append(reinterpret_cast<const char*>(&x), 8); break; }
    case ValueType::F64: { double x = v.f; s.append(reinterpret_cast<const char*>(&x), 8); break; }
    default: break;
  }
}
}  // namespace

std::string header_bytes(const std::vector<KeyValue>& kvs, const std::vector<TensorDecl>& tensors,
                         uint32_t alignment) {
  std::string s = "GGUF";
  put_u32(s, kVersion);
  put_u64(s, tensors.size());
  put_u64(s, kvs.size());
  for (const KeyValue& kv : kvs) {
    put_str(s, kv.key);
    put_u32(s, uint32_t(kv.value.type));
    if (kv.value.type == ValueType::STRING) {
      put_str(s, kv.value.s);
    } else if (kv.value.type == ValueType::ARRAY) {
      put_u32(s, uint32_t(kv.value.array_type));
      put_u64(s, kv.value.count);
      if (kv.value.array_type == ValueType::STRING) {
        for (const auto& e : kv.value.strings) put_str(s, e);
      } else {
        s.append(reinterpret_cast<const char*>(kv.value.raw.data()), kv.value.raw.size());
      }
    } else {
      put_scalar(s, kv.value);
    }
  }
  uint64_t offset = 0;
  for (const TensorDecl& t : tensors) {
    if (t.name.size() > kMaxNameLength)
      throw InputError(fmt::format("GGUF tensor name too long ({} > {} bytes): {}", t.name.size(), kMaxNameLength, t.name));
    if (t.ne.empty() || t.ne.size() > kMaxDims)
      throw InputError(fmt::format("GGUF tensor {}: {} dimensions (1 to {} allowed)", t.name, t.ne.size(), kMaxDims));
    put_str(s, t.name);
    put_u32(s, uint32_t(t.ne.size()));
    for (uint64_t d : t.ne) put_u64(s, d);
    put_u32(s, t.type);
    put_u64(s, offset);
    offset += pad_to(t.nbytes(), alignment);
  }
  s.resize(pad_to(s.size(), alignment), '\0');
  return s;
}

Writer::Writer(std::string path, const std::vector<KeyValue>& kvs, std::vector<TensorDecl> tensors,
               uint32_t alignment)
    : tensors_(std::move(tensors)), alignment_(alignment) {
  const std::string header = header_bytes(kvs, tensors_, alignment_);
  total_ = header.size();
  for (const auto& t : tensors_) total_ += pad_to(t.nbytes(), alignment_);
  file_ = std::make_unique<OutputFile>(path);
  file_->reserve(total_);
  file_->write(header);
  while (current_ < tensors_.size() && tensors_[current_].nbytes() == 0) complete_tensor();
}

Writer::~Writer() = default;

uint64_t Writer::written() const { return file_ ? file_->written() : total_; }

void Writer::complete_tensor() {
  const uint64_t nb = tensors_[current_].nbytes();
  static const char zeros[64] = {};
  uint64_t pad = pad_to(nb, alignment_) - nb;
  while (pad > 0) {
    const uint64_t k = std::min<uint64_t>(pad, sizeof zeros);
    file_->write(zeros, k);
    pad -= k;
  }
  ++current_;
  in_current_ = 0;
  file_->flush_behind();
}

void Writer::append(const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    if (current_ >= tensors_.size()) throw RuntimeFailure("GGUF writer: more tensor bytes than declared");
    const uint64_t left = tensors_[current_].nbytes() - in_current_;
    const uint64_t k = std::min<uint64_t>(left, n);
    file_->write(p, k);
    p += k;
    n -= k;
    in_current_ += k;
    if (in_current_ == tensors_[current_].nbytes()) {
      complete_tensor();
      while (current_ < tensors_.size() && tensors_[current_].nbytes() == 0) complete_tensor();
    }
  }
}

void Writer::finish() {
  if (current_ != tensors_.size())
    throw RuntimeFailure(fmt::format("GGUF writer: tensor {} was not written", tensors_[current_].name));
  if (file_->written() != total_)
    throw RuntimeFailure(fmt::format("GGUF writer: wrote {} bytes, expected {}", file_->written(), total_));
  file_->sync();
  file_->close();
  file_.reset();
}

}  // namespace chatvec::gguf
