#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <fmt/core.h>

#include "core/error.h"

namespace chatvec {

int64_t argmax(const float* logits, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

Sampler::Sampler(const SamplerOptions& opts) : opts_(opts), state_(opts.seed) {
  if (!(opts.temperature >= 0) || !std::isfinite(opts.temperature))
    throw InputError(fmt::format("--temperature {} must be zero or positive", opts.temperature));
  if (!(opts.top_p > 0 && opts.top_p <= 1))
    throw InputError(fmt::format("--top-p {} must be in (0, 1]", opts.top_p));
}

double Sampler::next_uniform() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return double(z >> 11) * 0x1.0p-53;
}

int64_t Sampler::sample(const float* logits, int64_t n) {
  if (opts_.temperature == 0) return argmax(logits, n);
  // Softmax of logits / T in double.
  const double inv_t = 1.0 / opts_.temperature;
  float mx = logits[argmax(logits, n)];
  probs_.resize(size_t(n));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double p = std::exp((double(logits[i]) - double(mx)) * inv_t);
    probs_[i] = {float(p), i};
    sum += p;
  }
  const double r = next_uniform();
  if (opts_.top_p >= 1) {
    double acc = 0, target = r * sum;
    for (int64_t i = 0; i < n; ++i) {
      acc += probs_[i].first;
      if (target < acc) return i;
    }
    return n - 1;
  }
  // Nucleus: the smallest set of most probable tokens whose mass reaches
  // top_p, renormalised.
  std::sort(probs_.begin(), probs_.end(),
            [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  const double cutoff = opts_.top_p * sum;
  double mass = 0;
  size_t keep = 0;
  while (keep < probs_.size()) {
    mass += probs_[keep].first;
    ++keep;
    if (mass >= cutoff) break;
  }
  const double target = r * mass;
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += probs_[i].first;
    if (target < acc) return probs_[i].second;
  }
  return probs_[keep - 1].second;
}

}  // namespace chatvec
