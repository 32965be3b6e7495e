// Text <-> token ids for the inference engine.
//
// Backends, chosen by what the model directory holds:
//   tokenizer.json, byte-level BPE        Llama-3, Qwen2/3 (pre-tokenizer regexes
//                                         implemented by hand, see pretokenize.h)
//   tokenizer.json, SentencePiece-style   Llama-2, Mistral (▁ for spaces, <0xNN>
//                    BPE                  byte fallback, merges by rank)
//   tokenizer.model                       delegated to libsentencepiece
// Added/special tokens in the text are split out before the model runs
// (longest match first), as Hugging Face tokenizers and transformers.js do.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace chatvec {

class Tokenizer {
 public:
  // A model directory (tokenizer.json preferred, else tokenizer.model) or a
  // tokenizer file.  Throws InputError for malformed or unsupported files.
  static Tokenizer load(const std::string& path);
  // A tokenizer from its parts (see TokenizerParts); InputError naming
  // parts.source when they are inconsistent.
  static Tokenizer from_parts(const TokenizerParts& parts);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  const Vocabulary& vocab() const;

  // Token ids of `text`.  add_bos: add the special tokens the tokenizer adds
  // around a sequence (the post-processor template of tokenizer.json, e.g.
  // <s> for Llama-2; BOS for a SentencePiece model); tokenizers whose
  // post-processor adds nothing (this Llama-3 and Qwen3 tokenizer.json) add
  // nothing.  Equals Hugging Face encode(text, add_special_tokens=add_bos).
  std::vector<int> encode(std::string_view text, bool add_bos) const;
  // Whether encode(text, true) adds anything.
  bool adds_bos() const;

  // Text of `ids`.  skip_special: special tokens (BOS, EOS, <|eot_id|>, ...)
  // produce no text; otherwise they appear as their content.  Invalid UTF-8
  // (bytes of a character cut off) becomes U+FFFD.
  std::string decode(const std::vector<int>& ids, bool skip_special = true) const;
  // The bytes token `id` adds to the output when it follows `prev_id` (-1 at
  // the start of the output), for streaming.  Special tokens give "".  A
  // character split over byte tokens comes out a byte at a time, so the
  // pieces may be incomplete UTF-8; their concatenation over a sequence
  // equals decode(ids) for valid UTF-8.
  std::string decode_piece(int prev_id, int id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace chatvec
