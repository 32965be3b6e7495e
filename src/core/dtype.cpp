#include "core/dtype.h"

#include <array>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "core/dtype_simd.h"
#include "core/error.h"

namespace chatvec {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  unsigned bits;
};
constexpr std::array<DTypeInfo, 19> kTypes{{
    {DType::BOOL, "BOOL", 8},       {DType::U8, "U8", 8},
    {DType::I8, "I8", 8},           {DType::I16, "I16", 16},
    {DType::U16, "U16", 16},        {DType::I32, "I32", 32},
    {DType::U32, "U32", 32},        {DType::I64, "I64", 64},
    {DType::U64, "U64", 64},        {DType::F16, "F16", 16},
    {DType::BF16, "BF16", 16},      {DType::F32, "F32", 32},
    {DType::F64, "F64", 64},        {DType::F8_E4M3, "F8_E4M3", 8},
    {DType::F8_E5M2, "F8_E5M2", 8}, {DType::F8_E8M0, "F8_E8M0", 8},
    {DType::F6_E2M3, "F6_E2M3", 6}, {DType::F6_E3M2, "F6_E3M2", 6},
    {DType::F4, "F4", 4},
}};
}  // namespace

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& t : kTypes)
    if (t.name == name) return t.type;
  return std::nullopt;
}

std::string_view dtype_name(DType t) { return kTypes[size_t(t)].name; }
unsigned dtype_bits(DType t) { return kTypes[size_t(t)].bits; }

bool dtype_is_float_computable(DType t) {
  return t == DType::F16 || t == DType::BF16 || t == DType::F32 || t == DType::F64;
}

bool dtype_is_float(DType t) { return dtype_is_float_computable(t) || t >= DType::F8_E4M3; }

std::optional<DType> dtype_from_user(std::string_view s) {
  if (s == "bf16" || s == "bfloat16" || s == "BF16") return DType::BF16;
  if (s == "f16" || s == "fp16" || s == "float16" || s == "F16") return DType::F16;
  if (s == "f32" || s == "fp32" || s == "float32" || s == "F32") return DType::F32;
  return std::nullopt;
}

bool dtype_converts_to_f32(DType t) { return dtype_is_float_computable(t); }

void require_convertible(DType t, const std::string& what, std::string_view purpose) {
  if (dtype_converts_to_f32(t)) return;
  throw InputError(what + " has dtype " + std::string(dtype_name(t)) + "; " + std::string(purpose) +
                   " supports F16, BF16, F32 and F64");
}

namespace {

[[noreturn]] void unsupported(DType t, const char* fn) {
  throw std::logic_error(std::string(fn) + ": dtype " + std::string(dtype_name(t)) + " does not convert");
}

// Element i of an unaligned array of T.
template <typename T>
inline T load(const uint8_t* p, size_t i) {
  T v;
  std::memcpy(&v, p + i * sizeof(T), sizeof(T));
  return v;
}
template <typename T>
inline void store(uint8_t* p, size_t i, T v) {
  std::memcpy(p + i * sizeof(T), &v, sizeof(T));
}

template <typename Wide>
void to_wide(DType from, const void* src, size_t n, Wide* dst, const char* fn) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  switch (from) {
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) dst[i] = Wide(bf16_to_f32(load<uint16_t>(s, i)));
      return;
    case DType::F16:
      if constexpr (std::is_same_v<Wide, float>) {
        f16_to_f32_n(s, dst, n);  // vectorised, bit for bit f16_to_f32 (core/dtype_simd.h)
      } else {
        for (size_t i = 0; i < n; ++i) dst[i] = Wide(f16_to_f32(load<uint16_t>(s, i)));
      }
      return;
    case DType::F32:
      for (size_t i = 0; i < n; ++i) dst[i] = Wide(load<float>(s, i));
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) dst[i] = Wide(load<double>(s, i));
      return;
    default:
      unsupported(from, fn);
  }
}

template <typename Wide>
void from_wide(const Wide* src, size_t n, DType to, void* dst, const char* fn) {
  uint8_t* d = static_cast<uint8_t*>(dst);
  switch (to) {
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) store<uint16_t>(d, i, f32_to_bf16(float(src[i])));
      return;
    case DType::F16:
      if constexpr (std::is_same_v<Wide, float>) {
        f32_to_f16_n(src, d, n);  // vectorised, bit for bit f32_to_f16 (core/dtype_simd.h)
      } else {
        for (size_t i = 0; i < n; ++i) store<uint16_t>(d, i, f32_to_f16(float(src[i])));
      }
      return;
    case DType::F32:
      for (size_t i = 0; i < n; ++i) store<float>(d, i, float(src[i]));
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) store<double>(d, i, double(src[i]));
      return;
    default:
      unsupported(to, fn);
  }
}

}  // namespace

void convert_to_f32(DType from, const void* src, size_t n, float* dst) { to_wide(from, src, n, dst, "convert_to_f32"); }
void convert_to_f64(DType from, const void* src, size_t n, double* dst) { to_wide(from, src, n, dst, "convert_to_f64"); }
void convert_from_f32(const float* src, size_t n, DType to, void* dst) {
  from_wide(src, n, to, dst, "convert_from_f32");
}
void convert_from_f64(const double* src, size_t n, DType to, void* dst) {
  from_wide(src, n, to, dst, "convert_from_f64");
}

}  // namespace chatvec
