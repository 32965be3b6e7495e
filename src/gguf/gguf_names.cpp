#include "gguf/gguf_names.h"

#include <array>
#include <charconv>
#include <utility>

namespace chatvec::gguf {

namespace {
// (HF suffix after "model.layers.N.", GGUF suffix after "blk.N.")
constexpr std::array<std::pair<std::string_view, std::string_view>, 17> kLayer{{
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    {"mlp.gate_proj.bias", "ffn_gate.bias"},
    {"mlp.up_proj.bias", "ffn_up.bias"},
    {"mlp.down_proj.bias", "ffn_down.bias"},
    {"self_attn.rotary_emb.inv_freq", ""},  // recomputed by llama.cpp: dropped
}};
constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kGlobal{{
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
}};

// Parse "<prefix><N>.<rest>": returns (N, rest).
std::optional<std::pair<std::string_view, std::string_view>> split_layer(std::string_view name,
                                                                          std::string_view prefix) {
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  name.remove_prefix(prefix.size());
  const size_t dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return std::nullopt;
  std::string_view num = name.substr(0, dot);
  unsigned long v = 0;
  auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
  if (ec != std::errc() || p != num.data() + num.size() || (num.size() > 1 && num[0] == '0')) return std::nullopt;
  return std::make_pair(num, name.substr(dot + 1));
}
}  // namespace

std::optional<std::string> hf_to_gguf_name(std::string_view hf) {
  for (auto [h, g] : kGlobal)
    if (hf == h) return std::string(g);
  if (auto s = split_layer(hf, "model.layers.")) {
    for (auto [h, g] : kLayer)
      if (s->second == h) {
        if (g.empty()) return std::string();
        return "blk." + std::string(s->first) + "." + std::string(g);
      }
  }
  return std::nullopt;
}

std::optional<std::string> gguf_to_hf_name(std::string_view gg) {
  for (auto [h, g] : kGlobal)
    if (gg == g) return std::string(h);
  if (auto s = split_layer(gg, "blk.")) {
    for (auto [h, g] : kLayer)
      if (!g.empty() && s->second == g) return "model.layers." + std::string(s->first) + "." + std::string(h);
  }
  return std::nullopt;
}

int qk_kind(std::string_view n) {
  auto s = split_layer(n, "blk.");
  if (!s) return 0;
  if (s->second == "attn_q.weight" || s->second == "attn_q.bias") return 1;
  if (s->second == "attn_k.weight" || s->second == "attn_k.bias") return 2;
  return 0;
}

}  // namespace chatvec::gguf
