// Choosing the next token from logits: greedy (temperature 0) or
// temperature + nucleus (top-p) sampling with a seeded generator, so that a
// run is reproducible from its seed.
#pragma once

#include <cstdint>
#include <vector>

namespace chatvec {

struct SamplerOptions {
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;        // 1: sample from the whole distribution
  uint64_t seed = 0;
};

// Index of the largest logit (the first one on ties).
int64_t argmax(const float* logits, int64_t n);

class Sampler {
 public:
  // Throws InputError for a negative temperature or top_p outside (0, 1].
  explicit Sampler(const SamplerOptions& opts);
  int64_t sample(const float* logits, int64_t n);
  // Uniform in [0, 1) from the seeded generator (splitmix64).
  double next_uniform();

 private:
  SamplerOptions opts_;
  uint64_t state_;
  std::vector<std::pair<float, int64_t>> probs_;
};

}  // namespace chatvec
