// Loading a Hugging Face Llama directory into a trainable Transformer, writing
// one back, and the vocabulary edits a training run may make first
// (appending chat special tokens, extending the vocabulary with pieces learned
// from the new text).
#pragma once

#include <string>
#include <vector>

#include "core/json_util.h"
#include "train/transformer.h"

namespace chatvec::train {

// Reads config.json + safetensors (any stored float type, converted to f32).
Transformer<float> load_transformer(const std::string& dir);

// Writes `m` as model.safetensors (f32) into `dir` (which exists and holds
// the auxiliary files: config, tokenizer...), and sets config.json's
// vocab_size and torch_dtype to match.
void write_weights(const Transformer<float>& m, const std::string& dir);

// Appends `tokens` (special tokens when `special`) to the tokenizer files in
// `dir` in place; returns their ids.
std::vector<int> append_tokens_in_place(const std::string& dir, const std::vector<std::string>& tokens, bool special);

// Vocabulary extension: `count` new tokens learned from `lines` by merging
// the most frequent adjacent pairs of existing pieces inside words (the
// right piece never starts a word), as BPE does.  Returns each new token's
// string and the original pieces it stands for.
struct LearnedToken {
  std::string content;
  std::vector<int> pieces;
  int64_t frequency = 0;
};
std::vector<LearnedToken> learn_vocabulary_extension(const std::string& model_dir, const std::vector<std::string>& lines,
                                                     int count, size_t max_tokens = 400000);

}  // namespace chatvec::train
