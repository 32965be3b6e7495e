#include "formats/model_config.h"

#include <algorithm>
#include <cmath>
#include <fmt/core.h>
#include <numbers>

#include "core/error.h"
#include "formats/architecture.h"

namespace chatvec {
namespace {

struct Reader {
  const Json& j;
  const std::string& what;

  const Json* get(const char* key) const {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return nullptr;
    return &*it;
  }
  int64_t integer(const char* key, int64_t min, int64_t max, const Json* from = nullptr) const {
    const Json* v = from ? from : get(key);
    if (!v) throw InputError(fmt::format("{}: missing field \"{}\"", what, key));
    if (!v->is_number_integer())
      throw InputError(fmt::format("{}: field \"{}\" must be an integer, got {}", what, key, v->dump()));
    const int64_t x = v->get<int64_t>();
    if (x < min || x > max)
      throw InputError(fmt::format("{}: field \"{}\" = {} is out of range [{}, {}]", what, key, x, min, max));
    return x;
  }
  int64_t integer_or(const char* key, int64_t dflt, int64_t min, int64_t max) const {
    return get(key) ? integer(key, min, max) : dflt;
  }
  double number(const char* key, double dflt, bool positive, const Json* obj = nullptr, const char* prefix = "") const {
    const Json& o = obj ? *obj : j;
    auto it = o.find(key);
    if (it == o.end() || it->is_null()) return dflt;
    if (!it->is_number())
      throw InputError(fmt::format("{}: field \"{}{}\" must be a number, got {}", what, prefix, key, it->dump()));
    const double x = it->get<double>();
    if (!std::isfinite(x) || (positive && !(x > 0)))
      throw InputError(fmt::format("{}: field \"{}{}\" = {} must be positive", what, prefix, key, x));
    return x;
  }
  bool boolean(const char* key, bool dflt) const {
    const Json* v = get(key);
    if (!v) return dflt;
    if (!v->is_boolean()) throw InputError(fmt::format("{}: field \"{}\" must be true or false", what, key));
    return v->get<bool>();
  }
  std::vector<int64_t> ids(const char* key) const {
    const Json* v = get(key);
    std::vector<int64_t> out;
    if (!v) return out;
    if (v->is_number_integer()) {
      out.push_back(v->get<int64_t>());
    } else if (v->is_array()) {
      for (const auto& e : *v) {
        if (!e.is_number_integer())
          throw InputError(fmt::format("{}: field \"{}\" must be an integer or a list of integers", what, key));
        out.push_back(e.get<int64_t>());
      }
    } else {
      throw InputError(fmt::format("{}: field \"{}\" must be an integer or a list of integers", what, key));
    }
    return out;
  }
};

}  // namespace

namespace {

// The scaling part of a rotary description (rope_scaling, or an entry of
// rope_parameters); `prefix` names the object in errors ("rope_scaling.").
void parse_rope_scaling(const Reader& r, const Json& rs, const std::string& prefix, RopeConfig& out) {
  const std::string& what = r.what;
  if (!rs.is_object()) throw InputError(fmt::format("{}: field \"{}\" must be an object or null", what, prefix.substr(0, prefix.size() - 1)));
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto it = rs.find(key);
    if (it != rs.end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  const char* p = prefix.c_str();
  if (type == "default" || type.empty()) {
    out.scaling = RopeScaling::None;
  } else if (type == "linear") {
    out.scaling = RopeScaling::Linear;
    out.factor = r.number("factor", 1.0, true, &rs, p);
  } else if (type == "llama3") {
    out.scaling = RopeScaling::Llama3;
    for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!rs.contains(key)) throw InputError(fmt::format("{}: missing field \"{}{}\"", what, prefix, key));
    out.factor = r.number("factor", 1.0, true, &rs, p);
    out.low_freq_factor = r.number("low_freq_factor", 1.0, true, &rs, p);
    out.high_freq_factor = r.number("high_freq_factor", 4.0, true, &rs, p);
    const Json& om = rs["original_max_position_embeddings"];
    if (!om.is_number_integer() || om.get<int64_t>() <= 0)
      throw InputError(fmt::format("{}: field \"{}original_max_position_embeddings\" must be a positive integer", what, prefix));
    out.original_max_position = om.get<int64_t>();
    if (!(out.high_freq_factor > out.low_freq_factor))
      throw InputError(fmt::format("{}: field \"{}high_freq_factor\" must exceed low_freq_factor", what, prefix));
  } else {
    throw InputError(fmt::format("{}: field \"{}rope_type\" = \"{}\" is not supported (default, linear, llama3)", what,
                                 prefix, type));
  }
}

enum class Family { Llama, Mistral, Qwen2, Qwen3, Gemma2, Gemma3 };

Family family_of(const std::string& arch, const std::string& what) {
  if (arch == "LlamaForCausalLM") return Family::Llama;
  if (arch == "MistralForCausalLM") return Family::Mistral;
  if (arch == "Qwen2ForCausalLM") return Family::Qwen2;
  if (arch == "Qwen3ForCausalLM") return Family::Qwen3;
  if (arch == "Gemma2ForCausalLM") return Family::Gemma2;
  if (arch == "Gemma3ForCausalLM") return Family::Gemma3;
  std::string supported;
  for (const ArchitectureInfo& a : architectures())
    if (a.engine) supported += (supported.empty() ? "" : ", ") + std::string(a.hf_name);
  const ArchitectureInfo* known = find_architecture(arch);
  throw InputError(fmt::format("{}: field \"architectures\": unsupported architecture \"{}\"{} (supported: {})", what,
                               arch, known && !known->note.empty() ? " (" + std::string(known->note) + ")" : "",
                               supported));
}

}  // namespace

ModelConfig parse_model_config(const Json& j, const std::string& what) {
  if (!j.is_object()) throw InputError(what + ": not a JSON object");
  Reader r{j, what};
  ModelConfig c;
  const Json* arch = r.get("architectures");
  if (!arch || !arch->is_array() || arch->size() != 1 || !(*arch)[0].is_string())
    throw InputError(what + ": field \"architectures\" must be a list of one name");
  c.architecture = (*arch)[0].get<std::string>();
  const Family fam = family_of(c.architecture, what);
  const bool gemma = fam == Family::Gemma2 || fam == Family::Gemma3;
  constexpr int64_t kBig = int64_t(1) << 31;
  c.vocab_size = r.integer("vocab_size", 1, kBig);
  c.hidden_size = r.integer("hidden_size", 1, kBig);
  c.intermediate_size = r.integer("intermediate_size", 1, kBig);
  c.num_layers = r.integer("num_hidden_layers", 1, 100000);
  c.num_heads = r.integer("num_attention_heads", 1, 100000);
  c.num_kv_heads = r.integer_or("num_key_value_heads", c.num_heads, 1, c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    throw InputError(fmt::format("{}: field \"num_key_value_heads\" = {} does not divide num_attention_heads = {}",
                                 what, c.num_kv_heads, c.num_heads));
  if (r.get("head_dim")) {
    c.head_dim = r.integer("head_dim", 2, 1 << 16);
  } else if (gemma) {
    c.head_dim = 256;  // Gemma2Config / Gemma3TextConfig default
  } else {
    if (c.hidden_size % c.num_heads != 0)
      throw InputError(fmt::format("{}: field \"hidden_size\" = {} is not a multiple of num_attention_heads = {}",
                                   what, c.hidden_size, c.num_heads));
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) throw InputError(fmt::format("{}: field \"head_dim\" = {} must be even", what, c.head_dim));
  const int64_t default_ctx = fam == Family::Gemma3 ? 131072 : fam == Family::Gemma2 ? 8192 : 2048;
  c.max_position_embeddings = r.integer_or("max_position_embeddings", default_ctx, 1, kBig);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6, true);
  c.rope_theta = r.number("rope_theta", fam == Family::Gemma3 ? 1e6 : 10000.0, true);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", gemma);  // Gemma's configs default to tied
  if (gemma) {
    // Gemma reads hidden_activation (hidden_act, which some configs also
    // carry, is not used by its modeling code).
    if (const Json* act = r.get("hidden_activation");
        act && !(act->is_string() && act->get<std::string>() == "gelu_pytorch_tanh"))
      throw InputError(fmt::format("{}: field \"hidden_activation\" = {}: only \"gelu_pytorch_tanh\" is supported",
                                   what, act->dump()));
    c.activation = Activation::GeluTanh;
  } else if (const Json* act = r.get("hidden_act"); act && !(act->is_string() && act->get<std::string>() == "silu")) {
    throw InputError(fmt::format("{}: field \"hidden_act\" = {}: only \"silu\" is supported", what, act->dump()));
  }
  if (r.boolean("mlp_bias", false)) throw InputError(what + ": field \"mlp_bias\" = true is not supported");
  switch (fam) {
    case Family::Qwen2:
      c.qkv_bias = true;
      if (r.boolean("use_sliding_window", false))
        throw InputError(what + ": field \"use_sliding_window\" = true is not supported");
      break;
    case Family::Llama:
      c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
      break;
    case Family::Mistral:
      c.sliding_window = r.integer_or("sliding_window", 0, 1, kBig);
      if (c.sliding_window > 0) c.sliding_layers.assign(size_t(c.num_layers), true);
      break;
    case Family::Qwen3:
      c.qk_norm = true;
      if (r.boolean("attention_bias", false))
        throw InputError(what + ": field \"attention_bias\" = true is not supported for Qwen3ForCausalLM");
      if (r.boolean("use_sliding_window", false))
        throw InputError(what + ": field \"use_sliding_window\" = true is not supported");
      break;
    case Family::Gemma2:
    case Family::Gemma3: {
      if (r.boolean("attention_bias", false))
        throw InputError(fmt::format("{}: field \"attention_bias\" = true is not supported for {}", what, c.architecture));
      c.sandwich_norms = true;
      c.norm_weight_offset = true;
      c.embedding_multiplier = std::sqrt(double(c.hidden_size));
      c.query_pre_attn_scalar = r.number("query_pre_attn_scalar", 256.0, true);
      const bool g2 = fam == Family::Gemma2;
      // Absent: the config class's default; null: no soft-capping.
      auto cap = [&](const char* key, double absent) { return j.contains(key) ? r.number(key, 0.0, true) : absent; };
      c.attn_logit_softcap = cap("attn_logit_softcapping", g2 ? 50.0 : 0.0);
      c.final_logit_softcap = cap("final_logit_softcapping", g2 ? 30.0 : 0.0);
      c.sliding_window = r.integer_or("sliding_window", 4096, 1, kBig);
      c.sliding_layers.resize(size_t(c.num_layers));
      if (g2) {
        for (int64_t l = 0; l < c.num_layers; ++l) c.sliding_layers[size_t(l)] = l % 2 == 0;
      } else {
        c.qk_norm = true;
        const int64_t pattern = r.integer_or("sliding_window_pattern", 6, 1, 100000);
        for (int64_t l = 0; l < c.num_layers; ++l) c.sliding_layers[size_t(l)] = (l + 1) % pattern != 0;
        c.has_local_rope = true;
        c.local_rope.theta = r.number("rope_local_base_freq", 10000.0, true);
      }
      break;
    }
  }
  // transformers' explicit list of layer types, when present, decides.
  if (const Json* lt = r.get("layer_types")) {
    if (!lt->is_array() || lt->size() != size_t(c.num_layers))
      throw InputError(fmt::format("{}: field \"layer_types\" must be a list of num_hidden_layers = {} names", what,
                                   c.num_layers));
    std::vector<bool> sliding;
    for (const Json& t : *lt) {
      const std::string s = t.is_string() ? t.get<std::string>() : t.dump();
      if (s != "sliding_attention" && s != "full_attention")
        throw InputError(fmt::format("{}: field \"layer_types\": \"{}\" is not supported (sliding_attention, "
                                     "full_attention)",
                                     what, s));
      sliding.push_back(s == "sliding_attention");
    }
    const bool any_sliding = std::find(sliding.begin(), sliding.end(), true) != sliding.end();
    if (gemma) {
      c.sliding_layers = sliding;
    } else if (any_sliding) {
      throw InputError(fmt::format("{}: field \"layer_types\": sliding-window layers are not supported for {}", what,
                                   c.architecture));
    }
  }

  RopeConfig global;
  global.theta = c.rope_theta;
  if (const Json* rp = r.get("rope_parameters")) {
    // transformers 5: the rotary settings in one object, or one per layer type.
    if (!rp->is_object()) throw InputError(what + ": field \"rope_parameters\" must be an object or null");
    if (rp->contains("full_attention") || rp->contains("sliding_attention")) {
      for (const char* kind : {"full_attention", "sliding_attention"}) {
        auto it = rp->find(kind);
        if (it == rp->end() || it->is_null()) continue;
        const std::string prefix = std::string("rope_parameters.") + kind + ".";
        RopeConfig& dst = std::string(kind) == "full_attention" ? global : c.local_rope;
        parse_rope_scaling(r, *it, prefix, dst);
        dst.theta = r.number("rope_theta", dst.theta, true, &*it, prefix.c_str());
        if (std::string(kind) == "sliding_attention") c.has_local_rope = true;
      }
    } else {
      parse_rope_scaling(r, *rp, "rope_parameters.", global);
      global.theta = r.number("rope_theta", global.theta, true, rp, "rope_parameters.");
    }
  } else if (const Json* rs = r.get("rope_scaling")) {
    parse_rope_scaling(r, *rs, "rope_scaling.", global);
  }
  c.rope_theta = global.theta;
  c.rope_scaling = global.scaling;
  c.rope_factor = global.factor;
  c.rope_low_freq_factor = global.low_freq_factor;
  c.rope_high_freq_factor = global.high_freq_factor;
  c.rope_original_max_position = global.original_max_position;
  c.bos_token_ids = r.ids("bos_token_id");
  c.eos_token_ids = r.ids("eos_token_id");
  return c;
}

double ModelConfig::attention_scale() const {
  return 1.0 / std::sqrt(query_pre_attn_scalar > 0 ? query_pre_attn_scalar : double(head_dim));
}

RopeConfig ModelConfig::global_rope() const {
  RopeConfig g;
  g.theta = rope_theta;
  g.scaling = rope_scaling;
  g.factor = rope_factor;
  g.low_freq_factor = rope_low_freq_factor;
  g.high_freq_factor = rope_high_freq_factor;
  g.original_max_position = rope_original_max_position;
  return g;
}

RopeConfig ModelConfig::rope(int64_t layer) const {
  return has_local_rope && is_sliding(layer) ? local_rope : global_rope();
}

std::vector<double> rope_inv_freq(const ModelConfig& c) { return rope_inv_freq(c.global_rope(), c.head_dim); }

std::vector<double> rope_inv_freq(const RopeConfig& r, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<double> f(half);
  for (int64_t i = 0; i < half; ++i) f[i] = 1.0 / std::pow(r.theta, double(2 * i) / double(head_dim));
  if (r.scaling == RopeScaling::Linear) {
    for (double& x : f) x /= r.factor;
  } else if (r.scaling == RopeScaling::Llama3) {
    // Wavelengths longer than original/low_freq_factor are slowed by `factor`,
    // shorter than original/high_freq_factor kept, and those between blended.
    const double old_len = double(r.original_max_position);
    const double low_wavelen = old_len / r.low_freq_factor;
    const double high_wavelen = old_len / r.high_freq_factor;
    for (double& x : f) {
      const double wavelen = 2 * std::numbers::pi / x;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        x /= r.factor;
      } else {
        const double smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        x = (1 - smooth) * x / r.factor + smooth * x;
      }
    }
  }
  return f;
}

}  // namespace chatvec
