#include "formats/architecture.h"

#include <charconv>

namespace chatvec {

namespace {

constexpr std::string_view kHfLayer = "model.layers.";
constexpr std::string_view kGgufLayer = "blk.";

// Names other checkpoints give the vocabulary tensors (GPT-2 style, bare
// modules, a misspelling seen in the wild).
constexpr std::string_view kVocabAliases[] = {"transformer.wte.weight", "embed_tokens.weight",
                                              "model.embed_tokens.weights"};

// Parse "<prefix><N>.<rest>": returns (N, rest); N without leading zeros.
std::optional<std::pair<int64_t, std::string_view>> split_layer(std::string_view name, std::string_view prefix) {
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  name.remove_prefix(prefix.size());
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
  std::string_view num = name.substr(0, dot);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
  if (ec != std::errc() || p != num.data() + num.size() || (num.size() > 1 && num[0] == '0')) return std::nullopt;
  return std::make_pair(v, name.substr(dot + 1));
}

}  // namespace

const std::vector<WeightName>& weight_names() {
  static const std::vector<WeightName> names = {
      {WeightRole::TokenEmbedding, false, "model.embed_tokens.weight", "token_embd.weight"},
      {WeightRole::FinalNorm, false, "model.norm.weight", "output_norm.weight"},
      {WeightRole::LmHead, false, "lm_head.weight", "output.weight"},
      {WeightRole::AttnNorm, true, "input_layernorm.weight", "attn_norm.weight"},
      {WeightRole::Q, true, "self_attn.q_proj.weight", "attn_q.weight"},
      {WeightRole::K, true, "self_attn.k_proj.weight", "attn_k.weight"},
      {WeightRole::V, true, "self_attn.v_proj.weight", "attn_v.weight"},
      {WeightRole::O, true, "self_attn.o_proj.weight", "attn_output.weight"},
      {WeightRole::QBias, true, "self_attn.q_proj.bias", "attn_q.bias"},
      {WeightRole::KBias, true, "self_attn.k_proj.bias", "attn_k.bias"},
      {WeightRole::VBias, true, "self_attn.v_proj.bias", "attn_v.bias"},
      {WeightRole::OBias, true, "self_attn.o_proj.bias", "attn_output.bias"},
      {WeightRole::FfnNorm, true, "post_attention_layernorm.weight", "ffn_norm.weight"},
      {WeightRole::Gate, true, "mlp.gate_proj.weight", "ffn_gate.weight"},
      {WeightRole::Up, true, "mlp.up_proj.weight", "ffn_up.weight"},
      {WeightRole::Down, true, "mlp.down_proj.weight", "ffn_down.weight"},
      {WeightRole::GateBias, true, "mlp.gate_proj.bias", "ffn_gate.bias"},
      {WeightRole::UpBias, true, "mlp.up_proj.bias", "ffn_up.bias"},
      {WeightRole::DownBias, true, "mlp.down_proj.bias", "ffn_down.bias"},
      {WeightRole::RotaryInvFreq, true, "self_attn.rotary_emb.inv_freq", ""},
  };
  return names;
}

std::string hf_weight_name(WeightRole role, int64_t layer) {
  for (const WeightName& w : weight_names())
    if (w.role == role)
      return w.per_layer ? std::string(kHfLayer) + std::to_string(layer) + "." + std::string(w.hf) : std::string(w.hf);
  return "";
}

std::optional<NamedWeight> parse_hf_weight_name(std::string_view hf) {
  for (const WeightName& w : weight_names())
    if (!w.per_layer && hf == w.hf) return NamedWeight{w.role, -1};
  if (auto s = split_layer(hf, kHfLayer))
    for (const WeightName& w : weight_names())
      if (w.per_layer && s->second == w.hf) return NamedWeight{w.role, s->first};
  return std::nullopt;
}

std::optional<std::string> hf_to_gguf_name(std::string_view hf) {
  const auto nw = parse_hf_weight_name(hf);
  if (!nw) return std::nullopt;
  for (const WeightName& w : weight_names()) {
    if (w.role != nw->role) continue;
    if (w.gguf.empty()) return std::string();
    return w.per_layer ? std::string(kGgufLayer) + std::to_string(nw->layer) + "." + std::string(w.gguf)
                       : std::string(w.gguf);
  }
  return std::nullopt;
}

std::optional<std::string> gguf_to_hf_name(std::string_view gguf) {
  for (const WeightName& w : weight_names())
    if (!w.per_layer && !w.gguf.empty() && gguf == w.gguf) return std::string(w.hf);
  if (auto s = split_layer(gguf, kGgufLayer))
    for (const WeightName& w : weight_names())
      if (w.per_layer && !w.gguf.empty() && s->second == w.gguf)
        return std::string(kHfLayer) + std::to_string(s->first) + "." + std::string(w.hf);
  return std::nullopt;
}

bool is_vocab_tensor(std::string_view name) {
  if (name == hf_weight_name(WeightRole::TokenEmbedding) || name == hf_weight_name(WeightRole::LmHead)) return true;
  for (std::string_view a : kVocabAliases)
    if (name == a) return true;
  return false;
}

const std::vector<ArchitectureInfo>& architectures() {
  static const std::vector<ArchitectureInfo> archs = {
      {"LlamaForCausalLM", "llama", true, true, true},
      {"MistralForCausalLM", "llama", true, true, true},
      {"Qwen2ForCausalLM", "qwen2", true, true, false},
  };
  return archs;
}

const ArchitectureInfo* find_architecture(std::string_view hf_name) {
  for (const ArchitectureInfo& a : architectures())
    if (a.hf_name == hf_name) return &a;
  return nullptr;
}

}  // namespace chatvec
