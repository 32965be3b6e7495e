// The operations on chat vectors (schedule.h VectorOps) as the executor runs
// them on one Combine tensor (or one vocabulary tensor built row by row: then
// the vector is the rows each term is added to, docs/operations.md):
//
//   prepare_vector_ops()  the statistics passes over the tensor (only those
//                         its operations need).  Pruning: a sample of 64
//                         blocks guesses a window of top-16-bit bins around
//                         the k-th largest |delta|; one pass counts the
//                         elements above it and the exact bit patterns in it
//                         (with the L1/L2 norms of the vector and the L2 norm
//                         of the target); on a miss, a 65536-bin histogram of
//                         the top 16 bits and then of the low 16 bits inside
//                         the bin that holds the k-th largest.  For a rescale
//                         or clip the kept elements' norms are exact sums
//                         (exact_sum.h): on a hit from the windowed pass (above
//                         the window) and its histogram; after a miss, one
//                         more pass.
//                         Each pass walks the tensor in steps no larger than the
//                         executor's chunk, handing the inputs' pages back
//                         after each, so memory stays what a plain merge uses.
//   combine_ops_range()   the output elements, from the inputs and those
//                         statistics.
//
// Everything is a function of the element index, of exact sums rounded once
// (the kept elements' norms) and of sums in a fixed order
// (blocks of 4096 elements, element i in lane i mod 8, lanes summed in index
// order in fp64 and added pairwise, then the block sums in block order), so the result is the same whatever --threads and the
// chunk size.  docs/operations.md states every formula.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "merge/plan.h"

namespace chatvec {

// The DARE random function: FNV-1a 64 of the tensor name; SplitMix64.
uint64_t dare_name_key(const std::string& name);
uint64_t splitmix64_mix(uint64_t z);
// The generator state of vector `index` on tensor `name`.
uint64_t dare_state(const std::string& name, uint64_t seed, uint32_t index);
// The element's 64 random bits: mix(state + (element + 1) * golden gamma).
inline uint64_t dare_bits(uint64_t state, uint64_t element) {
  return splitmix64_mix(state + (element + 1) * 0x9E3779B97F4A7C15ull);
}
// Elements are dropped when (bits >> 11) < this.
uint64_t dare_drop_threshold(double p);

// What one term's operations need besides the element: decided by the
// statistics passes.
struct TermOpsState {
  uint64_t dare_state = 0;
  uint64_t dare_threshold = 0;  // 0: no DARE
  float dare_scale = 1;         // float(1 / (1 - p))
  bool prune = false;
  uint32_t keep_bits = 0;  // keep |delta| whose float bits are >= this
  float factor = 1;        // float(rescale * clip), applied when != 1
  // The statistics, for messages and tests.
  uint64_t kept_threshold_rank = 0;  // ceil(keep * n)
  bool window_hit = false;           // the threshold came from the sampled window's pass
  // (Only the sums the operations need: L1 for an l1 rescale, L2 for an l2
  // rescale or clipping; the others stay 0.  The kept ones are exact sums
  // rounded once, the others in the fixed lane order.)
  double l1_all = 0, l2sq_all = 0, l1_kept = 0, l2sq_kept = 0, target_l2sq = 0;
};

struct OpsState {
  std::vector<TermOpsState> terms;
};

// Run the statistics passes of a Combine or Rows task with operations.
OpsState prepare_vector_ops(const TensorTask& task, uint64_t chunk_elements, int threads);

// Output elements [begin, end) (indices into the tensor) into `out`, which
// holds elements from `out_first` on.
void combine_ops_range(const TensorTask& task, const OpsState& state, void* out, uint64_t out_first, uint64_t begin,
                       uint64_t end);

// One combined output row of a Rows task (a vocabulary tensor built row by
// row) into `out` (a row of the output dtype): the statistics of
// prepare_vector_ops were taken over the rows each term is added to.
void combine_ops_row(const TensorTask& task, const OpsState& state, const RowOp& row, void* out);

// Test hooks: off, the output pass takes the general path only (the fused
// bf16 loop is bit for bit the same); on, the pruning threshold's sampled
// window is made to miss (the fallback passes run).
void set_vector_ops_fast_paths(bool on);
void set_vector_ops_force_window_miss(bool on);
uint64_t vector_ops_fused_calls();  // how often the fused loop ran

}  // namespace chatvec
