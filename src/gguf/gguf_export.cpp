#include "gguf/gguf_export.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/core.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/interrupt.h"
#include "core/json_util.h"
#include "formats/model_config.h"
#include "formats/architecture.h"
#include "formats/checkpoint.h"
#include "formats/model_dir.h"
#include "gguf/gguf_import.h"
#include "gguf/gguf_names.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "tokenizer/vocab.h"

namespace chatvec::gguf {

namespace fs = std::filesystem;

std::optional<TensorType> tensor_type_from_user(std::string_view s) {
  if (s == "f32" || s == "F32") return TensorType::F32;
  if (s == "f16" || s == "F16") return TensorType::F16;
  if (s == "bf16" || s == "BF16") return TensorType::BF16;
  if (s == "q8_0" || s == "Q8_0") return TensorType::Q8_0;
  return std::nullopt;
}

namespace {

// The architecture's entry, or InputError for one the export does not write.
const ArchitectureInfo& arch_of(const ModelConfig& c, const std::string& what) {
  const ArchitectureInfo* a = find_architecture(c.architecture);
  if (!a || !a->gguf_export) {
    std::string supported;
    for (const ArchitectureInfo& k : architectures())
      if (k.gguf_export) supported += (supported.empty() ? "" : ", ") + std::string(k.hf_name);
    throw InputError(fmt::format("{}: architecture {} cannot be exported to GGUF ({} can)", what, c.architecture,
                                 supported));
  }
  return *a;
}

// llama.cpp's sliding-window layers: layer l slides when l % P < P - 1
// (P = 0: every layer).  The P that gives `c`'s layers, or InputError.
uint32_t sliding_window_period(const ModelConfig& c, const std::string& what) {
  auto fits = [&](int64_t p) {
    for (int64_t l = 0; l < c.num_layers; ++l)
      if (c.is_sliding(l) != (p == 0 || l % p < p - 1)) return false;
    return true;
  };
  for (int64_t p = 0; p <= c.num_layers + 1; ++p)
    if (p != 1 && fits(p)) return uint32_t(p);
  if (fits(1)) return 1;
  throw InputError(fmt::format("{}: the sliding-window layers of this model (layer_types) follow no period; llama.cpp "
                               "describes them as \"layer l slides when l % P < P - 1\"",
                               what));
}

// llama.cpp computes Gemma's query scaling from the layer count (27B models
// use hidden_size / heads, others head_dim); a config whose
// query_pre_attn_scalar differs cannot be represented.
void check_gemma_query_scale(const ModelConfig& c, const std::string& what, int64_t layers_27b) {
  const double llama_cpp = c.num_layers == layers_27b ? double(c.hidden_size / c.num_heads) : double(c.head_dim);
  if (c.query_pre_attn_scalar != llama_cpp)
    throw InputError(fmt::format("{}: query_pre_attn_scalar = {} cannot be written for llama.cpp, whose {} scales "
                                 "queries by {}^-1/2 for a model of {} layers",
                                 what, c.query_pre_attn_scalar, c.architecture, llama_cpp, c.num_layers));
}

ModelConfig load_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  if (!path_exists(path)) throw InputError(fmt::format("{}: no config.json", dir));
  return parse_model_config(read_json_file(path), path);
}

// Convert n elements starting at element `at` of a stored tensor to fp32.
void to_f32(DType t, const uint8_t* data, uint64_t at, uint64_t n, float* out) {
  convert_to_f32(t, data + at * (dtype_bits(t) / 8), n, out);
}

// Encode n fp32 values as ggml type `t` into out (returns bytes written).
size_t encode(uint32_t t, const float* x, size_t n, uint8_t* out) {
  switch (TensorType(t)) {
    case TensorType::F32: std::memcpy(out, x, n * 4); return n * 4;
    case TensorType::F16: convert_from_f32(x, n, DType::F16, out); return n * 2;
    case TensorType::BF16: convert_from_f32(x, n, DType::BF16, out); return n * 2;
    case TensorType::Q8_0: quantize_q8_0(x, n, out); return n / kQ8Block * kQ8BlockBytes;
  }
  return 0;
}

uint32_t file_type_of(TensorType t) {
  switch (t) {
    case TensorType::F32: return kFileTypeAllF32;
    case TensorType::F16: return kFileTypeMostlyF16;
    case TensorType::BF16: return kFileTypeMostlyBF16;
    case TensorType::Q8_0: return kFileTypeMostlyQ8_0;
  }
  return 0;
}

// Rank of a GGUF tensor name in the output: globals, then layer by layer.
std::pair<int64_t, int> order_key(const std::string& g) {
  if (g == "rope_freqs.weight") return {-2, 0};
  if (g == "token_embd.weight") return {-1, 0};
  if (g == "output_norm.weight") return {INT64_MAX, 0};
  if (g == "output.weight") return {INT64_MAX, 1};
  if (g.rfind("blk.", 0) == 0) {
    const int64_t layer = std::atoll(g.c_str() + 4);
    static const char* kinds[] = {"attn_norm.",   "attn_q.",      "attn_k.",   "attn_v.",
                                  "attn_q_norm.", "attn_k_norm.", "attn_output.", "post_attention_norm.",
                                  "ffn_norm.",    "ffn_gate.",    "ffn_up.",   "ffn_down.", "post_ffw_norm."};
    const std::string rest = g.substr(g.find('.', 4) + 1);
    for (int k = 0; k < 13; ++k)
      if (rest.rfind(kinds[k], 0) == 0) return {layer, k * 2 + (rest.find(".bias") != std::string::npos)};
    return {layer, 100};
  }
  return {INT64_MAX - 1, 0};
}

// The directory's chat template ("" when it has none), by the one rule of
// formats/model_dir.h.
std::string read_chat_template(const std::string& dir) {
  const auto found = find_chat_template(dir);
  return found ? found->text : std::string();
}

bool config_flag(const std::string& dir, const char* key, bool dflt) {
  const fs::path cfg = fs::path(dir) / "tokenizer_config.json";
  if (!path_exists(cfg.string())) return dflt;
  const Json j = read_json_file(cfg.string());
  if (j.is_object() && j.contains(key) && j[key].is_boolean()) return j[key].get<bool>();
  return dflt;
}

std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> f(size_t(half), 1.0f);
  const double pi = 3.14159265358979323846;
  const double low_wavelen = double(c.rope_original_max_position) / c.rope_low_freq_factor;
  const double high_wavelen = double(c.rope_original_max_position) / c.rope_high_freq_factor;
  for (int64_t i = 0; i < half; ++i) {
    const double freq = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(c.head_dim));
    const double wavelen = 2 * pi / freq;
    double factor;
    if (wavelen < high_wavelen) factor = 1.0;
    else if (wavelen > low_wavelen) factor = c.rope_factor;
    else {
      const double smooth = (double(c.rope_original_max_position) / wavelen - c.rope_low_freq_factor) /
                            (c.rope_high_freq_factor - c.rope_low_freq_factor);
      factor = 1.0 / ((1 - smooth) / c.rope_factor + smooth);
    }
    f[size_t(i)] = float(factor);
  }
  return f;
}

}  // namespace

std::vector<KeyValue> hyperparameter_metadata(const std::string& dir, std::string* arch_out) {
  const ModelConfig c = load_config(dir);
  const ArchitectureInfo& info = arch_of(c, dir);
  const std::string arch(info.gguf_arch);
  if (arch_out) *arch_out = arch;
  const bool gemma = arch == "gemma2" || arch == "gemma3";
  std::vector<KeyValue> kv;
  auto u = [&](const std::string& k, int64_t v) { kv.push_back({arch + "." + k, Value::u32(uint32_t(v))}); };
  auto f = [&](const std::string& k, double v) { kv.push_back({arch + "." + k, Value::f32(float(v))}); };
  u("vocab_size", c.vocab_size);
  u("context_length", c.max_position_embeddings);
  u("embedding_length", c.hidden_size);
  u("block_count", c.num_layers);
  u("feed_forward_length", c.intermediate_size);
  u("rope.dimension_count", c.head_dim);
  u("attention.head_count", c.num_heads);
  u("attention.head_count_kv", c.num_kv_heads);
  if (c.head_dim * c.num_heads != c.hidden_size || arch == "qwen3" || gemma) {
    u("attention.key_length", c.head_dim);
    u("attention.value_length", c.head_dim);
  }
  f("attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  f("rope.freq_base", c.rope_theta);
  if (c.rope_scaling == RopeScaling::Linear) {
    kv.push_back({arch + ".rope.scaling.type", Value::str("linear")});
    f("rope.scaling.factor", c.rope_factor);
  } else if (c.rope_scaling == RopeScaling::Llama3 && arch != "llama") {
    throw InputError(fmt::format("{}: llama3 rope scaling can only be written for llama.cpp's llama architecture", dir));
  }
  if (gemma) {
    if (c.attn_logit_softcap > 0) {
      if (arch == "gemma3")
        throw InputError(fmt::format("{}: attn_logit_softcapping cannot be written for llama.cpp's gemma3 (which has "
                                     "none)",
                                     dir));
      f("attn_logit_softcapping", c.attn_logit_softcap);
    } else if (arch == "gemma2") {
      throw InputError(fmt::format("{}: llama.cpp's gemma2 always soft-caps attention scores; this config has "
                                   "attn_logit_softcapping null",
                                   dir));
    }
    if (c.final_logit_softcap > 0) f("final_logit_softcapping", c.final_logit_softcap);
    else if (arch == "gemma2")
      throw InputError(fmt::format("{}: llama.cpp's gemma2 always soft-caps the logits; this config has "
                                   "final_logit_softcapping null",
                                   dir));
    check_gemma_query_scale(c, dir, arch == "gemma2" ? 46 : 62);
    const uint32_t period = sliding_window_period(c, dir);
    if (period != 1 || arch == "gemma2") {
      u("attention.sliding_window", c.sliding_window);
      u("attention.sliding_window_pattern", period);
    }
    if (c.has_local_rope) {
      if (c.local_rope.scaling != RopeScaling::None)
        throw InputError(fmt::format("{}: scaled rotary on sliding layers cannot be written for llama.cpp", dir));
      f("rope.freq_base_swa", c.local_rope.theta);
    }
  }
  return kv;
}

std::vector<KeyValue> tokenizer_metadata(const std::string& dir, const std::string& arch, uint64_t n_vocab,
                                         std::string* model_out, std::vector<std::string>* notes) {
  const Vocabulary v = Vocabulary::load(dir);
  // llama.cpp needs one token per embedding row.  Added tokens beyond the
  // rows (Gemma 3's <image_soft_token> in a 262144-row text model) have no
  // embedding and are left out; other tokens beyond the rows are an error.
  size_t n_tokens = v.size();
  if (n_tokens > n_vocab) {
    for (size_t id = n_vocab; id < n_tokens; ++id)
      if (!v.token(int(id)).empty() && !v.is_added(int(id)))
        throw InputError(fmt::format("{}: the tokenizer has {} tokens but the embedding only {} rows", dir, v.size(),
                                     n_vocab));
    if (notes)
      notes->push_back(fmt::format("{} added token(s) from id {} on have no embedding row and are left out",
                                   n_tokens - n_vocab, n_vocab));
    n_tokens = n_vocab;
  }
  std::string model;
  switch (v.kind()) {
    case ModelKind::SentencePieceBpe: model = "llama"; break;
    case ModelKind::ByteLevelBpe: model = "gpt2"; break;
    case ModelKind::SentencePieceUnigram:
      throw InputError(fmt::format("{}: a SentencePiece unigram tokenizer cannot be written as llama.cpp metadata", dir));
  }
  if (model_out) *model_out = model;
  // llama.cpp's SentencePiece tokenizer merges the adjacent pair whose
  // result has the highest score.  A tokenizer.json ranks merges instead
  // (and may rank a token far from its id: Llama-2's whitespace runs come
  // last): the score of a token is minus the rank of the first merge that
  // makes it, so that llama.cpp merges in the tokenizer.json's order.
  std::vector<float> merge_score;
  if (model == "llama" && v.format() == TokenizerFormat::HfJson) {
    merge_score.assign(v.size(), 0.0f);
    std::vector<bool> seen(v.size(), false);
    std::string joined;
    const auto& merges = v.merges();
    for (size_t r = 0; r < merges.size(); ++r) {
      joined.assign(merges[r].first).append(merges[r].second);
      const int id = v.id(joined);
      if (id < 0 || seen[size_t(id)]) continue;
      seen[size_t(id)] = true;
      merge_score[size_t(id)] = -float(r + 1);
    }
    // Tokens no merge makes (characters, bytes, added tokens) are never a
    // merge result; they keep a score below every merge's.
    for (size_t id = 0; id < v.size(); ++id)
      if (!seen[id]) merge_score[id] = -float(merges.size() + 1 + id);
  }
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  tokens.reserve(n_vocab);
  for (uint64_t id = 0; id < n_vocab; ++id) {
    if (id < n_tokens && !v.token(int(id)).empty()) {
      tokens.push_back(v.token(int(id)));
      scores.push_back(merge_score.empty() ? v.score(int(id)) : merge_score[size_t(id)]);
      types.push_back(int32_t(v.type(int(id))));
    } else {
      tokens.push_back(fmt::format("[PAD{}]", id));
      scores.push_back(0.0f);
      types.push_back(int32_t(TokenType::Unused));
    }
  }
  std::vector<KeyValue> kv;
  kv.push_back({"tokenizer.ggml.model", Value::str(model)});
  if (model == "gpt2") {
    // llama.cpp picks its pre-tokenizer by this name (its converter finds it
    // by hashing the tokenizer's output); ours is recognised by its regex.
    const std::string& pre = v.pre_tokenizer();
    std::string name;
    if (pre == "llama3") name = "llama-bpe";
    else if (pre == "qwen2") name = "qwen2";
    else if (pre == "gpt2") name = "gpt-2";
    else
      throw InputError(fmt::format("{}: the tokenizer.json pre-tokenizer is none that llama.cpp knows by name "
                                   "(Llama-3, Qwen2 or GPT-2 regex)",
                                   dir));
    (void)arch;
    kv.push_back({"tokenizer.ggml.pre", Value::str(name)});
  }
  kv.push_back({"tokenizer.ggml.tokens", Value::str_array(std::move(tokens))});
  if (model == "llama") kv.push_back({"tokenizer.ggml.scores", Value::f32_array(scores)});
  kv.push_back({"tokenizer.ggml.token_type", Value::i32_array(types)});
  if (model == "gpt2") {
    std::vector<std::string> merges;
    merges.reserve(v.merges().size());
    for (const auto& [a, b] : v.merges()) merges.push_back(a + " " + b);
    kv.push_back({"tokenizer.ggml.merges", Value::str_array(std::move(merges))});
  }
  if (v.bos_id()) kv.push_back({"tokenizer.ggml.bos_token_id", Value::u32(uint32_t(*v.bos_id()))});
  // The ids a run stops on: generation_config.json's eos_token_id (a list
  // for Llama-3-style models), else config.json's.  EOS is the tokenizer's
  // (else the first of them); of the others, "<|eom_id|>" becomes
  // tokenizer.ggml.eom_token_id and the first other one eot_token_id, the
  // keys llama.cpp (and our engine) stop on besides EOS.
  std::vector<int64_t> stops = load_config(dir).eos_token_ids;
  if (const fs::path gen = fs::path(dir) / "generation_config.json"; fs::exists(gen)) {
    const Json g = read_json_file(gen.string());
    if (auto it = g.find("eos_token_id"); it != g.end()) {
      std::vector<int64_t> ids;
      bool ok = it->is_number_integer() || it->is_array() || it->is_null();
      if (it->is_number_integer()) ids.push_back(it->get<int64_t>());
      if (it->is_array())
        for (const auto& e : *it) {
          ok &= e.is_number_integer();
          if (e.is_number_integer()) ids.push_back(e.get<int64_t>());
        }
      if (!ok)
        throw InputError(fmt::format("{}: field \"eos_token_id\" must be an integer or a list of integers",
                                     gen.string()));
      if (!ids.empty()) stops = ids;
    }
  }
  std::optional<int> eos = v.eos_id();
  if (!eos && !stops.empty()) eos = int(stops[0]);
  if (eos) kv.push_back({"tokenizer.ggml.eos_token_id", Value::u32(uint32_t(*eos))});
  {
    std::optional<int64_t> eot, eom;
    for (int64_t id : stops) {
      if ((eos && id == *eos) || id < 0 || uint64_t(id) >= n_tokens) continue;
      if (v.token(int(id)) == "<|eom_id|>") {
        if (!eom) eom = id;
      } else if (!eot) {
        eot = id;
      }
    }
    if (eot) kv.push_back({"tokenizer.ggml.eot_token_id", Value::u32(uint32_t(*eot))});
    if (eom) kv.push_back({"tokenizer.ggml.eom_token_id", Value::u32(uint32_t(*eom))});
  }
  if (v.unk_id()) kv.push_back({"tokenizer.ggml.unknown_token_id", Value::u32(uint32_t(*v.unk_id()))});
  if (v.pad_id()) kv.push_back({"tokenizer.ggml.padding_token_id", Value::u32(uint32_t(*v.pad_id()))});
  kv.push_back({"tokenizer.ggml.add_bos_token", Value::boolean(v.add_bos_default())});
  // SentencePiece vocabularies: llama.cpp puts a space before the text
  // unless told not to (Gemma's tokenizers do not).
  if (model == "llama") kv.push_back({"tokenizer.ggml.add_space_prefix", Value::boolean(v.adds_space_prefix())});
  kv.push_back({"tokenizer.ggml.add_eos_token", Value::boolean(config_flag(dir, "add_eos_token", false))});
  const std::string tpl = read_chat_template(dir);
  if (!tpl.empty()) kv.push_back({"tokenizer.chat_template", Value::str(tpl)});
  return kv;
}

ExportSummary export_gguf(const std::string& dir, const std::string& out_file, const ExportOptions& opts) {
  const Checkpoint ck = Checkpoint::open(dir);
  const ModelConfig c = load_config(dir);
  ExportSummary sum;
  std::string arch;
  std::vector<KeyValue> hp = hyperparameter_metadata(dir, &arch);
  const ArchitectureInfo& info = arch_of(c, dir);
  sum.architecture = arch;

  // Plan the tensors.
  struct Item {
    std::string gguf_name;
    const CheckpointTensor* src = nullptr;  // null: rope_freqs
    uint64_t rows = 1, cols = 1;            // as [rows, cols] row-major
    uint64_t heads = 0;                     // q/k permutation (0: none)
    bool one_d = false;
    bool plus_one = false;                  // Gemma norm: store 1 + w
  };
  std::vector<Item> items;
  std::vector<float> rope_factors;
  for (const std::string& hf : ck.names()) {
    const auto g = hf_to_gguf_name(hf, info.layout);
    if (!g)
      throw InputError(fmt::format("{}: tensor {} has no GGUF name (not a weight of {})", dir, hf, c.architecture));
    if (g->empty()) continue;
    const auto role = parse_hf_weight_name(hf, info.layout)->role;
    if (role == WeightRole::LmHead && info.gguf_embedding_head) {
      // llama.cpp's graph reads the token embedding as the head; a tied
      // checkpoint may still carry a copy (autoawq), an untied one cannot be
      // represented.
      if (!c.tie_word_embeddings)
        throw InputError(fmt::format("{}: llama.cpp's {} uses the token embedding as the LM head; this model has its "
                                     "own lm_head.weight (tie_word_embeddings false)",
                                     dir, arch));
      sum.notes.push_back("lm_head.weight left out (llama.cpp's " + arch + " uses the token embedding)");
      continue;
    }
    const CheckpointTensor& t = ck.at(hf);
    const DType dt = t.dtype();
    if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16)
      throw InputError(fmt::format("{}: tensor {} is {}; GGUF export reads F32, F16 and BF16", dir, hf, dtype_name(dt)));
    const auto& shape = t.shape();
    if (shape.empty() || shape.size() > 2)
      throw InputError(fmt::format("{}: tensor {} has {} dimensions (1 or 2 expected)", dir, hf, shape.size()));
    if (std::find(shape.begin(), shape.end(), uint64_t(0)) != shape.end())
      throw InputError(fmt::format("{}: tensor {} has no elements ({}); GGUF has no empty tensors", dir, hf,
                                   shape_string(shape)));
    Item it;
    it.gguf_name = *g;
    it.src = &t;
    it.one_d = shape.size() == 1;
    if (it.one_d) {
      it.rows = shape[0];
      it.cols = 1;
    } else {
      it.rows = shape[0];
      it.cols = shape[1];
    }
    it.plus_one = info.gguf_norm_plus_one &&
                  (role == WeightRole::AttnNorm || role == WeightRole::FfnNorm || role == WeightRole::AttnPostNorm ||
                   role == WeightRole::FfnPostNorm || role == WeightRole::QNorm || role == WeightRole::KNorm ||
                   role == WeightRole::FinalNorm);
    if (info.gguf_permute_qk) {
      const int qk = qk_kind(*g);
      if (qk) {
        it.heads = uint64_t(qk == 1 ? c.num_heads : c.num_kv_heads);
        if (it.heads == 0 || it.rows % (2 * it.heads) != 0)
          throw InputError(fmt::format("{}: tensor {} has {} rows, not a multiple of 2 x {} heads", dir, hf, it.rows, it.heads));
      }
    }
    items.push_back(std::move(it));
  }
  if (c.rope_scaling == RopeScaling::Llama3 && arch == "llama") {
    rope_factors = llama3_rope_factors(c);
    Item it;
    it.gguf_name = "rope_freqs.weight";
    it.rows = rope_factors.size();
    it.one_d = true;
    items.push_back(std::move(it));
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Item& a, const Item& b) { return order_key(a.gguf_name) < order_key(b.gguf_name); });

  std::vector<TensorDecl> decls;
  uint64_t n_vocab = 0;
  for (const Item& it : items) {
    TensorDecl d;
    d.name = it.gguf_name;
    if (it.one_d) {
      d.ne = {it.rows};
      d.type = uint32_t(TensorType::F32);
    } else {
      d.ne = {it.cols, it.rows};
      d.type = uint32_t(opts.type);
      if (opts.type == TensorType::Q8_0 && it.cols % kQ8Block != 0) {
        d.type = uint32_t(TensorType::F16);
        ++sum.f16_fallbacks;
      }
    }
    if (it.gguf_name == "token_embd.weight") n_vocab = it.rows;
    decls.push_back(std::move(d));
  }
  if (n_vocab == 0) throw InputError(fmt::format("{}: no model.embed_tokens.weight", dir));

  std::vector<KeyValue> kvs;
  kvs.push_back({"general.architecture", Value::str(arch)});
  kvs.push_back({"general.type", Value::str("model")});
  kvs.push_back({"general.name", Value::str(opts.name.empty() ? fs::path(dir).lexically_normal().filename().string()
                                                             : opts.name)});
  if (kvs.back().value.s.empty()) kvs.back().value.s = fs::absolute(dir).lexically_normal().parent_path().filename().string();
  kvs.push_back({"general.file_type", Value::u32(file_type_of(opts.type))});
  kvs.push_back({"general.quantization_version", Value::u32(2)});
  kvs.push_back({"general.alignment", Value::u32(kDefaultAlignment)});
  for (auto& kv : hp) {
    if (kv.key == arch + ".vocab_size") kv.value = Value::u32(uint32_t(n_vocab));
    kvs.push_back(std::move(kv));
  }
  if (!opts.tokenizer_kvs.empty()) {
    for (const auto& kv : opts.tokenizer_kvs) kvs.push_back(kv);
    for (const auto& kv : opts.tokenizer_kvs) {
      if (kv.key == "tokenizer.ggml.model") sum.tokenizer_model = kv.value.s;
      if (kv.key == "tokenizer.chat_template") sum.chat_template = true;
    }
  } else if (const fs::path side = fs::path(dir) / kTokenizerSidecar;
             !path_exists((fs::path(dir) / "tokenizer.json").string()) &&
             !path_exists((fs::path(dir) / "tokenizer.model").string()) && path_exists(side.string())) {
    const File tf(side.string());
    // A chat template placed in the directory (e.g. the chat model's, by a
    // merge) takes precedence over the one the sidecar carries.
    const std::string tpl = read_chat_template(dir);
    for (auto& kv : tokenizer_kvs_of(tf)) {
      if (kv.key == "tokenizer.chat_template" && !tpl.empty()) continue;
      if (kv.key == "tokenizer.ggml.model") sum.tokenizer_model = kv.value.s;
      if (kv.key == "tokenizer.chat_template") sum.chat_template = true;
      kvs.push_back(std::move(kv));
    }
    if (!tpl.empty()) {
      kvs.push_back({"tokenizer.chat_template", Value::str(tpl)});
      sum.chat_template = true;
    }
  } else {
    for (auto& kv : tokenizer_metadata(dir, arch, n_vocab, &sum.tokenizer_model, &sum.notes)) {
      if (kv.key == "tokenizer.chat_template") sum.chat_template = true;
      kvs.push_back(std::move(kv));
    }
  }
  sum.vocab_size = n_vocab;
  // A merge's resolved recipe travels in the file, so that `chatvec merge
  // --recipe OUT.gguf` reruns it as `--recipe OUT/chatvec.json` does.
  if (const std::string rec = (fs::path(dir) / "chatvec.json").string(); path_exists(rec)) {
    kvs.push_back({std::string(kRecipeKey), Value::str(read_file(rec))});
    sum.recipe = true;
  }

  Writer w(out_file, kvs, decls);
  const uint64_t total = w.total_bytes();
  std::vector<float> rowbuf;
  std::vector<uint8_t> outbuf;
  constexpr uint64_t kChunkElems = 1u << 20;  // 4 MiB of fp32 per step
  for (size_t k = 0; k < items.size(); ++k) {
    const Item& it = items[k];
    const TensorDecl& d = decls[k];
    if (!it.src) {  // rope_freqs
      w.append(rope_factors.data(), rope_factors.size() * 4);
      continue;
    }
    const uint8_t* data = it.src->data();
    const DType dt = it.src->dtype();
    // Elements per "row" for permutation/encoding purposes.
    const uint64_t rows = it.rows, cols = it.cols;
    const uint64_t rows_per_step = std::max<uint64_t>(1, kChunkElems / cols);
    for (uint64_t r0 = 0; r0 < rows; r0 += rows_per_step) {
      check_interrupted();
      const uint64_t nr = std::min(rows_per_step, rows - r0);
      rowbuf.resize(nr * cols);
      if (it.heads == 0) {
        to_f32(dt, data, r0 * cols, nr * cols, rowbuf.data());
      } else {
        for (uint64_t r = 0; r < nr; ++r)
          to_f32(dt, data, hf_row_for_gguf_row(r0 + r, rows, it.heads) * cols, cols, rowbuf.data() + r * cols);
      }
      if (it.plus_one)  // (1 + w) in fp32, as transformers computes it (and the converter, from bf16 or f32)
        for (float& x : rowbuf) x += 1.0f;
      const TypeTraits tt = type_traits(d.type);
      outbuf.resize(nr * cols / tt.block * tt.bytes);
      const size_t n = encode(d.type, rowbuf.data(), nr * cols, outbuf.data());
      w.append(outbuf.data(), n);
      if (opts.progress) opts.progress(w.written(), total);
    }
    it.src->release_bytes(0, it.src->nbytes());
  }
  w.finish();
  sum.tensors = decls.size();
  sum.bytes = total;
  return sum;
}

}  // namespace chatvec::gguf
