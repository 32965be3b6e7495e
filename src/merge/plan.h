// The merge plan: what happens to each output tensor, decided before any
// byte is read or written.
//
//   merge    out = target + ratio * (chat - base)
//   apply    out = target + r1 * vector1 + r2 * vector2 + ...
//   extract  out = chat - base                      (no target: the vector itself)
//
// The output has the tensors of the target (for extract: of the chat model),
// in its storage order.  Every naming, shape and dtype check happens here, so
// that a bad combination of inputs is refused before any output exists.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/checkpoint.h"
#include "merge/schedule.h"

namespace chatvec {

// One chat vector added to the target with its ratio: chat - base (merge,
// extract), or a vector extracted earlier (apply).
struct VectorSource {
  RatioSchedule ratio = 1.0;  // resolved per tensor by build_plan
  const Checkpoint* chat = nullptr;    // with `base`: the vector is chat - base
  const Checkpoint* base = nullptr;
  const Checkpoint* vector = nullptr;  // or a ready-made vector (from `chatvec extract`)
  std::string label;                   // how messages name it: "chat", "vector 2"
  // A ready-made vector's vocabulary rows: which base rows it holds (null:
  // all), for row-mapped vocabulary tensors.
  std::shared_ptr<const std::vector<bool>> base_rows_present;
};

// The tensor an extracted vector stores the chat model's rows of its added
// tokens in, for vocabulary tensor `name` ("chatvec.chat_rows.lm_head.weight").
std::string chat_rows_tensor_name(const std::string& name);
// Tensors of a vector file that are not part of the vector's sum.
bool is_vector_side_tensor(const std::string& name);

struct PlanInputs {
  // The model the vectors are added to; null for extract, whose output is
  // chat - base itself (then there is exactly one vector, chat and base).
  const Checkpoint* target = nullptr;
  std::vector<VectorSource> vectors;
};

// Where one output row of a vocabulary tensor (embedding, LM head) comes from.
//
// With chat and base models (merge, extract), rows index those models'
// tensors.  With ready-made vectors (apply), `base_row` indexes the vectors'
// rows (a vector has one row per base token) and FromChat's `chat_row`
// indexes the chat rows vector `term` stored for the tokens its chat model
// added.
struct RowOp {
  enum Kind : uint8_t {
    Combine,     // target[target_row] + ratio * (chat[chat_row] - base[base_row]); merge
                 // without a target (extract): chat - base; apply: + sum of ratio * vector[base_row]
    KeepTarget,  // target[target_row], the target's own row
    FromChat,    // the chat model's trained row of a transplanted token
    Zero,        // zeros (extract: a base token the chat model does not have)
  };
  Kind kind;
  int64_t target_row = -1, chat_row = -1, base_row = -1;
  int32_t term = 0;  // FromChat with vectors: the vector whose stored row it is
};

// Output rows of the embedding and LM-head tensors, decided once for both by
// the vocabulary policy (vocab_policy.h).
struct RowMap {
  std::vector<RowOp> rows;  // one per output row
};

// --include / --exclude: tensors outside the selection are the target's.
struct TensorSelection {
  std::vector<std::regex> include;  // empty: everything
  std::vector<std::regex> exclude;
  std::vector<std::string> include_src, exclude_src;  // as the user wrote them
  bool selected(const std::string& name) const;
};
// Compile the user's patterns; InputError naming the flag and pattern.
TensorSelection make_selection(const std::vector<std::string>& include, const std::vector<std::string>& exclude);

struct PlanOptions {
  std::optional<DType> dtype;  // nullopt: auto, the target's (extract: the chat model's) dtype per tensor
  TensorSelection selection;
  // Row maps for the vocabulary tensors (by tensor name), from the
  // vocabulary policy.  Those tensors become Rows tasks.
  std::map<std::string, std::shared_ptr<const RowMap>> row_maps;
  // Tensors copied from the target unchanged, with the reason.
  std::map<std::string, std::string> keep_target;
  // Extract: tensors appended after the vector's own, built row by row from
  // the chat model's tensor `from` (the rows of the tokens it added).
  struct ChatRowsTensor {
    std::string name, from;
    std::shared_ptr<const RowMap> rows;
  };
  std::vector<ChatRowsTensor> chat_rows_tensors;
  // Operations on the vectors (schedule.h), for the Combine tensors and the
  // Rows tensors of a merge or apply (on the rows each vector is added to).
  VectorOps ops;
};

// Copy: the target's tensor, byte for byte.  Combine: element-wise
// arithmetic.  Rows: a vocabulary tensor built row by row from a RowMap.
enum class TaskKind { Copy, Combine, Rows };

// One term of a tensor's sum: ratio * (chat - base), or ratio * vector.
struct TensorTerm {
  double ratio;  // the vector's schedule resolved for this tensor
  const CheckpointTensor* chat = nullptr;
  const CheckpointTensor* base = nullptr;
  const CheckpointTensor* vector = nullptr;
  // Rows tasks with a vector: the chat rows it stored for its added tokens
  // (may be null), and which of its rows it holds (null: all).
  const CheckpointTensor* chat_rows = nullptr;
  std::shared_ptr<const std::vector<bool>> base_rows_present;
  uint32_t index = 0;  // the vector's place in the job (0-based): DARE's seed is seed + index
};

struct TensorTask {
  std::string name;
  DType dtype;  // output dtype
  std::vector<uint64_t> shape;
  TaskKind kind;
  // Copy: the tensor copied.  Combine/Rows: the tensor the terms are added
  // to (null for extract).
  const CheckpointTensor* target = nullptr;
  std::vector<TensorTerm> terms;          // Combine and Rows
  std::shared_ptr<const RowMap> row_map;  // Rows only
  std::string note;                       // why it was copied, when it was
  VectorOps ops;                          // Combine and Rows: operations on the terms (schedule.h)
  std::string ratio_reason;               // what decided the first term's ratio (for --dry-run)
  uint64_t nbytes() const;
  uint64_t numel() const;
  // Every input tensor the task reads (target first, then each term's).
  std::vector<const CheckpointTensor*> inputs() const;
};

struct MergePlan {
  std::vector<TensorTask> tasks;  // in output order
  uint64_t bytes_read = 0;        // input bytes the plan reads
  uint64_t bytes_written = 0;     // tensor bytes it writes
  size_t combined = 0, copied = 0;
  std::vector<std::string> notes;     // one line each, for the report
  std::vector<std::string> warnings;  // e.g. a --ratio-for that matches no tensor
  int64_t layers = 0;                 // layers of the output's layout (for the schedule)
};

// Build the plan.  Throws InputError naming the tensor and model on any
// mismatch.  A ready-made vector may lack some of the target's tensors (it
// was extracted with a selection): those are copied unchanged.
MergePlan build_plan(const PlanInputs& inputs, const PlanOptions& options);

}  // namespace chatvec
