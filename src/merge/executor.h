// Runs a merge plan: streams every output tensor, chunk by chunk, from the
// memory-mapped inputs through the kernels into the safetensors writer.
//
// Memory stays bounded by the chunk size whatever the model size: input pages
// are handed back to the kernel once consumed, and output is flushed behind
// as it is written.
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

// Write the plan's tensors into `out_dir` (which must exist and be empty of
// weight files).
void execute_plan(const MergePlan& plan, const std::string& out_dir, const ExecuteOptions& opt);

}  // namespace chatvec
