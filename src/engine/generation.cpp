#include "engine/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/interrupt.h"

namespace chatvec {
namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

GenerationStats generate_tokens(LlamaModel& model, Sampler& sampler, const std::vector<int64_t>& prompt,
                                int64_t start_pos, int64_t max_new, const std::vector<int64_t>& stop_ids,
                                const std::function<bool(int64_t)>& on_token, int64_t* next_pos) {
  if (prompt.empty()) throw InputError("empty prompt: nothing to condition on");
  GenerationStats st;
  const int64_t ctx = model.context_length();
  const int64_t V = model.config().vocab_size;
  if (start_pos + int64_t(prompt.size()) > ctx)
    throw InputError("prompt of " + std::to_string(prompt.size()) + " tokens does not fit the context length " +
                     std::to_string(ctx));
  auto t0 = std::chrono::steady_clock::now();
  int64_t pos = start_pos;
  const float* logits = nullptr;
  for (size_t i = 0; i < prompt.size(); i += size_t(LlamaModel::kMaxBatch)) {
    check_interrupted();
    const int64_t n = std::min<int64_t>(LlamaModel::kMaxBatch, int64_t(prompt.size() - i));
    logits = model.forward_batch(prompt.data() + i, n, pos);
    pos += n;
  }
  st.prompt_tokens = int64_t(prompt.size());
  st.prompt_seconds = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < max_new; ++i) {
    check_interrupted();
    const int64_t next = sampler.sample(logits, V);
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      st.stopped_at_eos = true;
      break;
    }
    ++st.generated_tokens;
    if (!on_token(next)) break;
    if (pos >= ctx || i + 1 == max_new) break;
    logits = model.forward(next, pos++);
  }
  st.generate_seconds = seconds_since(t0);
  if (next_pos) *next_pos = pos;
  return st;
}

SequenceScore score_sequence(LlamaModel& model, const std::vector<int64_t>& tokens) {
  SequenceScore s;
  const int64_t V = model.config().vocab_size;
  if (int64_t(tokens.size()) > model.context_length())
    throw InputError("sequence of " + std::to_string(tokens.size()) + " tokens exceeds the context length " +
                     std::to_string(model.context_length()));
  const int64_t inputs = int64_t(tokens.size()) - 1;  // the last token is only predicted
  for (int64_t i0 = 0; i0 < inputs; i0 += LlamaModel::kMaxBatch) {
    check_interrupted();
    const int64_t n = std::min(LlamaModel::kMaxBatch, inputs - i0);
    const float* all = model.forward_batch(tokens.data() + i0, n, i0, true);
    for (int64_t b = 0; b < n; ++b) {
      const float* logits = all + b * V;
      double mx = logits[0];
      for (int64_t j = 1; j < V; ++j) mx = std::max(mx, double(logits[j]));
      double sum = 0;
      for (int64_t j = 0; j < V; ++j) sum += std::exp(double(logits[j]) - mx);
      s.nll -= double(logits[tokens[i0 + b + 1]]) - mx - std::log(sum);
      ++s.predicted;
    }
  }
  return s;
}

}  // namespace chatvec
