// `chatvec train`: continual pre-training on plain text and supervised chat
// fine-tuning (loss on the assistant's tokens only) of a Hugging Face Llama
// directory on the CPU.  AdamW (PyTorch's formulation), linear warm-up then
// cosine decay, global-norm gradient clipping, seeded batch sampling;
// results are written as Hugging Face directories.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/transformer.h"

namespace chatvec::train {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.0;
};

// AdamW state over the flat parameter vector; step() is torch.optim.AdamW's
// update (decoupled decay p *= 1 - lr*wd, applied only where `decay_mask`).
class AdamW {
 public:
  AdamW(size_t n, std::vector<uint8_t> decay_mask);
  void step(float* params, const float* grads, double lr, const AdamWOptions& o);
  int64_t steps() const { return t_; }

 private:
  std::vector<float> m_, v_;
  std::vector<uint8_t> decay_;
  int64_t t_ = 0;
};

// Scale grads so their global L2 norm is at most max_norm (torch's
// clip_grad_norm_: coefficient max_norm / (norm + 1e-6), capped at 1).
// Returns the norm before clipping.
double clip_grad_norm(float* grads, size_t n, double max_norm);

// Learning rate at (0-based) step `step`: linear warm-up over `warmup`
// steps, then cosine from lr down to lr * min_ratio at the last step.
double lr_at(int64_t step, int64_t steps, int64_t warmup, double lr, double min_ratio);

// One training example: tokens, targets and per-position loss weights.
struct Example {
  std::vector<int32_t> tokens, targets;
  std::vector<float> weights;
};

struct TrainOptions {
  std::string model_dir, data, out;
  std::string mode = "auto";  // auto (.jsonl: chat, else text) | text | chat
  int64_t steps = 100;
  int64_t batch = 16;         // sequences per step
  int64_t seq_len = 128;      // tokens per sequence
  double lr = 1e-3, min_lr_ratio = 0.1, clip = 1.0;
  int64_t warmup = 10;
  double weight_decay = 0.0, beta1 = 0.9, beta2 = 0.95;
  uint64_t seed = 0;
  int64_t save_every = 0;     // also write OUT-step<N> every N steps
  int64_t log_every = 10;
  int64_t max_lines = 0;      // use only the first N lines / conversations (0: all)
  int extend_vocab = 0;       // learn and append this many tokens from the text first
  std::string chat_template;  // Jinja file installed as the chat template
  std::vector<std::string> add_special;  // special tokens appended (rows: mean embedding)
  std::string eos_token;      // becomes tokenizer_config eos_token / first generation EOS
  bool force = false;
  int threads = 0;            // 0: OpenMP default
};

struct TrainReport {
  int64_t steps = 0, tokens = 0, scored_tokens = 0;
  double first_loss = 0, last_loss = 0, seconds = 0;
  int64_t vocab_before = 0, vocab_after = 0;
  int64_t examples = 0;
};

// Runs training; `say` gets progress lines (may be null).
TrainReport run_training(const TrainOptions& o, const std::function<void(const std::string&)>& say);

}  // namespace chatvec::train
