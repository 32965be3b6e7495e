// The figures of one tensor's chat vector, streamed in chunks with bounded
// memory (analyze.h says what they mean).
//
// A tensor is a stream of n elements: a checkpoint tensor's own elements, or
// (vocabulary tensors) the rows a row map selects, row after row.  Pass 1
// computes every sum and a histogram of the top bits of |δc|; when the tensor
// fits in one chunk its δc is kept and every later pass reads that copy,
// otherwise later passes read the inputs again (from the page cache).  The
// k-th largest |δc| of each top fraction is found by radix selection on the
// bit pattern of |δc| (for non-negative doubles it orders like the value):
// 16 bits at a time, until the candidates fit in a chunk (then selected in
// memory) or the pattern is complete; a last pass sums the mass above each
// threshold.
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

struct ScanOptions {
  uint64_t chunk_elements = uint64_t(1) << 24;  // a multiple of kAnalyzeBlock
  int threads = 1;
  std::vector<int> percents = {1, 10, 25};
};

struct ScanResult {
  DeltaSums sums;
  std::vector<TopMass> top;
  int passes = 0;
};

// InputError naming the tensor when an input element is not finite.
ScanResult scan_tensor(const ScanInput& in, const ScanOptions& opt);

// Σ x² over the given rows of `t`, rows in order, each row summed in order.
double rows_sum_sq(const CheckpointTensor& t, const std::vector<int64_t>& rows);

}  // namespace chatvec
