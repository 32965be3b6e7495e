// FP8 (e4m3fn) block-scaled dequantisation against an independent numpy
// reference (tests/formats/fp8_reference.py), element by element, including
// NaN patterns, subnormals and partial edge blocks.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/json_util.h"
#include "formats/fp8_block.h"
#include "test_support.h"

namespace chatvec {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

TEST(Fp8, KnownValues) {
  EXPECT_EQ(f8_e4m3fn_to_f32(0x00), 0.0f);
  EXPECT_EQ(bits_from_f32(f8_e4m3fn_to_f32(0x80)), 0x80000000u);  // -0
  EXPECT_EQ(f8_e4m3fn_to_f32(0x38), 1.0f);                        // exponent 7 = bias
  EXPECT_EQ(f8_e4m3fn_to_f32(0x7e), 448.0f);                      // the largest finite
  EXPECT_EQ(f8_e4m3fn_to_f32(0xfe), -448.0f);
  EXPECT_EQ(f8_e4m3fn_to_f32(0x01), std::ldexp(1.0f, -9));        // smallest subnormal
  EXPECT_EQ(f8_e4m3fn_to_f32(0x07), 7 * std::ldexp(1.0f, -9));    // largest subnormal
  EXPECT_EQ(f8_e4m3fn_to_f32(0x08), std::ldexp(1.0f, -6));        // smallest normal
  EXPECT_EQ(f8_e4m3fn_to_f32(0x78), 256.0f);                      // exponent 15 is finite ("fn")
  EXPECT_TRUE(std::isnan(f8_e4m3fn_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(f8_e4m3fn_to_f32(0xff)));
  EXPECT_TRUE(std::signbit(f8_e4m3fn_to_f32(0xff)));
  int nans = 0;
  for (int b = 0; b < 256; ++b) nans += std::isnan(f8_e4m3fn_to_f32(uint8_t(b)));
  EXPECT_EQ(nans, 2);
}

// The vectorised element path (dequant_fp8_block_elements) against the
// decode table times the scale, for every pattern and scales that make the
// products round, overflow and go subnormal; ranges starting and ending
// inside rows and blocks.
TEST(Fp8, ElementRangesEqualTheTableTimesTheScale) {
  const uint64_t rows = 7, cols = 300;  // 3 column blocks of 128: the last one partial
  std::vector<uint8_t> w(rows * cols);
  for (size_t i = 0; i < w.size(); ++i) w[i] = uint8_t(i * 37 + i / 256);
  for (int b = 0; b < 256; ++b) w[size_t(b)] = uint8_t(b);
  std::vector<float> scales = {1.0f, -0.3333333f, 1.7e38f, 1e-40f, 3.1e-8f, 0.0f};
  Fp8BlockScaled t;
  t.weight = w.data();
  t.rows = rows;
  t.cols = cols;
  t.block_rows = 4;
  t.block_cols = 128;
  t.scale = scales.data();  // 2 x 3 blocks
  t.scale_dtype = DType::F32;
  auto bits = [](float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  };
  for (auto [first, count] : {std::pair<uint64_t, uint64_t>{0, rows * cols}, {5, 700}, {127, 2}, {1999, 101}}) {
    std::vector<float> out(count);
    dequant_fp8_block_elements(t, first, count, out.data());
    for (uint64_t k = 0; k < count; ++k) {
      const uint64_t i = first + k, r = i / cols, c = i % cols;
      const float want = f8_e4m3fn_to_f32(w[i]) * scales[(r / 4) * 3 + c / 128];
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(out[k])) << i;
      } else {
        EXPECT_EQ(bits(out[k]), bits(want)) << "element " << i << " byte " << int(w[i]);
      }
    }
  }
  // And the row path agrees with the element path.
  std::vector<float> a(rows * cols), b(rows * cols);
  dequant_fp8_block_rows(t, 0, rows, a.data());
  dequant_fp8_block_elements(t, 0, rows * cols, b.data());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
}

TEST(Fp8, ShapeChecks) {
  check_fp8_block_scaled(DType::F8_E4M3, {300, 200}, DType::F32, {3, 2}, 128, 128, "w", "w_s");
  check_fp8_block_scaled(DType::F8_E4M3, {7168, 18432}, DType::BF16, {56, 144}, 128, 128, "w", "w_s");
  auto err = [](auto f) {
    try {
      f();
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(err([] { check_fp8_block_scaled(DType::F8_E4M3, {300, 200}, DType::F32, {2, 2}, 128, 128, "a.weight", "a.weight_scale_inv"); }),
            "a.weight_scale_inv: shape [2, 2] does not fit a.weight [300, 200] in 128x128 blocks (expected [3, 2])");
  EXPECT_NE(err([] { check_fp8_block_scaled(DType::BF16, {4, 4}, DType::F32, {1, 1}, 128, 128, "a", "s"); }).find("must be F8_E4M3"), std::string::npos);
  EXPECT_NE(err([] { check_fp8_block_scaled(DType::F8_E4M3, {4}, DType::F32, {1}, 128, 128, "a", "s"); }).find("must be 2-D"), std::string::npos);
  EXPECT_NE(err([] { check_fp8_block_scaled(DType::F8_E4M3, {4, 4}, DType::I32, {1, 1}, 128, 128, "a", "s"); }).find("F32, BF16 or F16"), std::string::npos);
  EXPECT_NE(err([] { check_fp8_block_scaled(DType::F8_E4M3, {4, 4}, DType::F32, {1, 1}, 0, 128, "a", "s"); }).find("positive"), std::string::npos);
}

TEST(Fp8, DequantEqualsNumpyReference) {
  CHATVEC_REQUIRE_PATH("/usr/bin/python3");
  testing::TempDir tmp;
  auto r = testing::run_command("/usr/bin/python3 " +
                                testing::shell_quote((testing::source_dir() / "tests/formats/fp8_reference.py").string()) +
                                " " + testing::shell_quote(tmp.path().string()));
  if (r.exit_code != 0 && r.err.find("No module named") != std::string::npos && !testing::in_ci())
    GTEST_SKIP() << "numpy missing: " << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json cases = read_json_file((tmp / "cases.json").string());
  ASSERT_EQ(cases.size(), 6u);
  for (const Json& c : cases) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    Fp8BlockScaled t;
    t.rows = c["rows"];
    t.cols = c["cols"];
    t.block_rows = c["block_rows"];
    t.block_cols = c["block_cols"];
    t.scale_dtype = c["scale_dtype"] == "BF16" ? DType::BF16 : DType::F32;
    check_fp8_block_scaled(DType::F8_E4M3, {t.rows, t.cols}, t.scale_dtype, c["scale_shape"].get<std::vector<uint64_t>>(),
                           t.block_rows, t.block_cols, name, name + "_scale_inv");
    // Unaligned copies of the inputs, as tensors inside a mapped file are.
    const auto w = slurp(tmp / (name + ".w")), s = slurp(tmp / (name + ".s")), ref = slurp(tmp / (name + ".out"));
    ASSERT_EQ(w.size(), t.rows * t.cols);
    ASSERT_EQ(ref.size(), 4 * t.rows * t.cols);
    std::vector<uint8_t> wbuf(w.size() + 1), sbuf(s.size() + 3);
    std::memcpy(wbuf.data() + 1, w.data(), w.size());
    std::memcpy(sbuf.data() + 3, s.data(), s.size());
    t.weight = wbuf.data() + 1;
    t.scale = sbuf.data() + 3;
    // The whole tensor, and row ranges that start and end inside blocks.
    const std::vector<std::pair<uint64_t, uint64_t>> ranges = {
        {0, t.rows}, {0, 1}, {t.rows - 1, t.rows}, {t.rows / 3, t.rows / 3 + t.rows / 2 + 1}};
    size_t nan_count = 0, checked = 0;
    for (auto [b, e] : ranges) {
      std::vector<float> out((e - b) * t.cols);
      dequant_fp8_block_rows(t, b, e, out.data());
      for (uint64_t i = 0; i < out.size(); ++i) {
        float want;
        std::memcpy(&want, ref.data() + 4 * (b * t.cols + i), 4);
        if (std::isnan(want)) {
          ASSERT_TRUE(std::isnan(out[i])) << "row " << b + i / t.cols << " col " << i % t.cols;
          ++nan_count;
        } else {
          ASSERT_EQ(bits_from_f32(out[i]), bits_from_f32(want)) << "row " << b + i / t.cols << " col " << i % t.cols
                                                                << ": " << out[i] << " vs " << want;
        }
        ++checked;
      }
    }
    const bool has_nan_bytes = std::any_of(w.begin(), w.end(), [](uint8_t x) { return (x & 0x7f) == 0x7f; });
    EXPECT_EQ(nan_count > 0, has_nan_bytes);
    EXPECT_GT(checked, t.rows * t.cols);
  }
}

}  // namespace
}  // namespace chatvec
