#include "core/dtype.h"

#include <array>

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

}  // namespace chatvec
