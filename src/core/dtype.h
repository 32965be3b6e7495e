// Element types of tensors, as safetensors names them, and the exact
// conversions between the float types and fp32.
//
// Rounding from fp32 to bf16/f16 is round-to-nearest-even, exactly as
// PyTorch's CPU kernels do it; NaN stays NaN (see each function for the
// pattern).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace chatvec {

enum class DType : uint8_t {
  BOOL, U8, I8, I16, U16, I32, U32, I64, U64,
  F16, BF16, F32, F64,
  F8_E4M3, F8_E5M2, F8_E8M0, F6_E2M3, F6_E3M2, F4,
};

// Name as written in a safetensors header ("BF16").  nullopt when unknown.
std::optional<DType> dtype_from_name(std::string_view name);
std::string_view dtype_name(DType t);
// Size of one element in bits (4 and 6 for the packed micro-float types).
unsigned dtype_bits(DType t);
// F16, BF16, F32, F64: the types the merge does arithmetic on.
bool dtype_is_float_computable(DType t);
// Any floating type, including the F8/F6/F4 ones we only recognise.
bool dtype_is_float(DType t);
// Parse the user's --dtype spelling: bf16, f16/fp16/float16, f32/fp32/float32.
std::optional<DType> dtype_from_user(std::string_view s);

// ---- bulk conversions: the one conversion layer ----------------------------
//
// Every conversion between a stored float type and fp32/fp64 in chatvec goes
// through these functions (the merge kernels, GGUF export, the engine, the
// trainer, diff).  Pointers may have any alignment (tensors in a safetensors
// file need not be aligned): elements are loaded and stored byte-wise.

// F16, BF16, F32, F64: the types these functions convert.
bool dtype_converts_to_f32(DType t);
// Throws InputError "WHAT has dtype X; PURPOSE supports F16, BF16, F32 and
// F64" unless dtype_converts_to_f32(t).  `what` names the tensor and file.
void require_convertible(DType t, const std::string& what, std::string_view purpose);

// n elements of `from` at `src` to fp32 (exact for F16/BF16/F32; F64 rounds
// to nearest as float(x)).  std::logic_error for a dtype that does not
// convert (callers check with require_convertible first).
void convert_to_f32(DType from, const void* src, size_t n, float* dst);
// n fp32 values to `to` at `dst`, rounding to nearest-even as PyTorch's
// tensor.to(dtype) (see f32_to_bf16 / f32_to_f16 for NaN).
void convert_from_f32(const float* src, size_t n, DType to, void* dst);
// The fp64 twins (F64 outputs): to fp64 exactly; from fp64 through float for
// the 16-bit types (float(x), then rounded as above), as PyTorch's
// tensor.double().to(dtype) does on CPU.
void convert_to_f64(DType from, const void* src, size_t n, double* dst);
void convert_from_f64(const double* src, size_t n, DType to, void* dst);

// ---- scalar conversions --------------------------------------------------

inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t bits_from_f32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(uint32_t(h) << 16); }

// Round-to-nearest-even on the upper 16 bits.  Any NaN becomes 0xFFFF, the
// pattern PyTorch's vectorised x86 CPU kernels produce for tensor.to(bfloat16)
// (measured with torch 1.13 on AVX2; its scalar path would give 0x7FC0).
inline uint16_t f32_to_bf16(float f) {
  const uint32_t u = bits_from_f32(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0xffff;
  const uint32_t half_ulp_even = 0x7fffu + ((u >> 16) & 1u);
  return uint16_t((u + half_ulp_even) >> 16);
}

// IEEE half to single.  Exact: every half value is a float.
inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (man << 13));  // inf, NaN
  if (exp == 0) {  // zero and subnormals: man * 2^-24, exact in float
    const float v = float(man) * f32_from_bits(0x33800000u);
    return f32_from_bits(sign | bits_from_f32(v));
  }
  return f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}

// Single to IEEE half, round-to-nearest-even.  NaN becomes the quiet NaN
// 0x7E00 with its sign, as c10::Half does; overflow becomes infinity.
inline uint16_t f32_to_f16(float f) {
  const uint32_t u = bits_from_f32(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
  if (a >= 0x38800000u) {                        // normal half range
    // Re-bias the exponent (127 -> 15) and round the 13 dropped bits to even;
    // a carry out of the mantissa correctly bumps the exponent.
    const uint32_t r = a - 0x38000000u + 0xfffu + ((a >> 13) & 1u);
    return sign | uint16_t(r >> 13);
  }
  // Subnormal half: the value in units of 2^-24, rounded to an even integer by
  // the float adder itself (adding 2^23 leaves no fraction bits).
  const float units = f32_from_bits(a) * 16777216.0f;  // exact scaling by 2^24
  const float rounded = units + 8388608.0f;
  return sign | uint16_t(bits_from_f32(rounded) - 0x4b000000u);
}

}  // namespace chatvec
