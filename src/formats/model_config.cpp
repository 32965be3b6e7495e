#include "formats/model_config.h"

#include <cmath>
#include <fmt/core.h>
#include <numbers>

#include "core/error.h"

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

ModelConfig parse_model_config(const Json& j, const std::string& what) {
  if (!j.is_object()) throw InputError(what + ": not a JSON object");
  Reader r{j, what};
  ModelConfig c;
  const Json* arch = r.get("architectures");
  if (!arch || !arch->is_array() || arch->size() != 1 || !(*arch)[0].is_string())
    throw InputError(what + ": field \"architectures\" must be a list of one name");
  c.architecture = (*arch)[0].get<std::string>();
  const bool llama = c.architecture == "LlamaForCausalLM";
  const bool mistral = c.architecture == "MistralForCausalLM";
  const bool qwen2 = c.architecture == "Qwen2ForCausalLM";
  if (!llama && !mistral && !qwen2)
    throw InputError(fmt::format("{}: field \"architectures\": unsupported architecture \"{}\" (supported: "
                                 "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                                 what, c.architecture));
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
  } else {
    if (c.hidden_size % c.num_heads != 0)
      throw InputError(fmt::format("{}: field \"hidden_size\" = {} is not a multiple of num_attention_heads = {}",
                                   what, c.hidden_size, c.num_heads));
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) throw InputError(fmt::format("{}: field \"head_dim\" = {} must be even", what, c.head_dim));
  c.max_position_embeddings = r.integer_or("max_position_embeddings", 2048, 1, kBig);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6, true);
  c.rope_theta = r.number("rope_theta", 10000.0, true);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  if (const Json* act = r.get("hidden_act"); act && !(act->is_string() && act->get<std::string>() == "silu"))
    throw InputError(fmt::format("{}: field \"hidden_act\" = {}: only \"silu\" is supported", what, act->dump()));
  if (r.boolean("mlp_bias", false)) throw InputError(what + ": field \"mlp_bias\" = true is not supported");
  if (qwen2) {
    c.qkv_bias = true;
    if (r.boolean("use_sliding_window", false))
      throw InputError(what + ": field \"use_sliding_window\" = true is not supported");
  } else if (llama) {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
  } else if (mistral) {
    c.sliding_window = r.integer_or("sliding_window", 0, 1, kBig);
  }
  if (const Json* rs = r.get("rope_scaling")) {
    if (!rs->is_object()) throw InputError(what + ": field \"rope_scaling\" must be an object or null");
    std::string type;
    for (const char* key : {"rope_type", "type"}) {
      auto it = rs->find(key);
      if (it != rs->end() && it->is_string()) {
        type = it->get<std::string>();
        break;
      }
    }
    if (type == "default" || type.empty()) {
      c.rope_scaling = RopeScaling::None;
    } else if (type == "linear") {
      c.rope_scaling = RopeScaling::Linear;
      c.rope_factor = r.number("factor", 1.0, true, rs, "rope_scaling.");
    } else if (type == "llama3") {
      c.rope_scaling = RopeScaling::Llama3;
      for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
        if (!rs->contains(key)) throw InputError(fmt::format("{}: missing field \"rope_scaling.{}\"", what, key));
      c.rope_factor = r.number("factor", 1.0, true, rs, "rope_scaling.");
      c.rope_low_freq_factor = r.number("low_freq_factor", 1.0, true, rs, "rope_scaling.");
      c.rope_high_freq_factor = r.number("high_freq_factor", 4.0, true, rs, "rope_scaling.");
      const Json& om = (*rs)["original_max_position_embeddings"];
      if (!om.is_number_integer() || om.get<int64_t>() <= 0)
        throw InputError(what + ": field \"rope_scaling.original_max_position_embeddings\" must be a positive integer");
      c.rope_original_max_position = om.get<int64_t>();
      if (!(c.rope_high_freq_factor > c.rope_low_freq_factor))
        throw InputError(what + ": field \"rope_scaling.high_freq_factor\" must exceed low_freq_factor");
    } else {
      throw InputError(fmt::format("{}: field \"rope_scaling.rope_type\" = \"{}\" is not supported (default, "
                                   "linear, llama3)",
                                   what, type));
    }
  }
  c.bos_token_ids = r.ids("bos_token_id");
  c.eos_token_ids = r.ids("eos_token_id");
  return c;
}

std::vector<double> rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<double> f(half);
  for (int64_t i = 0; i < half; ++i) f[i] = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(c.head_dim));
  if (c.rope_scaling == RopeScaling::Linear) {
    for (double& x : f) x /= c.rope_factor;
  } else if (c.rope_scaling == RopeScaling::Llama3) {
    // Wavelengths longer than original/low_freq_factor are slowed by `factor`,
    // shorter than original/high_freq_factor kept, and those between blended.
    const double old_len = double(c.rope_original_max_position);
    const double low_wavelen = old_len / c.rope_low_freq_factor;
    const double high_wavelen = old_len / c.rope_high_freq_factor;
    for (double& x : f) {
      const double wavelen = 2 * std::numbers::pi / x;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        x /= c.rope_factor;
      } else {
        const double smooth =
            (old_len / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
        x = (1 - smooth) * x / c.rope_factor + smooth * x;
      }
    }
  }
  return f;
}

}  // namespace chatvec
