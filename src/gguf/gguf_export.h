// Hugging Face model directory (Llama, Mistral, Qwen2, Qwen3, Gemma 2,
// Gemma 3) -> GGUF, as llama.cpp's convert_hf_to_gguf.py lays it out:
// llama.cpp tensor names (formats/architecture.h), q/k rows permuted to
// Meta's rotary order (architecture "llama"), Gemma's norm weights stored as
// 1 + w, 1-D tensors in f32, hyper-parameters and tokenizer metadata
// (SentencePiece "llama" or byte-level "gpt2" with llama.cpp's pre-tokenizer
// name, the chat template).  What llama.cpp cannot represent (a Gemma query
// scaling it does not compute, irregular sliding layers, ...) is an
// InputError.  Streams tensor by tensor, a bounded number of rows at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>
#include <string>
#include <vector>

#include "gguf/gguf_format.h"

namespace chatvec::gguf {

// --type: f32, f16, bf16, q8_0.  nullopt for anything else.
std::optional<TensorType> tensor_type_from_user(std::string_view s);

// The metadata key that holds a merge's resolved recipe (the JSON of the
// directory's chatvec.json), written when the exported directory has one.
inline constexpr std::string_view kRecipeKey = "chatvec.recipe";

struct ExportOptions {
  TensorType type = TensorType::F16;  // type of the 2-D weights
  std::string name;                   // general.name (default: the directory's name)
  // When not empty: the tokenizer.* key-values to write instead of those
  // built from the directory's tokenizer files (a merge of GGUF inputs).
  std::vector<KeyValue> tokenizer_kvs;
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct ExportSummary {
  std::string architecture;  // llama.cpp's name ("llama", "qwen2", "qwen3", "gemma2", "gemma3")
  size_t tensors = 0;
  uint64_t bytes = 0;
  size_t f16_fallbacks = 0;  // q8_0 requested but the row length is not a multiple of 32
  size_t vocab_size = 0;
  bool chat_template = false;
  bool recipe = false;             // chatvec.recipe written (the directory had a chatvec.json)
  std::string tokenizer_model;  // "llama" / "gpt2"
  std::vector<std::string> notes;  // what was left out or changed, one line each
};

// Write `out_file` (created new) from model directory `dir`.  InputError for
// an unsupported architecture, tensor or tokenizer.
ExportSummary export_gguf(const std::string& dir, const std::string& out_file, const ExportOptions& opts);

// The hyper-parameter key-values of a config.json (general.* excluded).
std::vector<KeyValue> hyperparameter_metadata(const std::string& dir, std::string* arch_out = nullptr);
// The tokenizer.* key-values from a directory's tokenizer files;
// `n_vocab` is the embedding row count (the token list is padded to it).
// Added tokens beyond n_vocab are left out (a line in `notes`).
std::vector<KeyValue> tokenizer_metadata(const std::string& dir, const std::string& arch, uint64_t n_vocab,
                                         std::string* model_out = nullptr, std::vector<std::string>* notes = nullptr);

}  // namespace chatvec::gguf
