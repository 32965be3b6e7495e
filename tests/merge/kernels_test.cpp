// The merge kernels' f16 paths (the fused one-term path and the general
// block path, both on the vectorised conversions of core/dtype_simd.h)
// against the element-by-element definition written here with the scalar
// functions of core/dtype.h, on every class of f16 value: zeros,
// subnormals, normals, the largest values (whose sums overflow to
// infinity), infinities and NaNs with payloads.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "merge/kernels.h"

namespace chatvec {
namespace {

std::vector<uint16_t> f16_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t k = uint32_t(rng());
    switch (k % 8) {
      case 0: v[i] = uint16_t(rng());  break;                          // any pattern, NaNs included
      case 1: v[i] = uint16_t((k >> 8) & 0x83ff); break;               // zero and subnormals
      case 2: v[i] = uint16_t(0x7b00 | ((k >> 8) & 0x80ff)); break;    // near the largest
      case 3: v[i] = (k >> 8) & 1 ? 0x7c00 : 0xfc00; break;            // infinities
      default: v[i] = f32_to_f16(std::normal_distribution<float>(0, 0.02f)(rng));  // weights
    }
  }
  return v;
}

uint16_t reference(const uint16_t* s, uint16_t p, uint16_t m, float r) {
  float d = f16_to_f32(p) - f16_to_f32(m);
  if (r != 1.0f) d = r * d;
  if (s) d = f16_to_f32(*s) + d;
  return f32_to_f16(d);
}

TEST(Kernels, F16OneTermEqualsTheDefinition) {
  const size_t n = 5000;
  const auto s = f16_values(n, 1), p = f16_values(n, 2), m = f16_values(n, 3);
  for (double ratio : {1.0, 0.5, -0.25, 3.0}) {
    for (bool with_source : {true, false}) {
      for (size_t begin : {size_t(0), size_t(7)}) {
        SCOPED_TRACE(testing::Message() << "ratio " << ratio << " source " << with_source << " begin " << begin);
        std::vector<uint16_t> out(n, 0x1234);
        CombineArgs a;
        if (with_source) a.source = KernelOperand{s.data(), DType::F16};
        a.terms.push_back(KernelTerm{ratio, KernelOperand{p.data(), DType::F16}, KernelOperand{m.data(), DType::F16}});
        a.out = out.data();
        a.out_dtype = DType::F16;
        combine_range(a, begin, n - 3);
        for (size_t i = 0; i < n; ++i) {
          const uint16_t want = i < begin || i >= n - 3 ? 0x1234 : reference(with_source ? &s[i] : nullptr, p[i], m[i], float(ratio));
          ASSERT_EQ(out[i], want) << i << ": s " << s[i] << " p " << p[i] << " m " << m[i];
        }
      }
    }
  }
}

// The general path: two terms, f16 and f32 operands, f16 and f32 outputs.
TEST(Kernels, F16GeneralPathEqualsTheDefinition) {
  const size_t n = 3000;
  const auto s = f16_values(n, 4), p = f16_values(n, 5), m = f16_values(n, 6), q = f16_values(n, 7);
  std::vector<float> p32(n);
  for (size_t i = 0; i < n; ++i) p32[i] = f16_to_f32(p[i]) * 1.5f;
  std::vector<uint16_t> out16(n);
  std::vector<float> out32(n);
  CombineArgs a;
  a.source = KernelOperand{s.data(), DType::F16};
  a.terms.push_back(KernelTerm{0.5, KernelOperand{p32.data(), DType::F32}, KernelOperand{m.data(), DType::F16}});
  a.terms.push_back(KernelTerm{-2.0, KernelOperand{q.data(), DType::F16}, KernelOperand{}});
  for (DType out : {DType::F16, DType::F32}) {
    a.out = out == DType::F16 ? static_cast<void*>(out16.data()) : static_cast<void*>(out32.data());
    a.out_dtype = out;
    combine_range(a, 0, n);
    for (size_t i = 0; i < n; ++i) {
      float d = 0.5f * (p32[i] - f16_to_f32(m[i]));
      float acc = f16_to_f32(s[i]) + d;
      acc = acc + (-2.0f * f16_to_f32(q[i]));
      if (out == DType::F16) ASSERT_EQ(out16[i], f32_to_f16(acc)) << i;
      else ASSERT_EQ(bits_from_f32(out32[i]), bits_from_f32(acc)) << i;
    }
  }
  // A plain conversion keeps every bit: f16 -> f32 is exact, NaN payloads
  // (signalling ones too) included.
  std::vector<uint16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = uint16_t(h);
  std::vector<float> wide(65536);
  convert_range(all.data(), DType::F16, wide.data(), DType::F32, 0, 65536);
  for (uint32_t h = 0; h < 65536; ++h) ASSERT_EQ(bits_from_f32(wide[h]), bits_from_f32(f16_to_f32(uint16_t(h)))) << h;
  std::vector<uint16_t> back(65536);
  convert_range(wide.data(), DType::F32, back.data(), DType::F16, 0, 65536);
  for (uint32_t h = 0; h < 65536; ++h) ASSERT_EQ(back[h], f32_to_f16(wide[h])) << h;
}

}  // namespace
}  // namespace chatvec
