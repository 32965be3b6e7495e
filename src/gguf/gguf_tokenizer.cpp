#include "gguf/gguf_tokenizer.h"

#include <algorithm>
#include <cstring>

#include <fmt/core.h>

#include "core/error.h"
#include "core/file_util.h"
#include "gguf/gguf_import.h"
#include "gguf/gguf_reader.h"

namespace chatvec::gguf {

namespace {

const Value* array_of(const File& f, const char* key, ValueType elem, bool required) {
  const Value* v = f.find(key);
  if (!v) {
    if (required) throw InputError(fmt::format("{}: GGUF metadata has no {}", f.path(), key));
    return nullptr;
  }
  if (v->type != ValueType::ARRAY || v->array_type != elem)
    throw InputError(fmt::format("{}: GGUF key {} is not an array of {}", f.path(), key, value_type_name(elem)));
  return v;
}

std::optional<int> id_of(const File& f, const std::string& key, size_t n_tokens) {
  const Value* v = f.find(key);
  if (!v) return std::nullopt;
  const uint64_t id = f.get_uint(key);
  if (id >= n_tokens)
    throw InputError(fmt::format("{}: GGUF key {} = {} is out of range ({} tokens)", f.path(), key, id, n_tokens));
  return int(id);
}

bool bool_of(const File& f, const char* key, bool dflt) {
  const Value* v = f.find(key);
  if (!v) return dflt;
  if (v->type != ValueType::BOOL) throw InputError(fmt::format("{}: GGUF key {} is not a bool", f.path(), key));
  return v->u != 0;
}

}  // namespace

bool has_gguf_tokenizer(const File& f) { return f.find("tokenizer.ggml.model") != nullptr; }

TokenizerParts gguf_tokenizer_parts(const File& f) {
  TokenizerParts p;
  p.source = f.path();
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama") p.kind = ModelKind::SentencePieceBpe;
  else if (model == "gpt2") p.kind = ModelKind::ByteLevelBpe;
  else
    throw InputError(fmt::format("{}: tokenizer.ggml.model \"{}\" is not supported (\"llama\" and \"gpt2\" are)",
                                 f.path(), model));
  const Value* toks = array_of(f, "tokenizer.ggml.tokens", ValueType::STRING, true);
  p.tokens = toks->strings;
  const size_t n = p.tokens.size();
  if (n == 0) throw InputError(fmt::format("{}: tokenizer.ggml.tokens is empty", f.path()));
  if (const Value* sc = array_of(f, "tokenizer.ggml.scores", ValueType::F32, p.kind == ModelKind::SentencePieceBpe)) {
    if (sc->count != n)
      throw InputError(fmt::format("{}: tokenizer.ggml.scores has {} entries for {} tokens", f.path(), sc->count, n));
    p.scores.resize(n);
    std::memcpy(p.scores.data(), sc->raw.data(), n * sizeof(float));
  }
  if (const Value* ty = array_of(f, "tokenizer.ggml.token_type", ValueType::I32, false)) {
    if (ty->count != n)
      throw InputError(fmt::format("{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.path(), ty->count, n));
    p.types.resize(n);
    for (size_t i = 0; i < n; ++i) {
      int32_t t;
      std::memcpy(&t, ty->raw.data() + 4 * i, 4);
      if (t < 1 || t > 6)
        throw InputError(fmt::format("{}: tokenizer.ggml.token_type of token {} is {} (1..6 expected)", f.path(), i, t));
      p.types[i] = TokenType(t);
    }
  }
  if (p.kind == ModelKind::ByteLevelBpe) {
    const Value* mg = array_of(f, "tokenizer.ggml.merges", ValueType::STRING, true);
    p.merges.reserve(mg->strings.size());
    for (size_t r = 0; r < mg->strings.size(); ++r) {
      const std::string& m = mg->strings[r];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos || sp + 1 >= m.size())
        throw InputError(fmt::format("{}: tokenizer.ggml.merges entry {} is not two tokens separated by a space",
                                     f.path(), r));
      p.merges.emplace_back(m.substr(0, sp), m.substr(sp + 1));
    }
    const std::string pre = f.find("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : "default";
    if (pre == "default" || pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
      p.pre = SplitPattern::Llama3;
      p.ignore_merges = pre != "default";
    } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
      p.pre = SplitPattern::Qwen2;
    } else if (pre == "gpt-2") {
      p.pre = SplitPattern::Gpt2;
    } else {
      throw InputError(fmt::format("{}: tokenizer.ggml.pre \"{}\" is not supported (default, llama-bpe, llama3, "
                                   "llama-v3, qwen2, deepseek-r1-qwen, gpt-2 are)",
                                   f.path(), pre));
    }
  }
  p.bos = id_of(f, "tokenizer.ggml.bos_token_id", n);
  p.eos = id_of(f, "tokenizer.ggml.eos_token_id", n);
  p.unk = id_of(f, "tokenizer.ggml.unknown_token_id", n);
  p.pad = id_of(f, "tokenizer.ggml.padding_token_id", n);
  (void)id_of(f, "tokenizer.ggml.eot_token_id", n);
  (void)id_of(f, "tokenizer.ggml.eom_token_id", n);
  // llama.cpp's defaults: BOS for SentencePiece vocabularies, not for BPE.
  p.add_bos = bool_of(f, "tokenizer.ggml.add_bos_token", p.kind == ModelKind::SentencePieceBpe);
  p.add_eos = bool_of(f, "tokenizer.ggml.add_eos_token", false);
  p.add_space_prefix = bool_of(f, "tokenizer.ggml.add_space_prefix", true);
  return p;
}

Tokenizer load_gguf_tokenizer(const std::string& path) {
  const File f(path);
  return Tokenizer::from_parts(gguf_tokenizer_parts(f));
}

std::optional<std::string> gguf_chat_template(const File& f) {
  if (!f.find("tokenizer.chat_template")) return std::nullopt;
  return f.get_string("tokenizer.chat_template");
}

std::pair<std::string, std::string> gguf_bos_eos_text(const File& f) {
  const Value* toks = array_of(f, "tokenizer.ggml.tokens", ValueType::STRING, true);
  const size_t n = toks->strings.size();
  auto text = [&](const char* key) {
    const std::optional<int> id = id_of(f, key, n);
    return id ? toks->strings[size_t(*id)] : std::string();
  };
  return {text("tokenizer.ggml.bos_token_id"), text("tokenizer.ggml.eos_token_id")};
}

std::vector<int64_t> gguf_stop_ids(const File& f) {
  const Value* toks = f.find("tokenizer.ggml.tokens");
  const size_t n = toks && toks->type == ValueType::ARRAY ? size_t(toks->count) : 0;
  std::vector<int64_t> out;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const std::optional<int> id = id_of(f, key, n ? n : SIZE_MAX);
    if (id && std::find(out.begin(), out.end(), int64_t(*id)) == out.end()) out.push_back(*id);
  }
  return out;
}

std::optional<Tokenizer> load_sidecar_tokenizer(const std::string& dir) {
  const std::string sidecar = dir + "/" + kTokenizerSidecar;
  if (path_exists(dir + "/tokenizer.json") || path_exists(dir + "/tokenizer.model") || !path_exists(sidecar))
    return std::nullopt;
  return load_gguf_tokenizer(sidecar);
}

ChatTemplate load_gguf_chat_template(const std::string& path) {
  const File f(path);
  std::optional<std::string> t = gguf_chat_template(f);
  if (!t) throw InputError(path + ": no tokenizer.chat_template in the GGUF metadata");
  ChatTemplate tpl(std::move(*t), path + ": tokenizer.chat_template");
  auto [bos, eos] = gguf_bos_eos_text(f);
  tpl.set_special_tokens(std::move(bos), std::move(eos));
  return tpl;
}

}  // namespace chatvec::gguf
