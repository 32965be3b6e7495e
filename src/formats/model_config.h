// The hyper-parameters of a decoder, read from a Hugging Face config.json:
// Llama-family (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
// Qwen3ForCausalLM) and Gemma 2 / Gemma 3 text models.  Besides the shapes,
// the config says how the forward pass differs from Llama's (q/k norms,
// norms around attention and MLP, activation, scaling, soft-capping,
// sliding-window layers, rotary per layer type): what the architecture fixes
// is filled in here, from the architecture name, so that the engine and the
// GGUF export only read fields.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/json_util.h"

namespace chatvec {

enum class RopeScaling { None, Linear, Llama3 };
enum class Activation { Silu, GeluTanh };  // GeluTanh: GELU with the tanh approximation

// One rotary embedding: base and scaling.
struct RopeConfig {
  double theta = 10000.0;
  RopeScaling scaling = RopeScaling::None;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = RopeScaling::None;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 8192;
  bool qkv_bias = false;   // Qwen2, or attention_bias
  bool o_bias = false;     // attention_bias (Llama, Qwen3, Gemma)
  bool tie_word_embeddings = false;
  int64_t sliding_window = 0;  // 0: none
  std::vector<int64_t> bos_token_ids;  // from config.json (may be empty)
  std::vector<int64_t> eos_token_ids;

  // ---- how the forward pass departs from Llama's ----
  Activation activation = Activation::Silu;
  bool qk_norm = false;             // RMSNorm over each head of q and k, before rotary (Qwen3, Gemma 3)
  bool sandwich_norms = false;      // norms on the attention and MLP outputs too (Gemma 2/3)
  bool norm_weight_offset = false;  // RMSNorm scales by (1 + weight) (Gemma)
  double embedding_multiplier = 1.0;  // token embeddings times sqrt(hidden_size) (Gemma)
  double query_pre_attn_scalar = 0;   // scores scaled by query_pre_attn_scalar^-1/2 (Gemma); 0: head_dim
  double attn_logit_softcap = 0;      // scores -> cap * tanh(scores / cap) (Gemma 2); 0: none
  double final_logit_softcap = 0;     // the same on the logits
  // Per layer: whether sliding_window applies (all layers for Mistral,
  // alternate layers for Gemma 2, the layer_types / sliding_window_pattern of
  // Gemma 3).  Empty when sliding_window is 0.
  std::vector<bool> sliding_layers;
  // Gemma 3's sliding layers have their own rotary (rope_local_base_freq, no
  // scaling); false: every layer uses the global one.
  bool has_local_rope = false;
  RopeConfig local_rope;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  bool is_sliding(int64_t layer) const {
    return sliding_window > 0 && size_t(layer) < sliding_layers.size() && sliding_layers[size_t(layer)];
  }
  // The attention score scale.
  double attention_scale() const;
  // The global rotary embedding (rope_theta, rope_scaling), and a layer's.
  RopeConfig global_rope() const;
  RopeConfig rope(int64_t layer) const;
};

// Parse and validate; `what` names the file in errors (InputError naming the
// field).
ModelConfig parse_model_config(const Json& config, const std::string& what);

// Rotary inverse frequencies (head_dim / 2 of them) for `rope`, with its
// scaling applied, computed in double.
std::vector<double> rope_inv_freq(const RopeConfig& rope, int64_t head_dim);
// The same for the global rotary.
std::vector<double> rope_inv_freq(const ModelConfig& c);

}  // namespace chatvec
