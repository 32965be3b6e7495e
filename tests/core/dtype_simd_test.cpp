// The vectorised f16 <-> f32 conversions against the scalar reference
// functions of core/dtype.h, bit for bit: every half pattern, every f32
// rounding boundary into f16, every NaN payload, random floats; each
// implementation the CPU has, unaligned pointers and every tail length.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/dtype_simd.h"
#include "test_support.h"

namespace chatvec {
namespace {

using ToF32 = void (*)(const void*, float*, size_t);
using FromF32 = void (*)(const float*, void*, size_t);

struct Impl {
  const char* name;
  bool available;
  ToF32 to_f32;
  FromF32 from_f32;
};

std::vector<Impl> impls() {
  using namespace f16_simd;
  return {{"scalar", true, to_f32_scalar, from_f32_scalar},
          {"f16c", have_f16c(), to_f32_f16c, from_f32_f16c},
          {"avx512", have_avx512(), to_f32_avx512, from_f32_avx512},
          {"dispatched", true, f16_to_f32_n, f32_to_f16_n},
          // The dtype layer every caller uses.
          {"convert_to_f32", true, [](const void* s, float* d, size_t n) { convert_to_f32(DType::F16, s, n, d); },
           [](const float* s, void* d, size_t n) { convert_from_f32(s, n, DType::F16, d); }}};
}

// Converts `in` from a source at byte offset 1 (unaligned) and checks every
// result against the scalar function; from_f32 writes at byte offset 3 and
// must not touch the bytes before it.
void check_to_f32(const Impl& impl, const std::vector<uint16_t>& in) {
  std::vector<uint8_t> src(in.size() * 2 + 1);
  std::memcpy(src.data() + 1, in.data(), in.size() * 2);
  std::vector<float> out(in.size());
  impl.to_f32(src.data() + 1, out.data(), in.size());
  for (size_t i = 0; i < in.size(); ++i)
    ASSERT_EQ(bits_from_f32(out[i]), bits_from_f32(f16_to_f32(in[i])))
        << impl.name << ": half 0x" << std::hex << in[i];
}

void check_from_f32(const Impl& impl, const std::vector<float>& in) {
  std::vector<uint8_t> dst(in.size() * 2 + 3, 0xAB);
  impl.from_f32(in.data(), dst.data() + 3, in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    uint16_t got;
    std::memcpy(&got, dst.data() + 3 + 2 * i, 2);
    ASSERT_EQ(got, f32_to_f16(in[i])) << impl.name << ": float bits 0x" << std::hex << bits_from_f32(in[i]);
  }
  EXPECT_EQ(dst[0], 0xAB);
  EXPECT_EQ(dst[2], 0xAB);
}

std::vector<uint16_t> all_halves() {
  std::vector<uint16_t> v(65536);
  for (uint32_t h = 0; h < 65536; ++h) v[h] = uint16_t(h);
  return v;
}

TEST(DTypeSimd, ReportsItsPath) {
  const std::string p = f16_simd_path();
  EXPECT_TRUE(p == "avx512" || p == "f16c" || p == "scalar") << p;
  std::cout << "f16 conversion path on this CPU: " << p << " (f16c " << f16_simd::have_f16c() << ", avx512 "
            << f16_simd::have_avx512() << ")\n";
}

TEST(DTypeSimd, EveryHalfToFloat) {
  const auto halves = all_halves();
  for (const Impl& impl : impls()) {
    if (!impl.available) continue;
    SCOPED_TRACE(impl.name);
    check_to_f32(impl, halves);
  }
}

// The f32 inputs where rounding into f16 is decided: each half value, its
// float neighbours, the midpoint to the next half (a tie) and the floats
// either side of it; the overflow threshold 65520; f32 subnormals.
std::vector<float> rounding_boundaries() {
  std::vector<float> xs;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float a = f16_to_f32(uint16_t(h));
    const float b = h + 1 < 0x7c00 ? f16_to_f32(uint16_t(h + 1)) : 65536.0f;  // 65536: where 65520 is the tie
    const float mid = float((double(a) + double(b)) / 2);  // exact: floats have 13 more bits
    for (float x : {a, std::nextafter(a, 0.0f), std::nextafter(a, INFINITY), mid, std::nextafter(mid, 0.0f),
                    std::nextafter(mid, INFINITY)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (uint32_t u : {0x477ff000u, 0x477fefffu, 0x477ff001u, 0x47800000u, 0x7f7fffffu, 0x7f800000u, 0x00000001u,
                     0x007fffffu, 0x00800000u, 0x33000000u, 0x33000001u, 0x32ffffffu, 0x33800000u, 0x387fe000u,
                     0x387ff000u, 0x38800000u})
    for (uint32_t s : {0u, 0x80000000u}) xs.push_back(f32_from_bits(u | s));
  return xs;
}

TEST(DTypeSimd, FloatToHalfOnEveryRoundingBoundary) {
  const auto xs = rounding_boundaries();
  ASSERT_GT(xs.size(), 300000u);
  for (const Impl& impl : impls()) {
    if (!impl.available) continue;
    SCOPED_TRACE(impl.name);
    check_from_f32(impl, xs);
  }
}

TEST(DTypeSimd, FloatToHalfEveryNaNPayloadAndInfinity) {
  std::vector<float> xs;
  xs.reserve(2 * (1u << 23) + 2);
  for (uint32_t s : {0u, 0x80000000u}) {
    xs.push_back(f32_from_bits(s | 0x7f800000u));
    for (uint32_t m = 1; m < (1u << 23); ++m) xs.push_back(f32_from_bits(s | 0x7f800000u | m));
  }
  for (const Impl& impl : impls()) {
    if (!impl.available) continue;
    SCOPED_TRACE(impl.name);
    check_from_f32(impl, xs);
  }
}

TEST(DTypeSimd, FloatToHalfRandom) {
  std::mt19937 rng(20261202);
  std::vector<float> xs(8'000'000);
  // Half of them any bit pattern, half in the range where halves live.
  std::uniform_int_distribution<uint32_t> exp_in_range(0x30u, 0x48u);
  for (size_t i = 0; i < xs.size(); ++i) {
    uint32_t u = uint32_t(rng());
    if (i & 1) u = (u & 0x807fffffu) | (exp_in_range(rng) << 23);
    xs[i] = f32_from_bits(u);
  }
  for (const Impl& impl : impls()) {
    if (!impl.available) continue;
    SCOPED_TRACE(impl.name);
    check_from_f32(impl, xs);
  }
}

// Every length from 0 to 70 (the 8- and 16-lane bodies, their tails, masked
// loads that must not read past the end) at every byte misalignment.
TEST(DTypeSimd, TailsAndAlignment) {
  std::mt19937 rng(3);
  for (const Impl& impl : impls()) {
    if (!impl.available) continue;
    SCOPED_TRACE(impl.name);
    for (size_t n = 0; n <= 70; ++n) {
      for (size_t off = 0; off < 4; ++off) {
        // Exactly sized heap buffers, so that ASan sees any read or write
        // past the end.
        std::vector<uint8_t> src(2 * n + off);
        for (auto& b : src) b = uint8_t(rng());
        std::vector<float> f(n);
        impl.to_f32(src.data() + off, f.data(), n);
        for (size_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, src.data() + off + 2 * i, 2);
          ASSERT_EQ(bits_from_f32(f[i]), bits_from_f32(f16_to_f32(h))) << n << " " << off << " " << i;
        }
        std::vector<float> x(n);
        for (auto& v : x) v = f32_from_bits(uint32_t(rng()));
        std::vector<uint8_t> dst(2 * n + off);
        impl.from_f32(x.data(), dst.data() + off, n);
        for (size_t i = 0; i < n; ++i) {
          uint16_t h;
          std::memcpy(&h, dst.data() + off + 2 * i, 2);
          ASSERT_EQ(h, f32_to_f16(x[i])) << n << " " << off << " " << i;
        }
      }
    }
  }
}

// All 2^32 float patterns (about 20 s in Release on one core: set
// CHATVEC_SLOW_TESTS=1 to run it).
TEST(DTypeSimd, FloatToHalfAllPatternsSlow) {
  const char* slow = std::getenv("CHATVEC_SLOW_TESTS");
  if (!slow || std::string(slow) != "1") GTEST_SKIP() << "set CHATVEC_SLOW_TESTS=1 for the exhaustive f32 sweep";
  constexpr size_t kChunk = 1 << 20;
  std::vector<float> xs(kChunk);
  std::vector<uint16_t> got(kChunk);
  for (const Impl& impl : impls()) {
    if (!impl.available || std::string(impl.name) == "scalar") continue;
    SCOPED_TRACE(impl.name);
    for (uint64_t base = 0; base < (1ull << 32); base += kChunk) {
      for (size_t i = 0; i < kChunk; ++i) xs[i] = f32_from_bits(uint32_t(base + i));
      impl.from_f32(xs.data(), got.data(), kChunk);
      for (size_t i = 0; i < kChunk; ++i)
        if (got[i] != f32_to_f16(xs[i])) FAIL() << "float bits 0x" << std::hex << (base + i);
    }
  }
}

}  // namespace
}  // namespace chatvec
