// The vocabulary of a tokenizer: token strings and ids, scores, token types,
// added/special tokens, BPE merges and the bos/eos/unk/pad tokens.
//
// Reads a Hugging Face model directory (tokenizer.json preferred, else the
// SentencePiece tokenizer.model; tokenizer_config.json and
// special_tokens_map.json complete it when present) or a single file.
// append_tokens() writes a copy of a tokenizer with new tokens added.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/pretokenize.h"

namespace chatvec {

// Same meaning and numbering as SentencePiece's ModelProto piece types.
enum class TokenType : uint8_t {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};
const char* token_type_name(TokenType t);

enum class ModelKind {
  SentencePieceBpe,      // ▁ for spaces, <0xNN> byte fallback (Llama-2, Mistral)
  SentencePieceUnigram,  // tokenizer.model of type UNIGRAM (read, encode via sentencepiece)
  ByteLevelBpe,          // GPT-2 style byte-to-unicode alphabet (Llama-3, Qwen2/3)
};
const char* model_kind_name(ModelKind k);

// Where the vocabulary came from.
enum class TokenizerFormat { HfJson, SentencePieceModel };

// An entry of tokenizer.json "added_tokens" (or added_tokens_decoder).
struct AddedToken {
  int id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool single_word = false;
};

// A tokenizer given by its parts rather than by a file (GGUF metadata is
// read into this by src/gguf; the tokenizer knows nothing of GGUF bytes).
//   SentencePieceBpe  tokens + scores + types: SentencePiece BPE (merge the
//                     adjacent pair whose result scores highest), <0xNN>
//                     byte fallback when Byte tokens exist, ▁ for spaces
//   ByteLevelBpe      tokens + types + merges (rank order) + pre-tokenizer
// Control and UserDefined tokens are split out of the text as added tokens
// (Control ones special: skipped when decoding).
struct TokenizerParts {
  ModelKind kind = ModelKind::SentencePieceBpe;
  std::vector<std::string> tokens;
  std::vector<float> scores;     // one per token (SentencePieceBpe; else may be empty)
  std::vector<TokenType> types;  // one per token (empty: all Normal)
  std::vector<std::pair<std::string, std::string>> merges;  // ByteLevelBpe
  SplitPattern pre = SplitPattern::Llama3;                  // ByteLevelBpe
  bool ignore_merges = false;  // ByteLevelBpe: a word that is a token is not merged (Llama-3)
  bool add_space_prefix = true;  // SentencePieceBpe
  std::optional<int> bos, eos, unk, pad;
  bool add_bos = false, add_eos = false;
  std::string source;  // names the origin in errors (e.g. the GGUF file)
};

class Vocabulary {
 public:
  // A model directory (tokenizer.json, else tokenizer.model) or a file
  // (*.json read as tokenizer.json, anything else as a SentencePiece model).
  // Throws InputError naming the file on malformed input.
  static Vocabulary load(const std::string& path);

  // One past the largest id (base vocabulary plus added tokens).
  size_t size() const { return tokens_.size(); }
  // Size of the model's own vocabulary (model.vocab / the pieces).
  size_t base_size() const { return base_size_; }

  // Id of a token string, or -1.
  int id(std::string_view token) const;
  bool contains(std::string_view token) const { return id(token) >= 0; }
  // Token string of an id ("" for a hole in the id range); throws
  // InputError when out of range.
  const std::string& token(int id) const;
  float score(int id) const;
  TokenType type(int id) const;
  bool is_special(int id) const;  // an added token marked special
  bool is_added(int id) const;    // listed in added_tokens

  const std::vector<AddedToken>& added_tokens() const { return added_; }
  // BPE merges in rank order (empty for SentencePiece models, which rank by
  // score).
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }

  ModelKind kind() const { return kind_; }
  TokenizerFormat format() const { return format_; }
  bool byte_fallback() const { return byte_fallback_; }
  // The file the vocabulary was read from.
  const std::string& source() const { return source_; }

  std::optional<int> bos_id() const { return bos_id_; }
  std::optional<int> eos_id() const { return eos_id_; }
  std::optional<int> unk_id() const { return unk_id_; }
  std::optional<int> pad_id() const { return pad_id_; }
  // Whether encoding adds BOS by default (tokenizer_config add_bos_token, the
  // post-processor template, or SentencePiece's convention).
  bool add_bos_default() const { return add_bos_default_; }
  // The pre-tokenizer of a byte-level tokenizer.json, by its regex: "llama3",
  // "qwen2", "gpt2" (ByteLevel's own), "unknown" (another regex); "" for
  // SentencePiece-style vocabularies.
  const std::string& pre_tokenizer() const { return pre_tokenizer_; }
  // Whether a space (U+2581) is put before the text: SentencePiece's
  // add_dummy_prefix; in tokenizer.json a Prepend normalizer or a Metaspace
  // pre-tokenizer that prepends (Llama-2 yes, Gemma no).
  bool adds_space_prefix() const { return adds_space_prefix_; }

 private:
  friend class VocabularyBuilder;
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::vector<uint8_t> flags_;  // bit 0: added, bit 1: special
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, int, StringHash, std::equal_to<>> ids_;
  std::vector<AddedToken> added_;
  std::vector<std::pair<std::string, std::string>> merges_;
  size_t base_size_ = 0;
  ModelKind kind_ = ModelKind::SentencePieceBpe;
  TokenizerFormat format_ = TokenizerFormat::HfJson;
  bool byte_fallback_ = false;
  std::string source_;
  std::optional<int> bos_id_, eos_id_, unk_id_, pad_id_;
  bool add_bos_default_ = false;
  std::string pre_tokenizer_;
  bool adds_space_prefix_ = false;
};

// A token to append.
struct NewToken {
  std::string content;
  bool special = false;  // control token (e.g. <|im_start|>) vs plain added text
};

// Copy the tokenizer files of model directory `dir_in` into `dir_out` (which
// must exist) with `tokens` appended after the current largest id:
//   tokenizer.json         new entries in added_tokens and model.vocab
//   tokenizer.model        new pieces (special: CONTROL, else USER_DEFINED, score 0)
//   tokenizer_config.json  new entries in added_tokens_decoder (when it has one)
//   special_tokens_map.json copied unchanged
// A token already in the vocabulary keeps its id and is not added again.
// Returns the id of each of `tokens`, in order.
std::vector<int> append_tokens(const std::string& dir_in, const std::string& dir_out,
                               const std::vector<NewToken>& tokens);

}  // namespace chatvec
