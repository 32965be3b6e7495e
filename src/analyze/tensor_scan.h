// The figures of one tensor's chat vector, streamed in chunks with bounded
// memory (analyze.h says what they mean).
//
// A tensor is a stream of n elements: a checkpoint tensor's own elements, or
// (vocabulary tensors) the rows a row map selects, row after row, cut into
// blocks of kAnalyzeBlock; every sum runs over a block in 8 fixed lanes and
// the block sums are added in order.  Pass 1 reads the inputs once: every
// sum and a histogram of the top 16 bits of |δc| (the bit pattern of a
// non-negative double orders like its value).  For a tensor of 2^20
// elements or more, a sample read first (every stride-th block) estimates
// each top fraction's threshold, and pass 1 also counts the distinct |δc|
// in a window around each estimate and sums the mass above it: when the
// k-th largest lies in the window (nearly always), that settles threshold
// and mass exactly with no other pass.  Otherwise radix selection on the
// bit pattern, 16 bits at a time, each further pass reading the inputs
// again: a bin holding a single value, or at most 2^20 candidates
// (gathered and selected in memory), or the complete pattern ends it; the
// mass comes from the same pass, or from the histogram when every bin
// above is a single value, or from one more pass.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "analyze/analyze.h"
#include "formats/checkpoint.h"

namespace chatvec {

// One operand: a tensor, read whole or (rows non-empty) as the listed rows.
struct ScanOperand {
  const CheckpointTensor* tensor = nullptr;
  std::vector<int64_t> rows;  // empty: every element in order
  bool by_rows = false;
};

struct ScanInput {
  std::string name;
  uint64_t elements = 0;  // of the stream
  uint64_t width = 1;     // elements per row (by_rows operands)
  ScanOperand chat, base, target;  // target.tensor null: no target
};

// A window of |δc| values counted for a set of tensors (a layer), whose
// top fractions are selected over all of their elements together: the
// tensor's share of the set's count and mass above `hi`, and of its
// distinct values in [lo, hi].
struct ExtraWindow {
  double lo = 0, hi = 0;
};
struct WindowTally {
  uint64_t above_count = 0;          // elements with |δc| > hi
  double above_l1 = 0, above_l2 = 0;  // their Σ|δc| and Σδc², in lanes, block by block
  bool over = false;                  // more distinct values in [lo, hi] than kept
  std::vector<std::pair<uint64_t, uint64_t>> keys;  // the bit patterns of |δc| in [lo, hi], with counts (any order)
};

struct ScanOptions {
  uint64_t chunk_elements = uint64_t(1) << 24;  // a multiple of kAnalyzeBlock
  int threads = 1;
  bool estimate = true;  // the sample and the windows (see above)
  std::vector<int> percents = {1, 10, 25};
  std::vector<ExtraWindow> extra;  // counted in pass 1 too (at most 6)
  bool want_hist = false;          // return the level-0 histogram's counts
};

struct ScanResult {
  DeltaSums sums;
  std::vector<TopMass> top;
  int passes = 0;
  std::vector<WindowTally> extra;  // one per ScanOptions::extra
  std::vector<uint64_t> hist;      // want_hist: elements per value of (bit pattern of |δc|) >> 47;
                                   // empty when the tensor's windows decided (no histogram counted)
};

// InputError naming the tensor when an input element is not finite.
ScanResult scan_tensor(const ScanInput& in, const ScanOptions& opt);

// Pass 1 only for the extra windows (reading δc, no other figure): what a
// set's selection needs when its windows missed.
std::vector<WindowTally> tally_windows(const ScanInput& in, const ScanOptions& opt);

// CHATVEC_ANALYZE_MISS set (to anything but 0): every window estimated
// (a tensor's, a layer's) is [0, 0], so that it misses (a test hook: the
// fallback paths give the same figures).
bool analyze_force_miss();

// One pass over δc: the counts of the level-0 histogram (as ScanResult::hist).
std::vector<uint64_t> level0_hist(const ScanInput& in, const ScanOptions& opt);

// |δc| of the blocks a tensor's estimate samples (every stride-th block;
// every block of a tensor under 2^20 elements); *weight: elements of the
// tensor per sample element.
std::vector<double> sample_abs_delta(const ScanInput& in, const ScanOptions& opt, double* weight);

// Σ x² over the given rows of `t`, rows in order, each row summed in order.
double rows_sum_sq(const CheckpointTensor& t, const std::vector<int64_t>& rows);

}  // namespace chatvec
