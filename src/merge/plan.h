// The merge plan: what happens to each output tensor, decided before any
// byte is read or written.
//
// A plan is built from a "layout" model (the target for merge/apply, the chat
// model for extract), an optional source (the model whose values the vectors
// are added to) and a list of vector terms.  Every naming, shape and dtype
// check happens here, so that a bad combination of inputs is refused before
// any output exists.
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

namespace chatvec {

// One vector added to the source: ratio * (plus - minus), or ratio * plus
// when minus is null (a chat vector extracted earlier).
struct VectorInput {
  double ratio = 1.0;
  const Checkpoint* plus = nullptr;
  const Checkpoint* minus = nullptr;
  std::string label;  // for messages: "chat", "vector 2"...
};

// Where one output row of a row-mapped tensor comes from.
struct RowOp {
  enum Kind : uint8_t {
    Combine,     // source[source_row] + ratio * (plus[plus_row] - minus[minus_row])
    FromSource,  // source[source_row] unchanged (rounded to the output dtype)
    FromPlus,    // plus[plus_row]: the chat model's trained row (transplanted tokens)
  };
  Kind kind;
  int64_t source_row = -1, plus_row = -1, minus_row = -1;
};

// Output rows of the embedding and LM-head tensors, decided once for both.
struct RowMap {
  std::vector<RowOp> rows;  // one per output row
};

struct TensorSelection {
  std::vector<std::regex> include;  // empty: everything
  std::vector<std::regex> exclude;
  std::vector<std::string> include_src, exclude_src;
  bool selected(const std::string& name) const;
};

struct PlanOptions {
  std::optional<DType> dtype;  // nullopt: auto, the layout model's dtype per tensor
  TensorSelection selection;
  // Vectors (minus == nullptr) may lack some of the layout's tensors (they
  // were extracted with a selection); those are copied unchanged.
  bool allow_partial_vectors = false;
  // When there is no source (extract), tensors that are not combined are
  // dropped rather than copied.
  bool drop_uncombined = false;
  // Row maps for the vocabulary tensors (by tensor name), from the
  // vocabulary policy.  Those tensors become Rows tasks.
  std::map<std::string, std::shared_ptr<const RowMap>> row_maps;
  // Tensors copied from the layout model unchanged, with the reason.
  std::map<std::string, std::string> keep_unchanged;
};

// Copy: bytes of one input tensor.  Combine: element-wise arithmetic.
// Rows: an embedding/LM-head tensor built row by row from a RowMap (the
// vocabulary policy decides where each output row comes from).
enum class TaskKind { Copy, Combine, Rows };


struct TensorTerm {
  double ratio;
  const CheckpointTensor* plus;
  const CheckpointTensor* minus;  // may be null
};

struct TensorTask {
  std::string name;
  DType dtype;  // output dtype
  std::vector<uint64_t> shape;
  TaskKind kind;
  const CheckpointTensor* source = nullptr;  // Copy: the tensor copied; Combine: the base term (may be null)
  std::vector<TensorTerm> terms;             // Combine and Rows
  std::shared_ptr<const RowMap> row_map;     // Rows only
  std::string note;                          // why it was copied, when it was
  uint64_t nbytes() const;
  uint64_t numel() const;
};

struct MergePlan {
  std::vector<TensorTask> tasks;  // in output order
  uint64_t bytes_read = 0;        // input bytes the plan reads
  uint64_t bytes_written = 0;     // tensor bytes it writes
  size_t combined = 0, copied = 0;
  std::vector<std::string> notes;  // one line each, for the report
};

// Build the plan.  `source` may be null (extract).  Throws InputError naming
// the tensor and model on any mismatch.
MergePlan build_plan(const Checkpoint& layout, const Checkpoint* source, const std::vector<VectorInput>& vectors,
                     const PlanOptions& options);

// Is this the token-embedding or LM-head tensor (whose first dimension is the
// vocabulary)?
bool is_vocab_tensor(const std::string& name);

}  // namespace chatvec
