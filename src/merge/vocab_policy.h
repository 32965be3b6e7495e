// The vocabulary policy: what happens to the embedding and LM-head rows when
// base, chat and target may have different vocabularies, and which of the
// chat model's tokens are carried into the output.
//
//   full    shapes must match; every row gets the vector.
//   skip    both tensors are the target's (the paper's choice).
//   shared  the rows the target shares with the base by index (the first
//           min(V_base, V_target)) get the vector; later rows are the target's.
//   align   rows matched by token string; target tokens the base lacks keep
//           the target's row.
//   auto    full when the vocabularies are identical, shared when the
//           target's starts with the base's, align when both are readable
//           but ordered differently; otherwise an error explaining the choice.
//
// Special tokens: tokens the chat model added (absent from the base) are
// transplanted: appended to the output tokenizer when the target lacks them,
// with the chat model's trained rows; where the target has such a token at
// another id, the row follows the token.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "merge/plan.h"
#include "tokenizer/vocab.h"

namespace chatvec {

enum class EmbeddingPolicy { Auto, Full, Shared, Align, Skip };
const char* embedding_policy_name(EmbeddingPolicy p);
std::optional<EmbeddingPolicy> embedding_policy_from_name(const std::string& s);

struct VocabOptions {
  EmbeddingPolicy policy = EmbeddingPolicy::Auto;
  bool transplant = true;  // --special-tokens transplant|none
};

// A chat-model token carried into the output.
struct Transplant {
  std::string content;
  bool special = false;
  int chat_id = -1;
  int output_id = -1;
  bool appended = false;  // false: the target already had it (row follows the token)
};

struct VocabDecision {
  EmbeddingPolicy policy = EmbeddingPolicy::Full;  // the one applied
  std::string why;
  // Tokenizer sizes (0 when unreadable) and embedding rows of each model.
  size_t vocab_base = 0, vocab_chat = 0, vocab_target = 0, vocab_output = 0;
  uint64_t rows_base = 0, rows_chat = 0, rows_target = 0, rows_output = 0;
  size_t overlap = 0;        // target tokens the base also has
  size_t rows_combined = 0;  // rows that get the vector
  size_t rows_target_kept = 0, rows_padding = 0;
  std::vector<Transplant> transplants;
  std::vector<std::string> notes;
  // Null when the tensors are handled as ordinary tensors (full with equal
  // shapes, or skip with nothing transplanted).
  std::shared_ptr<const RowMap> row_map;
  bool skip_tensors = false;  // skip with no row map: copy the target's tensors
  // The vocabularies, when readable (used for the output tokenizer and EOS).
  std::shared_ptr<const Vocabulary> base, chat, target;
};

// The names of the vocabulary tensors present in `target`.
std::vector<std::string> vocab_tensor_names(const Checkpoint& target);

// Decide.  Throws InputError explaining the choices when auto cannot decide
// or an explicit policy does not fit the inputs.
VocabDecision decide_vocabulary(const Checkpoint& base, const Checkpoint& chat, const Checkpoint& target,
                                const VocabOptions& options);

// The report lines ("vocabulary: ...") printed before writing.
std::vector<std::string> describe_vocabulary(const VocabDecision& d);

}  // namespace chatvec
