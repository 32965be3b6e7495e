// The output model's tokenizer, EOS and config after a vocabulary decision:
// transplanted tokens appended to the tokenizer files, the chat model's
// end-of-turn token as EOS (tokenizer_config.json, generation_config.json),
// and config.json consistent with both (vocab_size, eos_token_id).
#pragma once

#include <string>
#include <vector>

#include "merge/vocab_policy.h"

namespace chatvec {

struct EosDecision {
  std::string token;         // the chat model's end-of-turn token
  std::string source;        // where it was found
  int output_id = -1;        // its id in the output tokenizer (-1: missing)
  std::vector<int> eos_ids;  // generation_config eos_token_id of the output
};

// Resolve the chat model's end-of-turn token and its id in the output.
EosDecision decide_eos(const std::string& chat_dir, const std::string& target_dir, const VocabDecision& vocab);

// Rewrite the tokenizer/config files in `out_dir` (already holding copies of
// the target's files and the chat template).  Returns report lines.
std::vector<std::string> finalize_output_tokenizer(const std::string& out_dir, const std::string& target_dir,
                                                   const VocabDecision& vocab, const EosDecision& eos);

}  // namespace chatvec
