#include "merge/exact_sum.h"

#include <cmath>
#include <limits>
#include <stdexcept>

namespace chatvec {

void ExactSum::add_shifted(unsigned __int128 v, unsigned shift) {
  if (v == 0) return;
  if (shift >= unsigned(64 * kWords - 128)) throw std::logic_error("ExactSum: shift out of range");
  const unsigned w = shift / 64, b = shift % 64;
  const uint64_t lo = uint64_t(v), hi = uint64_t(v >> 64);
  uint64_t part[3];
  if (b == 0) {
    part[0] = lo;
    part[1] = hi;
    part[2] = 0;
  } else {
    part[0] = lo << b;
    part[1] = (lo >> (64 - b)) | (hi << b);
    part[2] = hi >> (64 - b);
  }
  unsigned carry = 0;
  for (unsigned i = 0; i < 3; ++i) {
    const uint64_t s = w_[w + i] + part[i];
    const unsigned c1 = s < part[i];
    const uint64_t t = s + carry;
    const unsigned c2 = t < s;
    w_[w + i] = t;
    carry = c1 + c2;
  }
  for (unsigned i = w + 3; carry && i < unsigned(kWords); ++i) carry = ++w_[i] == 0;
  if (carry) throw std::logic_error("ExactSum: overflow");
}

void ExactSum::add(const ExactSum& o) {
  unsigned carry = 0;
  for (int i = 0; i < kWords; ++i) {
    const uint64_t s = w_[i] + o.w_[i];
    const unsigned c1 = s < o.w_[i];
    const uint64_t t = s + carry;
    w_[i] = t;
    carry = c1 + (t < s);
  }
  if (carry) throw std::logic_error("ExactSum: overflow");
  inf_ = inf_ || o.inf_;
  nan_ = nan_ || o.nan_;
}

namespace {
// The fp32 magnitude's (m, e) when finite; otherwise marks inf or NaN
// (when count > 0) and returns false.
bool finite_split(uint32_t bits, uint64_t count, bool* inf, bool* nan, uint32_t* m, uint32_t* e) {
  const uint32_t a = bits & 0x7fffffffu;
  if (a >= 0x7f800000u) {
    if (count) *(a > 0x7f800000u ? nan : inf) = true;
    return false;
  }
  fp32_split(a, m, e);
  return true;
}
}  // namespace

void ExactSum::add_abs_bits(uint32_t bits, uint64_t count) {
  uint32_t m, e;
  if (finite_split(bits, count, &inf_, &nan_, &m, &e)) add_shifted((unsigned __int128)m * count, e - 1);
}

void ExactSum::add_sq_bits(uint32_t bits, uint64_t count) {
  uint32_t m, e;
  if (finite_split(bits, count, &inf_, &nan_, &m, &e))
    add_shifted((unsigned __int128)(uint64_t(m) * m) * count, 2 * (e - 1));
}

bool ExactSum::empty() const {
  for (uint64_t x : w_)
    if (x) return false;
  return !inf_ && !nan_;
}

double ExactSum::value(int lsb_exp) const {
  if (nan_) return std::numeric_limits<double>::quiet_NaN();
  if (inf_) return std::numeric_limits<double>::infinity();
  int top = kWords - 1;
  while (top >= 0 && w_[top] == 0) --top;
  if (top < 0) return 0.0;
  const int p = 64 * top + (63 - __builtin_clzll(w_[top]));  // the highest set bit
  auto bit_range = [&](int from, int len) {  // bits [from, from + len), len <= 64, from >= 0
    uint64_t r = 0;
    for (int i = 0; i < len; ++i) {
      const int k = from + i;
      r |= ((w_[k / 64] >> (k % 64)) & 1u) << i;
    }
    return r;
  };
  if (p < 53) return std::ldexp(double(w_[0]), lsb_exp);  // exact
  // The 53 bits from p down, the next (round) bit, and whether any below is set.
  const int low = p - 52;
  uint64_t mant = bit_range(low, 53);
  const bool round = (w_[(low - 1) / 64] >> ((low - 1) % 64)) & 1u;
  bool sticky = false;
  for (int k = 0; k < (low - 1) / 64 && !sticky; ++k) sticky = w_[k] != 0;
  if (!sticky && (low - 1) % 64) sticky = (w_[(low - 1) / 64] & ((uint64_t(1) << ((low - 1) % 64)) - 1)) != 0;
  if (round && (sticky || (mant & 1u))) ++mant;  // (2^53 is exact too)
  return std::ldexp(double(mant), low + lsb_exp);
}

}  // namespace chatvec
