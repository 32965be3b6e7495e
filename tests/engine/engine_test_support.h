// Shared pieces of the engine tests: the converted stories260K model and the
// Python float64 reference.
#pragma once

#include <string>
#include <vector>

#include "core/json_util.h"
#include "engine/llama_model.h"
#include "test_support.h"

namespace chatvec::testing {

// ../shared/models/stories260K
fs::path stories_dir();
// stories260K converted to a Hugging Face directory (once per process);
// empty when the shared model is absent.
std::string converted_stories();

// Logits [tokens.size() * vocab] from tests/engine/reference_llama.py.
std::vector<double> reference_logits(const std::string& model_dir, const std::vector<int64_t>& tokens);
// Several at once (one Python process): logits of each (model, tokens).
struct ReferenceJob {
  std::string model_dir;
  std::vector<int64_t> tokens;
};
std::vector<std::vector<double>> reference_logits_batch(const std::vector<ReferenceJob>& jobs);
// The reference's --mode nll on a text file (JSON with nll, count, ids).
Json reference_nll_text(const std::string& model_dir, const std::string& text_file, const std::string& tokenizer);

// Max over positions of max|ours - ref| / max|ref| (per position's logits),
// running `tokens` one at a time from position 0.
double max_relative_error(LlamaModel& m, const std::vector<int64_t>& tokens, const std::vector<double>& ref);
// n pseudo-random ids below `vocab`, the first being 1.
std::vector<int64_t> some_tokens(int64_t n, int64_t vocab, uint64_t seed);

}  // namespace chatvec::testing
