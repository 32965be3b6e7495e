// The pre-tokenizer regexes of byte-level BPE tokenizers, matched by hand
// (std::regex has no \p{L}):
//   Llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Qwen2:  the same with \p{N} instead of \p{N}{1,3}
//   Gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// \s is JavaScript's (the reference is transformers.js).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace chatvec {

enum class SplitPattern { Llama3, Qwen2, Gpt2 };

// Recognize a tokenizer.json Split regex; false when it is none of these.
bool recognize_split_pattern(std::string_view regex, SplitPattern& out);

// Split `text` into the pieces the regex matches (every character belongs to
// one piece); returns byte ranges [begin, end).
std::vector<std::pair<size_t, size_t>> pretokenize(std::string_view text, SplitPattern pattern);

}  // namespace chatvec
