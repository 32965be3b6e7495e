// Executing a Rows task: an embedding or LM-head tensor assembled row by row
// as its RowMap says (combined, the target's, or the chat model's row).
#pragma once

#include <cstdint>
#include <functional>

#include "merge/plan.h"

namespace chatvec {

struct OpsState;

class SafetensorsWriter;

// Produce the task's bytes in order, `chunk_bytes` at a time, handing each
// piece to `sink`.  With `ops` (the statistics of prepare_vector_ops), the
// combined rows get the task's vector operations.
void gather_rows(const TensorTask& task, uint64_t chunk_bytes, const std::function<void(const void*, size_t)>& sink,
                 const OpsState* ops = nullptr);

}  // namespace chatvec
