// The correctly rounded sum of doubles, by error-free transformations
// (Shewchuk's partials, then the round-half-even correction of the last
// partials: the algorithm of Python's math.fsum), for the tests of the exact
// sums (src/merge/exact_sum.h): an independent way to the same bits.
#pragma once

#include <cmath>
#include <utility>
#include <vector>

namespace chatvec {

// The correctly rounded sum of finite non-negative doubles (no overflow).
inline double fsum_reference(const std::vector<double>& xs) {
  std::vector<double> partials;
  for (double x : xs) {
    size_t i = 0;
    for (double y : partials) {
      if (std::fabs(x) < std::fabs(y)) std::swap(x, y);
      const double hi = x + y;
      const double lo = y - (hi - x);
      if (lo != 0.0) partials[i++] = lo;
      x = hi;
    }
    partials.resize(i);
    partials.push_back(x);
  }
  if (partials.empty()) return 0.0;
  size_t n = partials.size() - 1;
  double hi = partials[n], lo = 0;
  while (n > 0) {
    const double x = hi;
    const double y = partials[--n];
    hi = x + y;
    lo = y - (hi - x);
    if (lo != 0.0) break;
  }
  if (n > 0 && ((lo < 0 && partials[n - 1] < 0) || (lo > 0 && partials[n - 1] > 0))) {
    const double y = lo * 2;
    const double x = hi + y;
    if (y == x - hi) hi = x;
  }
  return hi;
}

}  // namespace chatvec
