// Vectorised f16 <-> f32 conversion of arrays, bit for bit the scalar
// f16_to_f32 / f32_to_f16 of core/dtype.h on every input.
//
// The hardware conversions (F16C: VCVTPH2PS / VCVTPS2PH; AVX-512F: their
// 16-lane forms) are exact from f16 and round to nearest-even into f16,
// overflowing to infinity, as the scalar functions do.  They differ only on
// NaN: the hardware keeps (and quiets) the payload, the scalar functions
// give sign|0x7E00 from f32 and keep the payload unquieted from f16.  Those
// lanes are patched with the scalar results' bit patterns, so the output is
// identical whatever the input.
//
// The implementation is chosen once per process from the CPU (CPUID, and
// XGETBV for the OS side): AVX-512 (F, BW, VL) with F16C, else AVX2 with
// F16C, else the scalar functions.  CHATVEC_F16_SIMD=scalar|f16c|avx512 in
// the environment forces one (an unsupported choice falls back to the best
// supported one below it): for benchmarks and for testing the fallback.
#pragma once

#include <cstddef>

namespace chatvec {

// n halves at `src` (any alignment: read as bytes, never through a typed
// pointer) -> n floats at `dst`.
void f16_to_f32_n(const void* src, float* dst, size_t n);
// n floats at `src` -> n halves at `dst` (any alignment).
void f32_to_f16_n(const float* src, void* dst, size_t n);
// "avx512", "f16c" or "scalar": what the two functions above use.
const char* f16_simd_path();

// Each implementation on its own, for tests and benchmarks.  Calling one the
// CPU lacks is undefined: check have_*() first.
namespace f16_simd {
bool have_f16c();    // AVX2 + F16C
bool have_avx512();  // AVX-512 F, BW, VL + F16C
void to_f32_scalar(const void* src, float* dst, size_t n);
void from_f32_scalar(const float* src, void* dst, size_t n);
void to_f32_f16c(const void* src, float* dst, size_t n);
void from_f32_f16c(const float* src, void* dst, size_t n);
void to_f32_avx512(const void* src, float* dst, size_t n);
void from_f32_avx512(const float* src, void* dst, size_t n);
}  // namespace f16_simd

}  // namespace chatvec
