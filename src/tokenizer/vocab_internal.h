// Module-internal loading entry point shared with the Tokenizer.
#pragma once

#include <string>

#include "core/json_util.h"
#include "tokenizer/vocab.h"

namespace chatvec::detail {

// Vocabulary::load; when the source is a tokenizer.json and `tokenizer_json`
// is given, it receives that file's JSON without model.vocab and
// model.merges (normalizer, pre_tokenizer, post_processor, decoder, ...).
Vocabulary load_vocabulary(const std::string& path, Json* tokenizer_json);

// A vocabulary from parts (InputError naming parts.source when they do not
// fit together: sizes, ids out of range, unknown token types).
Vocabulary vocabulary_from_parts(const TokenizerParts& parts);

}  // namespace chatvec::detail
