// ExactSum (src/merge/exact_sum.h) against an independent reference: the
// correctly rounded sum of the fp64 values computed with error-free
// transformations (Shewchuk's partials, then the round-half-even correction
// of the last partials, the algorithm of Python's math.fsum), on edge cases
// (exponents over the whole fp32 range, subnormals, zeros, inf, NaN, ties,
// many copies of one value) and random values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "fsum_reference.h"
#include "merge/exact_sum.h"

namespace chatvec {
namespace {

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Both sums of `v` (each once) against the reference, bit for bit.
void expect_sums(const std::vector<float>& v, const std::string& what) {
  ExactSum x1, x2;
  std::vector<double> r1, r2;
  for (float f : v) {
    x1.add_abs_bits(bits_of(f));
    x2.add_sq_bits(bits_of(f));
    r1.push_back(std::fabs(double(f)));
    r2.push_back(double(f) * double(f));
  }
  const double a1 = x1.abs_value(), e1 = fsum_reference(r1);
  const double a2 = x2.sq_value(), e2 = fsum_reference(r2);
  EXPECT_EQ(std::memcmp(&a1, &e1, 8), 0) << what << ": L1 " << a1 << " vs " << e1;
  EXPECT_EQ(std::memcmp(&a2, &e2, 8), 0) << what << ": L2 " << a2 << " vs " << e2;
}

TEST(ExactSum, EdgeCasesEqualTheCorrectlyRoundedSum) {
  const float max = std::numeric_limits<float>::max();
  const float tiny = std::numeric_limits<float>::denorm_min();
  const float minnorm = std::numeric_limits<float>::min();
  expect_sums({}, "empty");
  expect_sums({0.0f, -0.0f}, "zeros");
  expect_sums({-1.5f, 0.0f, -0.0f, 2.25f}, "signs and zeros");
  expect_sums({max, tiny, 1.0f, max, tiny, -max}, "the whole exponent range");
  expect_sums({tiny, tiny, 3 * tiny, float_of(0x007fffffu), minnorm}, "subnormals");
  // Ties at the 53rd bit: 2^53 + 1 (to even: 2^53), 2^53 + 3 (to 2^53 + 4),
  // and a tie broken by a far smaller value.
  expect_sums({0x1p53f, 1.0f}, "tie down");
  expect_sums({0x1p53f, 3.0f}, "tie up");
  expect_sums({0x1p53f, 1.0f, 0x1p-100f}, "sticky");
  expect_sums({0x1p53f, 1.0f, tiny}, "sticky subnormal");
  expect_sums({0x1p100f, 1.0f, -1.0f, 0x1p-20f}, "cancelling nothing: magnitudes");
  // The sum needs more than 64 bits, and carries through whole words.
  std::vector<float> carry(70, float_of(0x7f7fffffu));
  carry.push_back(tiny);
  expect_sums(carry, "carries");
  // Random values over the whole range.
  uint64_t s = 7;
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<float> v;
    const int n = 1 + trial * 7;
    for (int i = 0; i < n; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const uint32_t spread = trial % 2 ? 0x7f7fffffu : 0x3fffffu + (uint32_t(trial) << 20);
      v.push_back(float_of(uint32_t(s >> 32) % spread | (uint32_t(s >> 20) & 0x80000000u)));
    }
    expect_sums(v, "random " + std::to_string(trial));
  }
}

TEST(ExactSum, CountsAndSplitsAreTheSameSum) {
  // Many copies of one value (the window's bins): count * value, and the same
  // as adding them one by one or in any split.
  const uint32_t b = bits_of(0.3f);
  ExactSum once, many, left, right;
  once.add_abs_bits(b, 1000);
  for (int i = 0; i < 1000; ++i) (i % 3 ? left : right).add_abs_bits(b);
  left.add(right);
  EXPECT_EQ(once.abs_value(), left.abs_value());
  EXPECT_EQ(once.abs_value(), fsum_reference(std::vector<double>(1000, double(0.3f))));
  // 2^40 copies: exact (no double arithmetic could say so by adding).
  many.add_sq_bits(bits_of(1.5f), uint64_t(1) << 40);
  EXPECT_EQ(many.sq_value(), 2.25 * 0x1p40);
  many.add_sq_bits(bits_of(0x1p-120f), 3);  // below the last bit of the result: rounds away
  EXPECT_EQ(many.sq_value(), 2.25 * 0x1p40);
  // The largest: 2^40 copies of the largest float squared.
  ExactSum top;
  top.add_sq_bits(0x7f7fffffu, uint64_t(1) << 40);
  EXPECT_EQ(top.sq_value(), double(std::numeric_limits<float>::max()) * double(std::numeric_limits<float>::max()) *
                                0x1p40);
  // Shifted additions: the same as the values they stand for.
  ExactSum sh;
  sh.add_shifted((unsigned __int128)3 << 70, 149 - 70);  // 3 * 2^70 * 2^(79 - 149) = 3
  EXPECT_EQ(sh.abs_value(), 3.0);
}

TEST(ExactSum, InfinityAndNanAsIeeeWouldGive) {
  const uint32_t inf = 0x7f800000u, nan = 0x7fc00000u;
  ExactSum a, b, c, d;
  a.add_abs_bits(bits_of(1.0f));
  a.add_abs_bits(inf | 0x80000000u);  // -inf: |.| = inf
  EXPECT_EQ(a.abs_value(), std::numeric_limits<double>::infinity());
  b.add_sq_bits(inf);
  b.add_sq_bits(nan);
  EXPECT_TRUE(std::isnan(b.sq_value()));
  c.add_abs_bits(0x7f800001u);  // a signalling NaN's bits
  EXPECT_TRUE(std::isnan(c.abs_value()));
  d.add_abs_bits(inf, 0);  // no copies: nothing
  EXPECT_EQ(d.abs_value(), 0.0);
  d.add(a);
  EXPECT_EQ(d.abs_value(), std::numeric_limits<double>::infinity());
}

}  // namespace
}  // namespace chatvec
