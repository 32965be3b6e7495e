#include "core/dtype_simd.h"

#include <cpuid.h>
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "core/dtype.h"

// GCC 12 warns about the intrinsics' own placeholder operands
// (_mm512_undefined_* inside avx512fintrin.h): a known false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace chatvec::f16_simd {

void to_f32_scalar(const void* src, float* dst, size_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, s + 2 * i, 2);
    dst[i] = f16_to_f32(h);
  }
}

void from_f32_scalar(const float* src, void* dst, size_t n) {
  uint8_t* d = static_cast<uint8_t*>(dst);
  for (size_t i = 0; i < n; ++i) {
    const uint16_t h = f32_to_f16(src[i]);
    std::memcpy(d + 2 * i, &h, 2);
  }
}

namespace {

// CPUID and XGETBV directly (clang 14's __builtin_cpu_supports does not know
// "f16c"): the instruction sets, and whether the OS saves their registers.
struct Features {
  bool avx2_f16c = false, avx512 = false;
};

Features detect() {
  Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  if (!osxsave || !avx || !f16c) return f;
  uint32_t xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6) != 0x6) return f;  // XMM and YMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2_f16c = b & (1u << 5);
  const bool avx512f = b & (1u << 16), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  f.avx512 = f.avx2_f16c && avx512f && avx512bw && avx512vl && (xcr0_lo & 0xe0) == 0xe0;  // opmask, ZMM state
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

}  // namespace

bool have_f16c() { return features().avx2_f16c; }
bool have_avx512() { return features().avx512; }

// ---- AVX2 + F16C: 8 lanes ------------------------------------------------

__attribute__((target("avx2,f16c"))) void to_f32_f16c(const void* src, float* dst, size_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  const __m256i exp_mask = _mm256_set1_epi32(0x7c00), man_mask = _mm256_set1_epi32(0x3ff);
  const __m256i sign_mask = _mm256_set1_epi32(0x8000), f32_inf = _mm256_set1_epi32(0x7f800000);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2 * i));
    __m256 f = _mm256_cvtph_ps(h);
    // NaN lanes (exponent all ones, mantissa non-zero): the scalar pattern
    // sign | 0x7f800000 | mantissa << 13, payload not quieted.
    const __m256i w = _mm256_cvtepu16_epi32(h);
    const __m256i man = _mm256_and_si256(w, man_mask);
    const __m256i is_nan = _mm256_andnot_si256(_mm256_cmpeq_epi32(man, _mm256_setzero_si256()),
                                               _mm256_cmpeq_epi32(_mm256_and_si256(w, exp_mask), exp_mask));
    const __m256i fixed = _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(w, sign_mask), 16), f32_inf),
                                          _mm256_slli_epi32(man, 13));
    f = _mm256_blendv_ps(f, _mm256_castsi256_ps(fixed), _mm256_castsi256_ps(is_nan));
    _mm256_storeu_ps(dst + i, f);
  }
  to_f32_scalar(s + 2 * i, dst + i, n - i);
}

__attribute__((target("avx2,f16c"))) void from_f32_f16c(const float* src, void* dst, size_t n) {
  uint8_t* d = static_cast<uint8_t*>(dst);
  const __m256i nan16 = _mm256_set1_epi32(0x7e00), sign16 = _mm256_set1_epi32(0x8000);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(src + i);
    __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 unord = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    if (!_mm256_testz_ps(unord, unord)) {
      // NaN lanes: sign | 0x7e00.  Both vectors narrowed to 16 bits (values
      // below 0x10000 pack unchanged; the mask's -1 packs to 0xffff).
      const __m256i fixed = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(_mm256_castps_si256(x), 16), sign16), nan16);
      const __m128i fixed16 = _mm_packus_epi32(_mm256_castsi256_si128(fixed), _mm256_extracti128_si256(fixed, 1));
      const __m256i m = _mm256_castps_si256(unord);
      const __m128i m16 = _mm_packs_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
      h = _mm_blendv_epi8(h, fixed16, m16);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * i), h);
  }
  from_f32_scalar(src + i, d + 2 * i, n - i);
}

// ---- AVX-512: 16 lanes, masked tails --------------------------------------

namespace {

// 16 halves -> 16 floats, NaN lanes patched.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c"))) inline __m512 cvt16_to_f32(__m256i h) {
  const __m512i w = _mm512_cvtepu16_epi32(h);
  __m512 f = _mm512_cvtph_ps(h);
  const __m512i exp_mask = _mm512_set1_epi32(0x7c00), man_mask = _mm512_set1_epi32(0x3ff);
  const __mmask16 is_nan =
      _mm512_cmpeq_epi32_mask(_mm512_and_si512(w, exp_mask), exp_mask) & _mm512_test_epi32_mask(w, man_mask);
  if (is_nan) {
    const __m512i fixed = _mm512_or_si512(
        _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x8000)), 16), _mm512_set1_epi32(0x7f800000)),
        _mm512_slli_epi32(_mm512_and_si512(w, man_mask), 13));
    f = _mm512_mask_mov_ps(f, is_nan, _mm512_castsi512_ps(fixed));
  }
  return f;
}

// 16 floats -> 16 halves, NaN lanes sign | 0x7e00.
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c"))) inline __m256i cvt16_to_f16(__m512 x) {
  __m256i h = _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __mmask16 is_nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  if (is_nan) {
    const __m512i fixed = _mm512_or_si512(
        _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(x), 16), _mm512_set1_epi32(0x8000)), _mm512_set1_epi32(0x7e00));
    h = _mm256_mask_mov_epi16(h, is_nan, _mm512_cvtepi32_epi16(fixed));
  }
  return h;
}

}  // namespace

// Full vectors with plain unaligned loads and stores; the tail with masked
// ones (which never touch the bytes of the masked-off lanes).
__attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c"))) void to_f32_avx512(const void* src, float* dst,
                                                                                  size_t n) {
  const uint8_t* s = static_cast<const uint8_t*>(src);
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(dst + i, cvt16_to_f32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 2 * i))));
  if (i < n) {
    const __mmask16 lanes = __mmask16((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(dst + i, lanes, cvt16_to_f32(_mm256_maskz_loadu_epi16(lanes, s + 2 * i)));
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx2,f16c"))) void from_f32_avx512(const float* src, void* dst,
                                                                                    size_t n) {
  uint8_t* d = static_cast<uint8_t*>(dst);
  size_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 2 * i), cvt16_to_f16(_mm512_loadu_ps(src + i)));
  if (i < n) {
    const __mmask16 lanes = __mmask16((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(d + 2 * i, lanes, cvt16_to_f16(_mm512_maskz_loadu_ps(lanes, src + i)));
  }
}

}  // namespace chatvec::f16_simd

namespace chatvec {

namespace {

struct Impl {
  void (*to_f32)(const void*, float*, size_t);
  void (*from_f32)(const float*, void*, size_t);
  const char* name;
};

Impl choose() {
  using namespace f16_simd;
  const char* env = std::getenv("CHATVEC_F16_SIMD");
  const std::string_view want = env ? env : "";
  const bool allow_avx512 = want.empty() || want == "avx512";
  const bool allow_f16c = allow_avx512 || want == "f16c";
  if (allow_avx512 && have_avx512()) return {to_f32_avx512, from_f32_avx512, "avx512"};
  if (allow_f16c && have_f16c()) return {to_f32_f16c, from_f32_f16c, "f16c"};
  return {to_f32_scalar, from_f32_scalar, "scalar"};
}

const Impl& impl() {
  static const Impl chosen = choose();
  return chosen;
}

}  // namespace

void f16_to_f32_n(const void* src, float* dst, size_t n) { impl().to_f32(src, dst, n); }
void f32_to_f16_n(const float* src, void* dst, size_t n) { impl().from_f32(src, dst, n); }
const char* f16_simd_path() { return impl().name; }

}  // namespace chatvec
