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

#include <functional>
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
  int vector = 0;         // apply: the vector whose stored row it is
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

// For each base row, the chat model's row of the same token (by string when
// both tokenizers are known, else by index; rows beyond the base's tokenizer
// are padding, matched by index), or -1 when the chat model has none.
std::vector<int64_t> chat_rows_of_base(const Vocabulary* base, const Vocabulary* chat, uint64_t rows_base,
                                       uint64_t rows_chat);
// The chat model's rows of the tokens it added (absent from the base), in id
// order: the tokens `--special-tokens transplant` carries.
std::vector<int64_t> chat_added_rows(const Vocabulary& base, const Vocabulary& chat, uint64_t rows_chat);

// The names of the vocabulary tensors present in `target`.
std::vector<std::string> vocab_tensor_names(const Checkpoint& target);

// Decide.  Throws InputError explaining the choices when auto cannot decide
// or an explicit policy does not fit the inputs.
VocabDecision decide_vocabulary(const Checkpoint& base, const Checkpoint& chat, const Checkpoint& target,
                                const VocabOptions& options);

// One model as the policy sees it: its embedding rows and its tokenizer
// (null when it has none); `path` names it in messages.  `apply` decides from
// what an extracted vector recorded of its base and chat models.
struct VocabSide {
  uint64_t rows = 0;
  std::shared_ptr<const Vocabulary> vocab;
  std::string path;
};
VocabDecision decide_vocabulary(const VocabSide& base, const VocabSide& chat, const VocabSide& target,
                                const VocabOptions& options, std::vector<std::string> notes = {});
// The tokenizer of directory `dir` (null, with a note "ROLE has no
// tokenizer...", when it has none; InputError when it is malformed).
std::shared_ptr<const Vocabulary> load_tokenizer_of(const std::string& dir, const std::string& role,
                                                    std::vector<std::string>& notes);
// The embedding rows of `c` (every vocabulary tensor in `names` must have the
// same); InputError naming the tensor otherwise.
uint64_t vocab_rows(const Checkpoint& c, const std::vector<std::string>& names, const std::string& role);

// apply: the decisions of one or more extracted vectors, each made by
// decide_vocabulary() against the same target from what the vector recorded
// of its base and chat models, as one decision whose row map indexes the
// vectors (RowOp::base_row: a vector's row; FromChat: a stored chat row of
// vector `term`).  The vectors must share their base vocabulary.  A token two
// vectors add is taken from the first, after `same_rows(i, a, j, b)` says
// vector i's stored row a equals vector j's stored row b; when they differ it
// is an InputError naming the token, unless `rows_from` (a vector index, or
// -1) says whose rows win.
struct VectorVocabulary {
  VocabDecision decision;
  std::vector<int64_t> stored_chat_rows;  // the chat rows the vector stored, in order
  std::string path;
};
VocabDecision decide_for_vectors(const std::vector<VectorVocabulary>& vectors, int rows_from,
                                 const std::function<bool(size_t, int64_t, size_t, int64_t)>& same_rows);

// The report lines ("vocabulary: ...") printed before writing.
std::vector<std::string> describe_vocabulary(const VocabDecision& d);

}  // namespace chatvec
