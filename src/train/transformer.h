// A trainable Llama decoder (the subset our engine runs: RMSNorm, q/k/v/o
// projections with rotary embeddings and grouped-query attention, SwiGLU MLP,
// tied or separate LM head; no biases, no sliding window) with a hand-written
// backward pass.
//
// All parameters live in one flat vector (and gradients in another with the
// same layout), so the optimizer, clipping and gradient checks work on plain
// arrays.  The scalar type is a template parameter: float for training,
// double for finite-difference gradient checks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "formats/model_config.h"

namespace chatvec::train {

// One tensor inside the flat parameter vector, with its Hugging Face name.
struct ParamSlot {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0, size = 0;
  bool decay = false;  // weight decay applies (matrices, not norm weights)
};

template <class R>
class Transformer {
 public:
  struct LayerSlots {
    size_t attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down;
  };

  // Lays out (zero) parameters for `config`.  Throws InputError for
  // configurations the trainer does not support (biases, sliding window).
  explicit Transformer(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamSlot>& slots() const { return slots_; }
  size_t size() const { return params.size(); }
  const ParamSlot* find(const std::string& name) const;

  // Grow (or keep) the vocabulary to `new_vocab` rows; new rows are zero.
  void resize_vocab(int64_t new_vocab);

  R* embed() { return params.data() + embed_; }
  const R* embed() const { return params.data() + embed_; }
  size_t embed_offset() const { return embed_; }
  size_t lm_head_offset() const { return lm_head_; }  // == embed_offset() when tied
  const LayerSlots& layer(int64_t l) const { return layers_[size_t(l)]; }
  size_t final_norm_offset() const { return final_norm_; }
  const std::vector<double>& inv_freq() const { return inv_freq_; }

  std::vector<R> params;

 private:
  void layout();
  ModelConfig config_;
  std::vector<ParamSlot> slots_;
  std::vector<LayerSlots> layers_;
  size_t embed_ = 0, final_norm_ = 0, lm_head_ = 0;
  std::vector<double> inv_freq_;
};

// Activations kept for the backward pass (grown on demand, reused).
template <class R>
struct Workspace {
  struct Layer {
    std::vector<R> xin, r1, xn1, q, k, v, p, ao, x2, r2, xn2, g, u, h;
  };
  std::vector<Layer> layers;
  std::vector<R> xf, rf, xnf, logits, dx, dxn, dq, dk, dv, dao, dh, dg, du, dp;
  std::vector<R> cos_, sin_;
  int64_t rope_len = 0;
};

// One sequence: tokens[0..T) in, targets[0..T) to predict, weights[t] the
// weight of position t in the loss (0: not scored; the logits of such
// positions are not even computed).  Returns sum_t weights[t] * CE_t.  When
// `grad` is not null, adds d(scale * that sum)/d(params) into it.
template <class R>
double forward_backward(const Transformer<R>& m, const int32_t* tokens, const int32_t* targets, const float* weights,
                        int64_t T, double scale, Workspace<R>& ws, R* grad);

// Transformer<float> <-> Transformer<double> (same layout).
template <class To, class From>
Transformer<To> convert_transformer(const Transformer<From>& m);

}  // namespace chatvec::train
