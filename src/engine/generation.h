// Running a model over token ids: prompt processing + sampling loop, and
// scoring a sequence (negative log-likelihood for perplexity).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/llama_model.h"
#include "engine/sampler.h"

namespace chatvec {

struct GenerationStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prompt_seconds = 0;
  double generate_seconds = 0;
  bool stopped_at_eos = false;
};

// Feed `prompt` from position `start_pos` (the cache already holds positions
// before it), then sample up to `max_new` tokens.  Each sampled token goes to
// `on_token` (return false to stop) unless it is one of `stop_ids`, which
// ends generation.  Stops early at the context length.  Requires a non-empty
// prompt.  `next_pos` (if not null) receives the position after the last
// token fed to the model.
GenerationStats generate_tokens(LlamaModel& model, Sampler& sampler, const std::vector<int64_t>& prompt,
                                int64_t start_pos, int64_t max_new, const std::vector<int64_t>& stop_ids,
                                const std::function<bool(int64_t)>& on_token, int64_t* next_pos = nullptr);

struct SequenceScore {
  double nll = 0;        // sum of -log p(token[i+1] | tokens[..i]) in nats
  int64_t predicted = 0; // number of tokens scored (size - 1)
};

// Score tokens[1..] given their prefixes, from position 0.
SequenceScore score_sequence(LlamaModel& model, const std::vector<int64_t>& tokens);

}  // namespace chatvec
