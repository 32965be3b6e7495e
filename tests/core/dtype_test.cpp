// Conversions between the float types, exhaustively over all 16-bit patterns
// and against PyTorch on rounding edge cases.
#include "core/dtype.h"

#include <cmath>
#include <fstream>
#include <random>
#include <vector>

#include "test_support.h"

namespace chatvec {
namespace {

// Independent reference for IEEE half -> double, from the definition.
double half_value(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int man = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(double(man), -24);
  if (exp == 31) return man ? NAN : sign * INFINITY;
  return sign * std::ldexp(1.0 + man / 1024.0, exp - 15);
}

TEST(DType, HalfToFloatAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    const double want = half_value(uint16_t(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(f)) << h;
      // The payload and sign are preserved.
      EXPECT_EQ(bits_from_f32(f) >> 13, ((uint32_t(h) & 0x8000u) << 3) | 0x3fc00u | (h & 0x3ffu)) << h;
    } else {
      ASSERT_EQ(double(f), want) << "pattern " << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
    }
  }
}

TEST(DType, HalfRoundTripAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) {
      const uint16_t back = f32_to_f16(f);
      EXPECT_EQ(back & 0x7fffu, 0x7e00u) << h;
      EXPECT_EQ(back & 0x8000u, h & 0x8000u) << h;
    } else {
      ASSERT_EQ(f32_to_f16(f), h) << h;
    }
  }
}

TEST(DType, BFloatAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(uint16_t(h));
    ASSERT_EQ(bits_from_f32(f), h << 16);
    if (std::isnan(f)) EXPECT_EQ(f32_to_bf16(f), 0xffffu);
    else ASSERT_EQ(f32_to_bf16(f), h) << h;
  }
}

// Rounding to nearest, ties to even, checked from first principles: the
// result is the representable neighbour closest to x (ties: even mantissa).
TEST(DType, HalfRoundingFromDefinition) {
  std::mt19937 rng(42);
  std::vector<float> xs;
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite positive half and the midpoints around it
    const float a = f16_to_f32(uint16_t(h)), b = f16_to_f32(uint16_t(h + 1));
    const float mid = float((double(a) + double(b)) / 2);
    xs.insert(xs.end(), {a, mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e9f)});
  }
  for (int i = 0; i < 200000; ++i) xs.push_back(f32_from_bits(rng() & 0x7fffffffu));
  for (float x : xs) {
    if (std::isnan(x)) continue;
    const uint16_t got = f32_to_f16(x);
    if (x >= 65520.f) {
      ASSERT_EQ(got, 0x7c00) << x;
      continue;
    }
    // Neighbours below/above x in half precision.
    uint16_t lo = 0;
    for (uint16_t step = 0x4000; step; step >>= 1)
      if (lo + step < 0x7c00 && double(f16_to_f32(uint16_t(lo + step))) <= double(x)) lo = uint16_t(lo + step);
    const double dl = double(x) - f16_to_f32(lo);
    const double dh = lo + 1 <= 0x7c00 ? double(f16_to_f32(uint16_t(lo + 1))) - double(x) : INFINITY;
    uint16_t want = dl < dh ? lo : (dh < dl ? uint16_t(lo + 1) : ((lo & 1) ? uint16_t(lo + 1) : lo));
    ASSERT_EQ(got, want) << "x=" << x << " bits=" << bits_from_f32(x);
    ASSERT_EQ(f32_to_f16(-x), uint16_t(want | 0x8000)) << x;
  }
}

// PyTorch itself on the same inputs (tensor.to(float16/bfloat16) on CPU).
TEST(DType, MatchesPyTorch) {
  const char* py = "/usr/bin/python3";
  if (!std::filesystem::exists(py)) GTEST_SKIP() << "no /usr/bin/python3";
  testing::TempDir tmp;
  std::vector<float> xs;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = f16_to_f32(uint16_t(h));
    xs.push_back(a);
    xs.push_back(std::nextafter(a, INFINITY));
    xs.push_back(std::nextafter(a, -INFINITY));
    const float b = bf16_to_f32(uint16_t(h));
    xs.push_back(b);
    xs.push_back(f32_from_bits(bits_from_f32(b) | 0x8000u));  // exact bf16 tie
    xs.push_back(f32_from_bits(bits_from_f32(b) | 0x8001u));
    xs.push_back(f32_from_bits(bits_from_f32(b) | 0x7fffu));
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 500000; ++i) xs.push_back(f32_from_bits(uint32_t(rng())));
  for (uint32_t special : {0x7f800000u, 0xff800000u, 0x7f800001u, 0xffc00000u, 0x7fffffffu, 0x00000001u, 0x80000001u,
                           0x477ff000u, 0x477fefffu, 0x33000000u, 0x33000001u, 0x7f7fffffu})
    xs.push_back(f32_from_bits(special));
  {
    std::ofstream f(tmp / "in.f32", std::ios::binary);
    f.write(reinterpret_cast<const char*>(xs.data()), std::streamsize(xs.size() * 4));
  }
  const std::string script =
      "import sys, numpy as np, torch\n"
      "x = torch.from_numpy(np.fromfile(sys.argv[1], dtype=np.float32))\n"
      "x.to(torch.float16).numpy().tofile(sys.argv[2])\n"
      "x.to(torch.bfloat16).view(torch.int16).numpy().tofile(sys.argv[3])\n";
  {
    std::ofstream f(tmp / "ref.py");
    f << script;
  }
  auto r = testing::run_command(std::string(py) + " " + (tmp / "ref.py").string() + " " + (tmp / "in.f32").string() +
                                " " + (tmp / "f16").string() + " " + (tmp / "bf16").string());
  if (r.exit_code != 0 && r.err.find("No module named") != std::string::npos && !testing::in_ci())
    GTEST_SKIP() << "torch not installed: " << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto load = [](const std::filesystem::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::vector<uint16_t> v(std::filesystem::file_size(p) / 2);
    f.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * 2));
    return v;
  };
  auto f16 = load(tmp / "f16"), bf16 = load(tmp / "bf16");
  ASSERT_EQ(f16.size(), xs.size());
  ASSERT_EQ(bf16.size(), xs.size());
  size_t bad16 = 0, badbf = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (f32_to_f16(xs[i]) != f16[i] && bad16++ < 5)
      ADD_FAILURE() << "f16 of bits " << std::hex << bits_from_f32(xs[i]) << ": ours " << f32_to_f16(xs[i])
                    << " torch " << f16[i];
    if (f32_to_bf16(xs[i]) != bf16[i] && badbf++ < 5)
      ADD_FAILURE() << "bf16 of bits " << std::hex << bits_from_f32(xs[i]) << ": ours " << f32_to_bf16(xs[i])
                    << " torch " << bf16[i];
  }
  EXPECT_EQ(bad16, 0u);
  EXPECT_EQ(badbf, 0u);
}

TEST(DType, Names) {
  for (auto n : {"BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16", "BF16", "F32", "F64", "F8_E4M3",
                 "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"}) {
    auto t = dtype_from_name(n);
    ASSERT_TRUE(t.has_value()) << n;
    EXPECT_EQ(dtype_name(*t), n);
  }
  EXPECT_FALSE(dtype_from_name("F128").has_value());
  EXPECT_FALSE(dtype_from_name("bf16").has_value());  // header names are upper case
  EXPECT_EQ(dtype_bits(DType::BF16), 16u);
  EXPECT_EQ(dtype_bits(DType::F4), 4u);
  EXPECT_EQ(dtype_bits(DType::I64), 64u);
}

}  // namespace
}  // namespace chatvec
