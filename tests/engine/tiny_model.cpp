#include "tiny_model.h"

#include <cmath>
#include <vector>

#include "core/file_util.h"
#include "formats/safetensors/safetensors_writer.h"

namespace chatvec::testing {

Json tiny_llama3_config() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 300, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 16,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 64},
    "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": [2, 3]})");
}

Json tiny_qwen2_config() {
  return Json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
    "vocab_size": 256, "hidden_size": 48, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 6, "num_key_value_heads": 2,
    "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": true, "use_sliding_window": false, "hidden_act": "silu",
    "bos_token_id": 1, "eos_token_id": 2})");
}

Json tiny_mistral_config() {
  return Json::parse(R"({
    "architectures": ["MistralForCausalLM"], "model_type": "mistral",
    "vocab_size": 128, "hidden_size": 32, "intermediate_size": 80, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 4, "sliding_window": 8,
    "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2})");
}

namespace {
struct Rng {
  uint64_t s;
  double uniform() {  // [-1, 1)
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return double(s >> 11) * 0x1.0p-53 * 2 - 1;
  }
};
}  // namespace

void write_tiny_model(const std::string& dir, const TinyModelSpec& spec) {
  const Json& c = spec.config;
  const std::string arch = c["architectures"][0];
  const uint64_t V = c["vocab_size"], H = c["hidden_size"], I = c["intermediate_size"], L = c["num_hidden_layers"];
  const uint64_t nh = c["num_attention_heads"], nkv = c.value("num_key_value_heads", nh);
  const uint64_t hd = c.contains("head_dim") ? c["head_dim"].get<uint64_t>() : H / nh;
  const bool bias = arch == "Qwen2ForCausalLM";
  const bool tied = c.value("tie_word_embeddings", false);

  struct T {
    std::string name;
    std::vector<uint64_t> shape;
    double scale, offset;
  };
  std::vector<T> ts;
  auto mat = [&](std::string n, uint64_t r, uint64_t k) { ts.push_back({n, {r, k}, 1.5 / std::sqrt(double(k)), 0}); };
  ts.push_back({"model.embed_tokens.weight", {V, H}, 1.0, 0});
  for (uint64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    ts.push_back({p + "input_layernorm.weight", {H}, 0.3, 1.0});
    mat(p + "self_attn.q_proj.weight", nh * hd, H);
    mat(p + "self_attn.k_proj.weight", nkv * hd, H);
    mat(p + "self_attn.v_proj.weight", nkv * hd, H);
    if (bias) {
      ts.push_back({p + "self_attn.q_proj.bias", {nh * hd}, 0.5, 0});
      ts.push_back({p + "self_attn.k_proj.bias", {nkv * hd}, 0.5, 0});
      ts.push_back({p + "self_attn.v_proj.bias", {nkv * hd}, 0.5, 0});
    }
    mat(p + "self_attn.o_proj.weight", H, nh * hd);
    ts.push_back({p + "post_attention_layernorm.weight", {H}, 0.3, 1.0});
    mat(p + "mlp.gate_proj.weight", I, H);
    mat(p + "mlp.up_proj.weight", I, H);
    mat(p + "mlp.down_proj.weight", H, I);
  }
  ts.push_back({"model.norm.weight", {H}, 0.3, 1.0});
  if (!tied) mat("lm_head.weight", V, H);

  std::vector<TensorSpec> specs;
  for (const T& t : ts) specs.push_back({t.name, spec.dtype, t.shape});
  SafetensorsWriter w(dir, specs, uint64_t(1) << 40, {{"format", "pt"}});
  Rng rng{spec.seed};
  for (const T& t : ts) {
    uint64_t n = 1;
    for (uint64_t d : t.shape) n *= d;
    std::vector<uint8_t> bytes;
    for (uint64_t i = 0; i < n; ++i) {
      const float v = float(t.offset + t.scale * rng.uniform());
      if (spec.dtype == DType::F32) {
        const uint8_t* b = reinterpret_cast<const uint8_t*>(&v);
        bytes.insert(bytes.end(), b, b + 4);
      } else {
        const uint16_t h = spec.dtype == DType::BF16 ? f32_to_bf16(v) : f32_to_f16(v);
        bytes.push_back(uint8_t(h & 0xff));
        bytes.push_back(uint8_t(h >> 8));
      }
    }
    w.append(bytes.data(), bytes.size());
  }
  w.finish();
  Json cfg = c;
  cfg["torch_dtype"] = spec.dtype == DType::F32 ? "float32" : spec.dtype == DType::BF16 ? "bfloat16" : "float16";
  write_file(dir + "/config.json", dump_json_pretty(cfg));
}

}  // namespace chatvec::testing
