// Shared pieces of the engine tests: the converted stories260K model and the
// Python float64 reference.
#pragma once

#include <string>
#include <vector>

#include "core/json_util.h"
#include "test_support.h"

namespace chatvec::testing {

// ../shared/models/stories260K
fs::path stories_dir();
// stories260K converted to a Hugging Face directory (once per process);
// empty when the shared model is absent.
std::string converted_stories();

// Logits [tokens.size() * vocab] from tests/engine/reference_llama.py.
std::vector<double> reference_logits(const std::string& model_dir, const std::vector<int64_t>& tokens);
// The reference's --mode nll on a text file (JSON with nll, count, ids).
Json reference_nll_text(const std::string& model_dir, const std::string& text_file, const std::string& tokenizer);

}  // namespace chatvec::testing
