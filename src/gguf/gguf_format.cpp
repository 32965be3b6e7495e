#include "gguf/gguf_format.h"

#include <cmath>
#include <cstring>

#include <fmt/core.h>

#include "core/dtype.h"
#include "core/error.h"

namespace chatvec::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "u8";
    case ValueType::I8: return "i8";
    case ValueType::U16: return "u16";
    case ValueType::I16: return "i16";
    case ValueType::U32: return "u32";
    case ValueType::I32: return "i32";
    case ValueType::F32: return "f32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "str";
    case ValueType::ARRAY: return "arr";
    case ValueType::U64: return "u64";
    case ValueType::I64: return "i64";
    case ValueType::F64: return "f64";
  }
  return "?";
}

size_t value_type_size(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::BOOL: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    default: return 0;
  }
}

TypeTraits type_traits(uint32_t t) {
  switch (t) {
    case 0: return {"F32", 1, 4};
    case 1: return {"F16", 1, 2};
    case 2: return {"Q4_0", 32, 18};
    case 3: return {"Q4_1", 32, 20};
    case 6: return {"Q5_0", 32, 22};
    case 7: return {"Q5_1", 32, 24};
    case 8: return {"Q8_0", 32, 34};
    case 9: return {"Q8_1", 32, 36};
    case 10: return {"Q2_K", 256, 84};
    case 11: return {"Q3_K", 256, 110};
    case 12: return {"Q4_K", 256, 144};
    case 13: return {"Q5_K", 256, 176};
    case 14: return {"Q6_K", 256, 210};
    case 15: return {"Q8_K", 256, 292};
    case 16: return {"IQ2_XXS", 256, 66};
    case 17: return {"IQ2_XS", 256, 74};
    case 18: return {"IQ3_XXS", 256, 98};
    case 19: return {"IQ1_S", 256, 50};
    case 20: return {"IQ4_NL", 32, 18};
    case 21: return {"IQ3_S", 256, 110};
    case 22: return {"IQ2_S", 256, 82};
    case 23: return {"IQ4_XS", 256, 136};
    case 24: return {"I8", 1, 1};
    case 25: return {"I16", 1, 2};
    case 26: return {"I32", 1, 4};
    case 27: return {"I64", 1, 8};
    case 28: return {"F64", 1, 8};
    case 29: return {"IQ1_M", 256, 56};
    case 30: return {"BF16", 1, 2};
    case 34: return {"TQ1_0", 256, 54};
    case 35: return {"TQ2_0", 256, 66};
    case 39: return {"MXFP4", 32, 17};
    default: return {nullptr, 0, 0};
  }
}

void quantize_q8_0(const float* x, size_t n, uint8_t* out) {
  for (size_t b = 0; b < n / kQ8Block; ++b) {
    const float* v = x + b * kQ8Block;
    float amax = 0.0f;
    for (size_t j = 0; j < kQ8Block; ++j) amax = std::fmax(amax, std::fabs(v[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* blk = out + b * kQ8BlockBytes;
    const uint16_t dh = f32_to_f16(d);
    std::memcpy(blk, &dh, 2);
    for (size_t j = 0; j < kQ8Block; ++j) {
      const int8_t q = int8_t(std::roundf(v[j] * id));
      std::memcpy(blk + 2 + j, &q, 1);
    }
  }
}

void dequantize_q8_0(const uint8_t* in, size_t n, float* y) {
  for (size_t b = 0; b < n / kQ8Block; ++b) {
    const uint8_t* blk = in + b * kQ8BlockBytes;
    uint16_t dh;
    std::memcpy(&dh, blk, 2);
    const float d = f16_to_f32(dh);
    for (size_t j = 0; j < kQ8Block; ++j) y[b * kQ8Block + j] = float(int8_t(blk[2 + j])) * d;
  }
}

Value Value::str_array(std::vector<std::string> v) {
  Value x;
  x.type = ValueType::ARRAY;
  x.array_type = ValueType::STRING;
  x.count = v.size();
  x.strings = std::move(v);
  return x;
}
Value Value::f32_array(const std::vector<float>& v) {
  Value x;
  x.type = ValueType::ARRAY;
  x.array_type = ValueType::F32;
  x.count = v.size();
  x.raw.resize(v.size() * 4);
  if (!v.empty()) std::memcpy(x.raw.data(), v.data(), x.raw.size());
  return x;
}
Value Value::i32_array(const std::vector<int32_t>& v) {
  Value x;
  x.type = ValueType::ARRAY;
  x.array_type = ValueType::I32;
  x.count = v.size();
  x.raw.resize(v.size() * 4);
  if (!v.empty()) std::memcpy(x.raw.data(), v.data(), x.raw.size());
  return x;
}

bool Value::is_integer() const {
  switch (type) {
    case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16: case ValueType::U32:
    case ValueType::I32: case ValueType::U64: case ValueType::I64: return true;
    default: return false;
  }
}

uint64_t Value::encoded_size() const {
  switch (type) {
    case ValueType::STRING: return 8 + s.size();
    case ValueType::ARRAY: {
      uint64_t n = 4 + 8;
      if (array_type == ValueType::STRING) {
        for (const auto& e : strings) n += 8 + e.size();
      } else {
        n += raw.size();
      }
      return n;
    }
    default: return value_type_size(type);
  }
}

namespace {
std::string scalar_string(ValueType t, const uint8_t* p) {
  switch (t) {
    case ValueType::U8: return fmt::format("{}", p[0]);
    case ValueType::I8: return fmt::format("{}", int8_t(p[0]));
    case ValueType::BOOL: return p[0] ? "true" : "false";
    case ValueType::U16: { uint16_t v; std::memcpy(&v, p, 2); return fmt::format("{}", v); }
    case ValueType::I16: { int16_t v; std::memcpy(&v, p, 2); return fmt::format("{}", v); }
    case ValueType::U32: { uint32_t v; std::memcpy(&v, p, 4); return fmt::format("{}", v); }
    case ValueType::I32: { int32_t v; std::memcpy(&v, p, 4); return fmt::format("{}", v); }
    case ValueType::F32: { float v; std::memcpy(&v, p, 4); return fmt::format("{}", v); }
    case ValueType::U64: { uint64_t v; std::memcpy(&v, p, 8); return fmt::format("{}", v); }
    case ValueType::I64: { int64_t v; std::memcpy(&v, p, 8); return fmt::format("{}", v); }
    case ValueType::F64: { double v; std::memcpy(&v, p, 8); return fmt::format("{}", v); }
    default: return "?";
  }
}
std::string quoted(const std::string& s, size_t max_len = 60) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    const unsigned char c = s[i];
    if (c == '\n') out += "\\n";
    else if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20) out += fmt::format("\\x{:02x}", c);
    else out += char(c);
  }
  if (s.size() > max_len) out += fmt::format("...\" ({} bytes)", s.size());
  else out += "\"";
  return out;
}
}  // namespace

std::string Value::to_string(size_t max_items) const {
  switch (type) {
    case ValueType::STRING: return quoted(s);
    case ValueType::ARRAY: {
      std::string out = "[";
      const size_t shown = size_t(std::min<uint64_t>(count, max_items));
      for (size_t k = 0; k < shown; ++k) {
        if (k) out += ", ";
        if (array_type == ValueType::STRING) out += quoted(strings[k], 24);
        else out += scalar_string(array_type, raw.data() + k * value_type_size(array_type));
      }
      if (count > shown) out += fmt::format(", ... ({} {} items)", count, value_type_name(array_type));
      return out + "]";
    }
    case ValueType::BOOL: return u ? "true" : "false";
    case ValueType::F32: return fmt::format("{}", float(f));
    case ValueType::F64: return fmt::format("{}", f);
    case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64: return fmt::format("{}", i);
    default: return fmt::format("{}", u);
  }
}

}  // namespace chatvec::gguf
