// The tokenizer, special tokens and chat template of a GGUF file, from its
// tokenizer.* metadata (the keys `chatvec export gguf` and llama.cpp's
// converter write):
//   tokenizer.ggml.model        "llama" (SentencePiece BPE: tokens, scores,
//                               token_type, <0xNN> byte fallback) or "gpt2"
//                               (byte-level BPE: tokens, token_type, merges)
//   tokenizer.ggml.pre          gpt2 only: "default", "llama-bpe", "llama3",
//                               "llama-v3" (Llama-3 regex), "qwen2",
//                               "deepseek-r1-qwen" (Qwen2 regex), "gpt-2"
//   tokenizer.ggml.{bos,eos,eot,eom,unknown,padding}_token_id,
//   tokenizer.ggml.add_bos_token / add_eos_token / add_space_prefix,
//   tokenizer.chat_template
// This file reads the metadata into TokenizerParts; the tokenizer module
// builds the tokenizer (it knows nothing of GGUF).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "chat_template/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace chatvec::gguf {

class File;

// Whether the file has tokenizer metadata (tokenizer.ggml.model).
bool has_gguf_tokenizer(const File& f);

// The parts of the file's tokenizer; InputError (one line naming the file and
// the key) for missing or mistyped keys, ids out of range, an unknown model
// or pre-tokenizer name.
TokenizerParts gguf_tokenizer_parts(const File& f);
Tokenizer load_gguf_tokenizer(const std::string& path);

// tokenizer.chat_template, when present (a string).
std::optional<std::string> gguf_chat_template(const File& f);

// The text of the BOS and EOS tokens ("" when absent), for a chat
// template's bos_token / eos_token.
std::pair<std::string, std::string> gguf_bos_eos_text(const File& f);

// The file's chat template with its BOS/EOS texts; InputError when the
// metadata has none.
ChatTemplate load_gguf_chat_template(const std::string& path);

// The tokenizer of a model directory whose only tokenizer is a GGUF
// import's tokenizer.gguf sidecar (no tokenizer.json or tokenizer.model):
// that file's; nullopt when the directory has a Hugging Face tokenizer file
// or no sidecar.
std::optional<Tokenizer> load_sidecar_tokenizer(const std::string& dir);

// The ids that end a turn: EOS, EOT and EOM (tokenizer.ggml.*_token_id), in
// that order, without repeats.
std::vector<int64_t> gguf_stop_ids(const File& f);

}  // namespace chatvec::gguf
