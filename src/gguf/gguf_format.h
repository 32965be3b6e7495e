// GGUF, the file format of llama.cpp / ggml (version 3): constants, value
// types, tensor types, and the Q8_0 block codec.
//
// Layout (all little-endian):
//   "GGUF" | u32 version | u64 tensor count | u64 key-value count
//   key-values: string key | u32 value type | value
//   tensor infos: string name | u32 n_dims | i64 ne[n_dims] | u32 ggml type | u64 offset
//   padding to `general.alignment` (default 32)
//   data section: each tensor at its offset (relative to the section), each
//   padded to the alignment.
// A string is u64 length + bytes (no terminator); an array is u32 element
// type + u64 count + elements.  ne[0] is the contiguous dimension, so a
// PyTorch [rows, cols] weight has ne = {cols, rows}.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chatvec::gguf {

constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr uint32_t kMaxDims = 4;       // GGML_MAX_DIMS
constexpr size_t kMaxNameLength = 63;  // GGML_MAX_NAME - 1 (the terminator)

enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
constexpr uint32_t kValueTypeCount = 13;
const char* value_type_name(ValueType t);
// Bytes of one scalar element (0 for STRING and ARRAY).
size_t value_type_size(ValueType t);

// The ggml tensor types we read and write (other valid ggml types are
// recognised by the reader for their block sizes, and reported as
// unsupported for arithmetic).
enum class TensorType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30 };

struct TypeTraits {
  const char* name;   // nullptr: not a ggml type
  uint32_t block;     // elements per block
  uint32_t bytes;     // bytes per block
};
// Traits of any ggml type id (name nullptr for ids ggml does not define).
TypeTraits type_traits(uint32_t ggml_type);
inline const char* type_name(uint32_t t) {
  const char* n = type_traits(t).name;
  return n ? n : "?";
}

// llama_ftype values for general.file_type.
constexpr uint32_t kFileTypeAllF32 = 0;
constexpr uint32_t kFileTypeMostlyF16 = 1;
constexpr uint32_t kFileTypeMostlyQ8_0 = 7;
constexpr uint32_t kFileTypeMostlyBF16 = 32;

// Q8_0: 32 values per block, an f16 scale d = amax / 127 then 32 int8
// q = round(x / d) (computed as x * (1/d), rounding half away from zero).
constexpr size_t kQ8Block = 32;
constexpr size_t kQ8BlockBytes = 34;
// `n` must be a multiple of 32; writes n / 32 * 34 bytes.
void quantize_q8_0(const float* x, size_t n, uint8_t* out);
void dequantize_q8_0(const uint8_t* in, size_t n, float* y);

// A metadata value.  Scalars keep their exact type; numeric arrays keep their
// raw little-endian element bytes.
struct Value {
  ValueType type = ValueType::U32;
  ValueType array_type = ValueType::U8;  // element type when type == ARRAY
  uint64_t u = 0;                        // U8..U64, BOOL
  int64_t i = 0;                         // I8..I64
  double f = 0;                          // F32, F64
  std::string s;                         // STRING
  std::vector<std::string> strings;      // ARRAY of STRING
  std::vector<uint8_t> raw;              // ARRAY of numbers/BOOL
  uint64_t count = 0;                    // ARRAY element count

  static Value u32(uint32_t v) { Value x; x.type = ValueType::U32; x.u = v; return x; }
  static Value i32(int32_t v) { Value x; x.type = ValueType::I32; x.i = v; return x; }
  static Value f32(float v) { Value x; x.type = ValueType::F32; x.f = v; return x; }
  static Value boolean(bool v) { Value x; x.type = ValueType::BOOL; x.u = v; return x; }
  static Value str(std::string v) { Value x; x.type = ValueType::STRING; x.s = std::move(v); return x; }
  static Value str_array(std::vector<std::string> v);
  static Value f32_array(const std::vector<float>& v);
  static Value i32_array(const std::vector<int32_t>& v);

  // Numeric scalar as integer (InputError if not an integer type).
  bool is_integer() const;
  // Encoded size in bytes (without the type tag).
  uint64_t encoded_size() const;
  // Short human rendering (arrays summarised).
  std::string to_string(size_t max_items = 8) const;
};

struct KeyValue {
  std::string key;
  Value value;
};

}  // namespace chatvec::gguf
