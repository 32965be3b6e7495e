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
  constexpr auto kPre = NormLayout::PreNorm;
  constexpr auto kSandwich = NormLayout::Sandwich;
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
      {WeightRole::QNorm, true, "self_attn.q_norm.weight", "attn_q_norm.weight"},
      {WeightRole::KNorm, true, "self_attn.k_norm.weight", "attn_k_norm.weight"},
      {WeightRole::AttnPostNorm, true, "post_attention_layernorm.weight", "post_attention_norm.weight", kSandwich},
      {WeightRole::FfnNorm, true, "post_attention_layernorm.weight", "ffn_norm.weight", kPre},
      {WeightRole::FfnNorm, true, "pre_feedforward_layernorm.weight", "ffn_norm.weight", kSandwich},
      {WeightRole::FfnPostNorm, true, "post_feedforward_layernorm.weight", "post_ffw_norm.weight", kSandwich},
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

namespace {
bool in_layout(const WeightName& w, NormLayout layout) { return !w.only_in || *w.only_in == layout; }

std::string full_name(const WeightName& w, std::string_view prefix, std::string_view suffix, int64_t layer) {
  return w.per_layer ? std::string(prefix) + std::to_string(layer) + "." + std::string(suffix) : std::string(suffix);
}
}  // namespace

std::string hf_weight_name(WeightRole role, int64_t layer, NormLayout layout) {
  for (const WeightName& w : weight_names())
    if (w.role == role && in_layout(w, layout)) return full_name(w, kHfLayer, w.hf, layer);
  return "";
}

std::optional<NamedWeight> parse_hf_weight_name(std::string_view hf, NormLayout layout) {
  for (const WeightName& w : weight_names())
    if (!w.per_layer && hf == w.hf) return NamedWeight{w.role, -1};
  if (auto s = split_layer(hf, kHfLayer))
    for (const WeightName& w : weight_names())
      if (w.per_layer && in_layout(w, layout) && s->second == w.hf) return NamedWeight{w.role, s->first};
  return std::nullopt;
}

std::optional<NamedWeight> parse_gguf_weight_name(std::string_view gguf, NormLayout layout) {
  for (const WeightName& w : weight_names())
    if (!w.per_layer && !w.gguf.empty() && gguf == w.gguf) return NamedWeight{w.role, -1};
  if (auto s = split_layer(gguf, kGgufLayer))
    for (const WeightName& w : weight_names())
      if (w.per_layer && in_layout(w, layout) && !w.gguf.empty() && s->second == w.gguf)
        return NamedWeight{w.role, s->first};
  return std::nullopt;
}

std::optional<std::string> hf_to_gguf_name(std::string_view hf, NormLayout layout) {
  const auto nw = parse_hf_weight_name(hf, layout);
  if (!nw) return std::nullopt;
  for (const WeightName& w : weight_names()) {
    if (w.role != nw->role || !in_layout(w, layout)) continue;
    if (w.gguf.empty()) return std::string();
    return full_name(w, kGgufLayer, w.gguf, nw->layer);
  }
  return std::nullopt;
}

std::optional<std::string> gguf_to_hf_name(std::string_view gguf, NormLayout layout) {
  const auto nw = parse_gguf_weight_name(gguf, layout);
  if (!nw) return std::nullopt;
  return hf_weight_name(nw->role, nw->layer, layout);
}

bool is_vocab_tensor(std::string_view name) {
  if (name == hf_weight_name(WeightRole::TokenEmbedding) || name == hf_weight_name(WeightRole::LmHead)) return true;
  for (std::string_view a : kVocabAliases)
    if (name == a) return true;
  return false;
}

const std::vector<ArchitectureInfo>& architectures() {
  auto arch = [](std::string_view hf, std::string_view gguf) {
    ArchitectureInfo a;
    a.hf_name = hf;
    a.gguf_arch = gguf;
    a.engine = a.gguf_export = true;
    return a;
  };
  static const std::vector<ArchitectureInfo> archs = [&] {
    std::vector<ArchitectureInfo> v;
    ArchitectureInfo a = arch("LlamaForCausalLM", "llama");
    a.gguf_permute_qk = a.gguf_import = true;
    v.push_back(a);
    a = arch("MistralForCausalLM", "llama");
    a.gguf_permute_qk = true;
    v.push_back(a);
    a = arch("Qwen2ForCausalLM", "qwen2");
    a.gguf_import = true;
    v.push_back(a);
    a = arch("Qwen3ForCausalLM", "qwen3");
    a.gguf_import = true;
    v.push_back(a);
    a = arch("Gemma2ForCausalLM", "gemma2");
    a.layout = NormLayout::Sandwich;
    a.gguf_norm_plus_one = true;
    a.gguf_embedding_head = true;
    v.push_back(a);
    a = arch("Gemma3ForCausalLM", "gemma3");
    a.layout = NormLayout::Sandwich;
    a.gguf_norm_plus_one = true;
    v.push_back(a);
    // Listed to say what chatvec does with them: the merge pairs tensors by
    // name and works for these too.
    a = ArchitectureInfo{};
    a.hf_name = "Gemma3ForConditionalGeneration";
    a.note = "multimodal Gemma 3 (language_model.* and vision tensors); the engine runs text-only Gemma3ForCausalLM";
    v.push_back(a);
    a.hf_name = "Qwen3MoeForCausalLM";
    a.note = "mixture-of-experts layers are not implemented";
    v.push_back(a);
    a.hf_name = "Qwen2MoeForCausalLM";
    v.push_back(a);
    a.hf_name = "GemmaForCausalLM";
    a.note = "Gemma 1 is not implemented (Gemma 2 and 3 are)";
    v.push_back(a);
    return v;
  }();
  return archs;
}

const ArchitectureInfo* find_architecture(std::string_view hf_name) {
  for (const ArchitectureInfo& a : architectures())
    if (a.hf_name == hf_name) return &a;
  return nullptr;
}

const ArchitectureInfo* find_gguf_import_architecture(std::string_view gguf_arch) {
  for (const ArchitectureInfo& a : architectures())
    if (a.gguf_import && a.gguf_arch == gguf_arch) return &a;
  return nullptr;
}

NormLayout norm_layout_of(std::string_view hf_name) {
  const ArchitectureInfo* a = find_architecture(hf_name);
  return a ? a->layout : NormLayout::PreNorm;
}

ArchitectureSupport architecture_support(std::string_view hf_name) {
  ArchitectureSupport s;
  s.architecture = std::string(hf_name);
  const ArchitectureInfo* a = find_architecture(hf_name);
  if (!a) {
    s.note = "not an architecture chatvec knows";
    return s;
  }
  s.known = true;
  s.engine = a->engine;
  s.gguf_export = a->gguf_export;
  s.gguf_import = a->gguf_import;
  if (a->gguf_export) s.gguf_arch = std::string(a->gguf_arch);
  s.note = std::string(a->note);
  return s;
}

std::string describe(const ArchitectureSupport& s) {
  auto yn = [](bool b) { return b ? "yes" : "no"; };
  std::string out = s.architecture + ": merge " + yn(s.merge) + ", engine " + yn(s.engine) + ", GGUF export " +
                    yn(s.gguf_export);
  if (s.gguf_export) out += " (llama.cpp " + s.gguf_arch + ")";
  out += std::string(", GGUF import ") + yn(s.gguf_import);
  if (!s.note.empty()) out += " (" + s.note + ")";
  return out;
}

std::string describe_gguf_architecture(std::string_view gguf_arch) {
  const ArchitectureInfo* a = find_gguf_import_architecture(gguf_arch);
  if (a) return std::string(gguf_arch) + ": chatvec reads it back as " + std::string(a->hf_name);
  std::string can;
  for (const ArchitectureInfo& k : architectures())
    if (k.gguf_import && can.find(std::string(k.gguf_arch)) == std::string::npos)
      can += (can.empty() ? "" : ", ") + std::string(k.gguf_arch);
  return std::string(gguf_arch) + ": chatvec cannot read it back (GGUF import reads " + can + ")";
}

}  // namespace chatvec
