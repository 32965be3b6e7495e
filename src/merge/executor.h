// Runs a merge plan: streams every output tensor, chunk by chunk, from the
// memory-mapped inputs through the kernels into the safetensors writer.
//
// Memory stays bounded by the chunk size whatever the model size: input pages
// are handed back to the kernel once consumed, and output is flushed behind
// as it is written.  The arithmetic of one chunk overlaps the write of the
// previous ones (a writer thread and a small pool of chunk buffers), and the
// inputs are asked for ahead (madvise WILLNEED) so that cold reads overlap
// both.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "merge/plan.h"

namespace chatvec {

struct ExecuteOptions {
  uint64_t shard_size = 5'000'000'000ull;
  std::map<std::string, std::string> metadata{{"format", "pt"}};
  uint64_t chunk_bytes = 16ull << 20;  // output bytes computed per step
  // Called after each chunk with (bytes written so far, total bytes).
  std::function<void(uint64_t, uint64_t)> progress;
};

// Output file bytes the plan will produce (headers included).
uint64_t planned_output_bytes(const MergePlan& plan, const ExecuteOptions& opt);

// What execute_plan will hold in memory at most, by the executor's own
// accounting (the kernel reports mapped input pages in RSS too).
struct MemoryEstimate {
  uint64_t buffers = 0;        // output chunk buffers (the write-behind pool)
  uint64_t mapped_inputs = 0;  // input pages mapped at once (released as consumed)
  uint64_t fixed = 0;          // program, libraries, headers, plan
  uint64_t total = 0;
};
MemoryEstimate estimate_peak_memory(const MergePlan& plan, const ExecuteOptions& opt);

// How much of the plan's input bytes are in the page cache now (mincore).
struct InputResidency {
  uint64_t bytes = 0;     // distinct input tensor bytes
  uint64_t resident = 0;  // of which cached
};
InputResidency input_residency(const MergePlan& plan);

// Write the plan's tensors into `out_dir` (which must exist and be empty of
// weight files).
void execute_plan(const MergePlan& plan, const std::string& out_dir, const ExecuteOptions& opt);

}  // namespace chatvec
