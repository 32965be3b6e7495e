// The hyper-parameters of a Llama-family decoder, read from a Hugging Face
// config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/json_util.h"

namespace chatvec {

enum class RopeScaling { None, Linear, Llama3 };

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
  bool qkv_bias = false;   // Qwen2, or Llama's attention_bias
  bool o_bias = false;     // Llama's attention_bias
  bool tie_word_embeddings = false;
  int64_t sliding_window = 0;  // 0: none
  std::vector<int64_t> bos_token_ids;  // from config.json (may be empty)
  std::vector<int64_t> eos_token_ids;

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
};

// Parse and validate; `what` names the file in errors (InputError naming the
// field).
ModelConfig parse_model_config(const Json& config, const std::string& what);

// Rotary inverse frequencies (head_dim / 2 of them), with the configured
// scaling applied, computed in double.
std::vector<double> rope_inv_freq(const ModelConfig& c);

}  // namespace chatvec
