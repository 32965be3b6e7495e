#include "gguf/gguf_import.h"

#include <cstring>
#include <filesystem>

#include <fmt/core.h>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/interrupt.h"
#include "core/json_util.h"
#include "formats/safetensors/safetensors_writer.h"
#include "formats/architecture.h"
#include "gguf/gguf_names.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_tokenizer.h"
#include "gguf/gguf_writer.h"
#include "tokenizer/unicode.h"

namespace chatvec::gguf {

namespace fs = std::filesystem;

std::vector<KeyValue> tokenizer_kvs_of(const File& f) {
  std::vector<KeyValue> out;
  for (const auto& kv : f.kvs())
    if (kv.key.rfind("tokenizer.", 0) == 0) out.push_back(kv);
  return out;
}

namespace {

// The shortest decimal that reads back as the same float, as a double
// (1e-05f -> 1e-05 rather than 9.99999974737875e-06).
double float_as_decimal(double v) { return std::stod(fmt::format("{}", float(v))); }

DType dtype_for(uint32_t t) {
  switch (t) {
    case uint32_t(TensorType::F32): return DType::F32;
    case uint32_t(TensorType::F16): return DType::F16;
    case uint32_t(TensorType::BF16): return DType::BF16;
    case uint32_t(TensorType::Q8_0): return DType::F32;
    default: return DType::U8;
  }
}

}  // namespace

Json gguf_config_json(const File& f) {
  const std::string path = f.path();
  const std::string arch = f.architecture();
  const ArchitectureInfo* info = find_gguf_import_architecture(arch);
  if (!info) {
    std::string can;
    for (const ArchitectureInfo& a : architectures())
      if (a.gguf_import && can.find(std::string(a.gguf_arch)) == std::string::npos)
        can += (can.empty() ? "" : ", ") + std::string(a.gguf_arch);
    throw InputError(fmt::format("{}: GGUF architecture {} cannot be read as a model ({} can)", path, arch, can));
  }
  auto key = [&](const char* k) { return arch + "." + k; };
  const uint64_t hidden = f.get_uint(key("embedding_length"));
  const uint64_t heads = f.get_uint(key("attention.head_count"));
  const uint64_t kv_heads = f.find(key("attention.head_count_kv")) ? f.get_uint(key("attention.head_count_kv")) : heads;
  if (heads == 0 || kv_heads == 0) throw InputError(fmt::format("{}: head count 0", path));
  bool has_output = false, has_qkv_bias = false, has_o_bias = false;
  for (const TensorEntry& t : f.tensors()) {
    if (t.name == "output.weight") has_output = true;
    if (t.name.find("attn_q.bias") != std::string::npos) has_qkv_bias = true;
    if (t.name.find("attn_output.bias") != std::string::npos) has_o_bias = true;
  }
  Json c = Json::object();
  c["architectures"] = Json::array({std::string(info->hf_name)});
  c["model_type"] = arch;
  c["hidden_size"] = hidden;
  c["intermediate_size"] = f.get_uint(key("feed_forward_length"));
  c["num_hidden_layers"] = f.get_uint(key("block_count"));
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = kv_heads;
  uint64_t head_dim = hidden / heads;
  if (f.find(key("attention.key_length"))) head_dim = f.get_uint(key("attention.key_length"));
  else if (f.find(key("rope.dimension_count"))) head_dim = f.get_uint(key("rope.dimension_count"));
  c["head_dim"] = head_dim;
  c["max_position_embeddings"] = f.find(key("context_length")) ? f.get_uint(key("context_length")) : 2048;
  c["rms_norm_eps"] = float_as_decimal(f.get_float(key("attention.layer_norm_rms_epsilon")));
  c["rope_theta"] = f.find(key("rope.freq_base")) ? float_as_decimal(f.get_float(key("rope.freq_base"))) : 10000.0;
  if (f.find(key("rope.scaling.type")) && f.get_string(key("rope.scaling.type")) == "linear")
    c["rope_scaling"] = {{"type", "linear"}, {"factor", float_as_decimal(f.get_float(key("rope.scaling.factor")))}};
  else
    c["rope_scaling"] = nullptr;
  const TensorEntry* emb = f.find_tensor("token_embd.weight");
  if (!emb || emb->ne.size() != 2) throw InputError(fmt::format("{}: no 2-D token_embd.weight", path));
  c["vocab_size"] = emb->ne[1];
  c["tie_word_embeddings"] = !has_output;
  if (arch == "llama") {
    c["attention_bias"] = has_qkv_bias || has_o_bias;
    c["mlp_bias"] = false;
  } else if (arch == "qwen3") {
    if (has_qkv_bias || has_o_bias)
      throw InputError(fmt::format("{}: a qwen3 file with attention biases cannot be read (Qwen3ForCausalLM has none)", path));
    c["attention_bias"] = false;
  }
  c["hidden_act"] = "silu";
  if (f.find("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = f.get_uint("tokenizer.ggml.bos_token_id");
  if (f.find("tokenizer.ggml.eos_token_id")) c["eos_token_id"] = f.get_uint("tokenizer.ggml.eos_token_id");
  c["torch_dtype"] = emb->type == uint32_t(TensorType::BF16) ? "bfloat16"
                     : emb->type == uint32_t(TensorType::F16) ? "float16"
                                                                : "float32";
  return c;
}

ImportSummary import_gguf(const std::string& path, const std::string& out_dir,
                          const std::function<void(uint64_t, uint64_t)>& progress) {
  const File f(path);
  ImportSummary sum;
  const std::string arch = f.architecture();
  const ArchitectureInfo* info = find_gguf_import_architecture(arch);
  if (!info) {
    std::string can;
    for (const ArchitectureInfo& a : architectures())
      if (a.gguf_import && can.find(std::string(a.gguf_arch)) == std::string::npos)
        can += (can.empty() ? "" : ", ") + std::string(a.gguf_arch);
    throw InputError(fmt::format("{}: GGUF architecture {} cannot be read as a model ({} can)", path, arch, can));
  }
  sum.architecture = arch;
  auto key = [&](const char* k) { return arch + "." + k; };
  const uint64_t heads = f.get_uint(key("attention.head_count"));
  const uint64_t kv_heads = f.find(key("attention.head_count_kv")) ? f.get_uint(key("attention.head_count_kv")) : heads;
  if (heads == 0 || kv_heads == 0) throw InputError(fmt::format("{}: head count 0", path));

  struct Item {
    const TensorEntry* t;
    uint64_t rows, cols, perm_heads;
  };
  std::vector<Item> items;
  std::vector<TensorSpec> specs;
  for (const TensorEntry& t : f.tensors()) {
    if (t.name == "rope_freqs.weight")
      throw InputError(fmt::format("{}: tensor rope_freqs.weight (llama3 rotary scaling) cannot be carried into "
                                   "config.json; the imported model would run without it",
                                   path));
    const auto hf = gguf_to_hf_name(t.name, info->layout);
    if (!hf) throw InputError(fmt::format("{}: tensor {} has no Hugging Face name", path, t.name));
    const DType dt = dtype_for(t.type);
    if (dt == DType::U8)
      throw InputError(fmt::format("{}: tensor {} is {}; F32, F16, BF16 and Q8_0 can be read", path, t.name, type_name(t.type)));
    if (t.ne.empty() || t.ne.size() > 2)
      throw InputError(fmt::format("{}: tensor {} has {} dimensions (1 or 2 expected)", path, t.name, t.ne.size()));
    Item it{&t, t.ne.size() == 1 ? t.ne[0] : t.ne[1], t.ne.size() == 1 ? 1 : t.ne[0], 0};
    if (info->gguf_permute_qk) {
      const int qk = qk_kind(t.name);
      if (qk) {
        it.perm_heads = qk == 1 ? heads : kv_heads;
        if (it.rows % (2 * it.perm_heads) != 0)
          throw InputError(fmt::format("{}: tensor {} has {} rows, not a multiple of 2 x {} heads", path, t.name, it.rows,
                                       it.perm_heads));
      }
    }
    if (t.type == uint32_t(TensorType::Q8_0)) ++sum.dequantized;
    std::vector<uint64_t> shape = t.ne.size() == 1 ? std::vector<uint64_t>{t.ne[0]} : std::vector<uint64_t>{t.ne[1], t.ne[0]};
    specs.push_back({*hf, dt, shape});
    items.push_back(it);
  }

  // The chat template goes into tokenizer_config.json, which JSON requires
  // to be UTF-8: checked before anything is written.
  if (const Value* tpl = f.find("tokenizer.chat_template"); tpl && tpl->type == ValueType::STRING) {
    if (!unicode::is_valid_utf8(tpl->s))
      throw InputError(fmt::format("{}: tokenizer.chat_template is not valid UTF-8", path));
  }

  // config.json
  const Json c = gguf_config_json(f);
  write_file((fs::path(out_dir) / "config.json").string(), dump_json_pretty(c));

  // tokenizer sidecar
  {
    const std::vector<KeyValue> tk = tokenizer_kvs_of(f);
    Writer w((fs::path(out_dir) / kTokenizerSidecar).string(), tk, {});
    w.finish();
    // The chat template also where Hugging Face tools (and a merge taking
    // the chat model's template) look for it.
    for (const KeyValue& kv : tk) {
      if (kv.key != "tokenizer.chat_template" || kv.value.type != ValueType::STRING) continue;
      // with the BOS/EOS texts the template's bos_token / eos_token take
      Json tc{{"chat_template", kv.value.s}};
      std::pair<std::string, std::string> be;
      try {
        if (f.find("tokenizer.ggml.tokens")) be = gguf_bos_eos_text(f);
      } catch (const InputError&) {
        // (ids out of range: the tokenizer's own reading reports them)
      }
      if (!be.first.empty() && unicode::is_valid_utf8(be.first)) tc["bos_token"] = be.first;
      if (!be.second.empty() && unicode::is_valid_utf8(be.second)) tc["eos_token"] = be.second;
      write_file((fs::path(out_dir) / "tokenizer_config.json").string(), dump_json_pretty(tc));
    }
  }

  // generation_config.json: every id that ends a turn (EOS, EOT, EOM), as
  // Hugging Face writes for Llama-3-style models, when there is more than
  // EOS (config.json keeps the EOS id alone).
  {
    std::vector<int64_t> stops;
    try {
      stops = gguf_stop_ids(f);
    } catch (const InputError&) {
      // (ids out of range: the tokenizer's own reading reports them)
    }
    if (stops.size() > 1) {
      Json gc{{"eos_token_id", stops}};
      if (f.find("tokenizer.ggml.bos_token_id")) gc["bos_token_id"] = f.get_uint("tokenizer.ggml.bos_token_id");
      write_file((fs::path(out_dir) / "generation_config.json").string(), dump_json_pretty(gc));
    }
  }

  // tensors
  SafetensorsWriter sw(out_dir, specs, UINT64_MAX, {{"format", "pt"}});
  const uint64_t total = sw.total_bytes();
  uint64_t done = 0;
  std::vector<float> buf;
  std::vector<uint8_t> out;
  for (const Item& it : items) {
    check_interrupted();
    const TensorEntry& t = *it.t;
    const uint64_t esz = t.type == uint32_t(TensorType::F32) || t.type == uint32_t(TensorType::Q8_0) ? 4 : 2;
    const uint64_t row_bytes = it.cols * esz;
    if (t.type == uint32_t(TensorType::Q8_0)) {
      buf.resize(it.cols);
      for (uint64_t r = 0; r < it.rows; ++r) {
        const uint64_t src = it.perm_heads ? gguf_row_for_hf_row(r, it.rows, it.perm_heads) : r;
        tensor_to_f32(f, t, src * it.cols, it.cols, buf.data());
        sw.append(buf.data(), row_bytes);
      }
    } else if (it.perm_heads) {
      const uint8_t* d = f.data(t);
      for (uint64_t r = 0; r < it.rows; ++r)
        sw.append(d + gguf_row_for_hf_row(r, it.rows, it.perm_heads) * row_bytes, row_bytes);
    } else {
      sw.append(f.data(t), t.nbytes);
    }
    done += it.rows * row_bytes;
    f.mapped().release(f.file_offset(t), t.nbytes);
    if (progress) progress(done, total);
  }
  sw.finish();
  sum.tensors = items.size();
  return sum;
}

}  // namespace chatvec::gguf
