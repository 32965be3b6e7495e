// Exact sums of fp32 magnitudes and squares, rounded once to fp64.
//
// Every fp32 value is m * 2^(e - 150) with a 24-bit integer m and a biased
// exponent e (a subnormal: e = 0, and m without the implicit bit, taken at
// e = 1).  So |v| is an integer multiple of 2^-149 below 2^128, and v^2 (exact
// in fp64: 48 significant bits) one of 2^-298 below 2^256: both sums are
// integers of a few hundred bits, held here exactly, whatever the order or
// grouping of the additions.  value() rounds that integer once to the
// nearest fp64, ties to even (what Python's math.fsum gives for the same
// values).  Inf among the values makes the sum +inf, a NaN makes it NaN (as
// IEEE addition of non-negative values, and math.fsum, would).
//
// ExactSum is order-free, so the statistics passes can accumulate it in any
// split (threads, chunks, the window's histogram afterwards) and give the same
// bits.  docs/operations.md ("Operations on the vector") states where it is
// used.
#pragma once

#include <cstdint>

namespace chatvec {

class ExactSum {
 public:
  // 640 bits: the squares' sum needs 554 bits plus the count's (< 2^64).
  static constexpr int kWords = 10;

  // Adds v * 2^shift (units of the sum's least bit: 2^-149 for magnitudes,
  // 2^-298 for squares).  shift < 64 * kWords - 128.
  void add_shifted(unsigned __int128 v, unsigned shift);
  void add_inf() { inf_ = true; }
  void add_nan() { nan_ = true; }
  void add(const ExactSum& o);

  // One fp32 value (by its bits; the sign is ignored), `count` times: |v| into
  // a magnitude sum, v^2 into a squares sum.
  void add_abs_bits(uint32_t bits, uint64_t count = 1);
  void add_sq_bits(uint32_t bits, uint64_t count = 1);

  // The sum rounded once to fp64: `lsb_exp` is the least bit's exponent
  // (-149 for magnitudes, -298 for squares).
  double value(int lsb_exp) const;
  double abs_value() const { return value(-149); }
  double sq_value() const { return value(-298); }

  bool empty() const;

 private:
  uint64_t w_[kWords] = {};
  bool inf_ = false, nan_ = false;
};

// The split of fp32 bits (sign ignored) into the integer m and the exponent
// e_eff >= 1: |v| = m * 2^(e_eff - 150).
inline void fp32_split(uint32_t bits, uint32_t* m, uint32_t* e_eff) {
  const uint32_t a = bits & 0x7fffffffu;
  const uint32_t e = a >> 23;
  *m = (a & 0x7fffffu) | (e ? 0x800000u : 0u);
  *e_eff = e ? e : 1u;
}

}  // namespace chatvec
