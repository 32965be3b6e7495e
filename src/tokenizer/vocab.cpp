#include "tokenizer/vocab.h"

#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "tokenizer/json_fast.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/sp_proto.h"
#include "tokenizer/vocab_internal.h"

namespace chatvec {

namespace fs = std::filesystem;

namespace {

// Ids above this are refused before anything is allocated for them.
constexpr int64_t kMaxId = 16 * 1024 * 1024;
// Ids may lie at most this far beyond the number of tokens the files define
// (gaps are allowed, but a tiny file naming id 16,000,000 must not make the
// vocabulary allocate for 16 M tokens).
constexpr int64_t kIdSlack = 65536;

bool is_byte_token(std::string_view s) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return s.size() == 6 && s.substr(0, 3) == "<0x" && hex(s[3]) && hex(s[4]) && s[5] == '>';
}

// A token given in a config file: "text", {"content": "text", ...} or null.
std::optional<std::string> token_text(const Json& j, const std::string& what, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  throw InputError(what + ": \"" + key + "\" is neither a string nor an object with \"content\"");
}

bool get_bool(const Json& j, const char* key, bool def, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) throw InputError(what + ": \"" + key + "\" is not a boolean");
  return it->get<bool>();
}

// `context` is only called to build an error message.
template <class Context>
int64_t get_id(const Json& j, const std::string& what, Context context) {
  if (!j.is_number_integer()) throw InputError(what + ": " + std::string(context()) + " is not an integer id");
  int64_t id = j.get<int64_t>();
  if (id < 0 || id >= kMaxId)
    throw InputError(what + ": " + std::string(context()) + " has id " + std::to_string(id) +
                     " out of range (ids are limited to 0.." + std::to_string(kMaxId - 1) + ")");
  return id;
}

AddedToken parse_added(const Json& e, int64_t id, const std::string& what) {
  if (!e.is_object()) throw InputError(what + ": an added token is not an object");
  auto c = e.find("content");
  if (c == e.end() || !c->is_string()) throw InputError(what + ": added token " + std::to_string(id) + " has no \"content\" string");
  AddedToken t;
  t.id = static_cast<int>(id);
  t.content = c->get<std::string>();
  t.special = get_bool(e, "special", false, what);
  t.lstrip = get_bool(e, "lstrip", false, what);
  t.rstrip = get_bool(e, "rstrip", false, what);
  t.normalized = get_bool(e, "normalized", !t.special, what);
  t.single_word = get_bool(e, "single_word", false, what);
  return t;
}

bool contains_type(const Json& j, std::string_view type) {
  if (j.is_object()) {
    auto t = j.find("type");
    if (t != j.end() && t->is_string() && t->get<std::string>() == type) return true;
    for (const auto& [k, v] : j.items())
      if (v.is_structured() && contains_type(v, type)) return true;
  } else if (j.is_array()) {
    for (const auto& v : j)
      if (contains_type(v, type)) return true;
  }
  return false;
}

}  // namespace

const char* token_type_name(TokenType t) {
  switch (t) {
    case TokenType::Normal: return "normal";
    case TokenType::Unknown: return "unknown";
    case TokenType::Control: return "control";
    case TokenType::UserDefined: return "user-defined";
    case TokenType::Unused: return "unused";
    case TokenType::Byte: return "byte";
  }
  return "?";
}

const char* model_kind_name(ModelKind k) {
  switch (k) {
    case ModelKind::SentencePieceBpe: return "sentencepiece-bpe";
    case ModelKind::SentencePieceUnigram: return "sentencepiece-unigram";
    case ModelKind::ByteLevelBpe: return "byte-level-bpe";
  }
  return "?";
}

// Fills a Vocabulary; keeps the loading steps apart from the public class.
class VocabularyBuilder {
 public:
  explicit VocabularyBuilder(Vocabulary& v) : v_(v) {}

  // Refuse an id far beyond the tokens the files define (see kIdSlack).
  void check_id_bound(int64_t id, const std::string& what) const {
    if (id >= id_limit_)
      throw InputError(what + ": token id " + std::to_string(id) + " is far beyond the " +
                       std::to_string(id_limit_ - kIdSlack) + " tokens the files define (ids may exceed that count by at most " +
                       std::to_string(kIdSlack) + ")");
  }
  void set_token(int64_t id, const std::string& text, float score, TokenType type, const std::string& what) {
    check_id_bound(id, what);
    if (id >= static_cast<int64_t>(v_.tokens_.size())) {
      v_.tokens_.resize(id + 1);
      v_.scores_.resize(id + 1, 0.0f);
      v_.types_.resize(id + 1, TokenType::Unused);
      v_.flags_.resize(id + 1, 0);
    }
    if (!v_.tokens_[id].empty() && v_.tokens_[id] != text)
      throw InputError(what + ": id " + std::to_string(id) + " is both \"" + v_.tokens_[id] + "\" and \"" + text + "\"");
    v_.tokens_[id] = text;
    v_.scores_[id] = score;
    v_.types_[id] = type;
    auto [it, inserted] = v_.ids_.emplace(text, static_cast<int>(id));
    if (!inserted && it->second != id) {
      // The same text under two ids: keep the first (as HF does for lookups).
    }
  }

  void add_added(const AddedToken& t, const std::string& what) {
    for (auto& a : v_.added_)
      if (a.id == t.id) {
        if (a.content != t.content)
          throw InputError(what + ": added token " + std::to_string(t.id) + " is \"" + t.content + "\" but \"" +
                           a.content + "\" elsewhere");
        a = t;
        mark_added(t);
        return;
      }
    v_.added_.push_back(t);
    mark_added(t);
  }

  void mark_added(const AddedToken& t) {
    TokenType type = t.special ? TokenType::Control : TokenType::UserDefined;
    if (t.id < static_cast<int>(v_.tokens_.size()) && v_.tokens_[t.id] == t.content &&
        v_.types_[t.id] == TokenType::Unknown)
      type = TokenType::Unknown;
    float score = t.id < static_cast<int>(v_.scores_.size()) ? v_.scores_[t.id] : 0.0f;
    if (t.id < static_cast<int>(v_.tokens_.size()) && !v_.tokens_[t.id].empty() && v_.tokens_[t.id] != t.content)
      throw InputError(v_.source_ + ": added token " + std::to_string(t.id) + " is \"" + t.content +
                       "\" but the vocabulary has \"" + v_.tokens_[t.id] + "\"");
    set_token(t.id, t.content, score, type, v_.source_);
    v_.flags_[t.id] |= 1;
    if (t.special) v_.flags_[t.id] |= 2;
    else v_.flags_[t.id] &= ~2;
  }

  std::optional<int> resolve(const std::optional<std::string>& text) {
    if (!text) return std::nullopt;
    auto it = v_.ids_.find(*text);
    if (it == v_.ids_.end()) return std::nullopt;
    return it->second;
  }

  void load_hf_json(const std::string& path, Json* keep) {
    v_.source_ = path;
    v_.format_ = TokenizerFormat::HfJson;
    std::string text = read_input_file(path, kMaxJsonFileBytes, "limit for JSON files");
    Json j = detail::parse_json_large(text, path);
    text.clear();
    text.shrink_to_fit();
    if (!j.is_object()) throw InputError(path + ": not a tokenizer.json (top level is not an object)");
    auto mit = j.find("model");
    if (mit == j.end() || !mit->is_object()) throw InputError(path + ": no \"model\" object");
    const Json& model = *mit;
    auto type = model.find("type");
    std::string mtype = (type != model.end() && type->is_string()) ? type->get<std::string>() : "";
    if (mtype.empty() && model.contains("merges")) mtype = "BPE";
    if (mtype != "BPE") throw InputError(path + ": unsupported tokenizer model type \"" + mtype + "\" (only BPE)");
    v_.byte_fallback_ = get_bool(model, "byte_fallback", false, path);
    bool byte_level = false;
    for (const char* part : {"pre_tokenizer", "decoder"}) {
      auto p = j.find(part);
      if (p != j.end() && contains_type(*p, "ByteLevel")) byte_level = true;
    }
    v_.kind_ = byte_level ? ModelKind::ByteLevelBpe : ModelKind::SentencePieceBpe;

    auto vit = model.find("vocab");
    if (vit == model.end() || !vit->is_object()) throw InputError(path + ": model has no \"vocab\" object");
    const auto& vocab = vit->get_ref<const Json::object_t&>();
    int64_t max_id = -1;
    for (const auto& entry : vocab) {
      const std::string& tok = entry.first;  // clang < 16 cannot capture a structured binding
      max_id = std::max(max_id, get_id(entry.second, path, [&] { return "vocab entry \"" + tok + "\""; }));
    }
    {
      auto at = j.find("added_tokens");
      const size_t n_added = (at != j.end() && at->is_array()) ? at->size() : 0;
      id_limit_ = std::min<int64_t>(kMaxId, int64_t(vocab.size() + n_added) + kIdSlack);
    }
    check_id_bound(max_id, path);
    v_.tokens_.reserve(max_id + 1 + 1024);
    v_.ids_.reserve(vocab.size() + 1024);
    std::optional<std::string> model_unk;
    auto u = model.find("unk_token");
    if (u != model.end() && u->is_string()) model_unk = u->get<std::string>();
    for (const auto& [tok, idj] : vocab) {
      int64_t id = idj.get<int64_t>();
      TokenType t = TokenType::Normal;
      if (model_unk && tok == *model_unk) t = TokenType::Unknown;
      else if (v_.byte_fallback_ && is_byte_token(tok)) t = TokenType::Byte;
      // HF BPE has no scores; for SentencePiece-style vocabularies rank by id
      // (as SentencePiece's own BPE scores do), else 0.
      float score = (v_.kind_ == ModelKind::SentencePieceBpe && t == TokenType::Normal) ? -static_cast<float>(id) : 0.0f;
      set_token(id, tok, score, t, path);
    }
    v_.base_size_ = static_cast<size_t>(max_id + 1);
    if (v_.ids_.size() != vocab.size()) throw InputError(path + ": model.vocab maps two tokens to the same id");

    auto mg = model.find("merges");
    if (mg != model.end()) {
      if (!mg->is_array()) throw InputError(path + ": model.merges is not an array");
      v_.merges_.reserve(mg->size());
      for (const auto& m : *mg) {
        if (m.is_string()) {
          const std::string& s = m.get_ref<const std::string&>();
          auto sp = s.find(' ');
          if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size())
            throw InputError(path + ": merge \"" + s + "\" is not two tokens separated by a space");
          v_.merges_.emplace_back(s.substr(0, sp), s.substr(sp + 1));
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
          v_.merges_.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        } else {
          throw InputError(path + ": merge " + std::to_string(v_.merges_.size()) + " is neither \"a b\" nor [a, b]");
        }
      }
    }

    auto at = j.find("added_tokens");
    if (at != j.end() && !at->is_null()) {
      if (!at->is_array()) throw InputError(path + ": \"added_tokens\" is not an array");
      for (const auto& e : *at) {
        if (!e.is_object() || !e.contains("id")) throw InputError(path + ": an added token has no \"id\"");
        add_added(parse_added(e, get_id(e["id"], path, [] { return "added token"; }), path), path);
      }
    }
    unk_text_ = model_unk;

    if (auto n = j.find("normalizer"); n != j.end()) v_.adds_space_prefix_ = prepends_space(*n);
    if (auto p = j.find("pre_tokenizer"); p != j.end()) {
      v_.adds_space_prefix_ = v_.adds_space_prefix_ || prepends_space(*p);
      if (v_.kind_ == ModelKind::ByteLevelBpe) {
        v_.pre_tokenizer_ = split_regex_name(*p);
        if (v_.pre_tokenizer_.empty() && byte_level_splits(*p)) v_.pre_tokenizer_ = "gpt2";
        if (v_.pre_tokenizer_.empty()) v_.pre_tokenizer_ = "unknown";
      }
    }
    // The post-processor's template decides whether BOS is added.
    auto pp = j.find("post_processor");
    if (pp != j.end() && pp->is_object()) template_adds_special_ = template_prefix(*pp);
    if (keep) {
      j["model"].erase("vocab");
      j["model"].erase("merges");
      *keep = std::move(j);
    }
  }

  // j[key] when it is a string / bool, else `dflt` (these scans only look).
  static std::string str_of(const Json& j, const char* key, const std::string& dflt = "") {
    auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : dflt;
  }
  static bool bool_of(const Json& j, const char* key, bool dflt) {
    auto it = j.find(key);
    return it != j.end() && it->is_boolean() ? it->get<bool>() : dflt;
  }
  // A Prepend normalizer of U+2581, or a Metaspace that prepends, anywhere
  // in a normalizer or pre-tokenizer (sequences included).
  static bool prepends_space(const Json& j) {
    if (j.is_array()) {
      for (const auto& e : j)
        if (prepends_space(e)) return true;
      return false;
    }
    if (!j.is_object()) return false;
    const std::string type = str_of(j, "type");
    if (type == "Prepend") return str_of(j, "prepend") == "\xE2\x96\x81";
    if (type == "Metaspace") return bool_of(j, "add_prefix_space", true) && str_of(j, "prepend_scheme", "always") != "never";
    for (const char* k : {"normalizers", "pretokenizers"})
      if (auto it = j.find(k); it != j.end() && prepends_space(*it)) return true;
    return false;
  }
  // The name of the first Split regex of a pre-tokenizer ("" when none).
  static std::string split_regex_name(const Json& j) {
    if (j.is_array()) {
      for (const auto& e : j)
        if (auto n = split_regex_name(e); !n.empty()) return n;
      return "";
    }
    if (!j.is_object()) return "";
    if (str_of(j, "type") == "Split") {
      auto pat = j.find("pattern");
      if (pat == j.end() || !pat->is_object() || !pat->contains("Regex") || !(*pat)["Regex"].is_string()) return "";
      SplitPattern sp;
      if (!recognize_split_pattern((*pat)["Regex"].get<std::string>(), sp)) return "unknown";
      return sp == SplitPattern::Llama3 ? "llama3" : sp == SplitPattern::Qwen2 ? "qwen2" : "gpt2";
    }
    if (auto it = j.find("pretokenizers"); it != j.end()) return split_regex_name(*it);
    return "";
  }
  // A ByteLevel pre-tokenizer that applies GPT-2's own regex.
  static bool byte_level_splits(const Json& j) {
    if (j.is_array()) {
      for (const auto& e : j)
        if (byte_level_splits(e)) return true;
      return false;
    }
    if (!j.is_object()) return false;
    if (str_of(j, "type") == "ByteLevel") return bool_of(j, "use_regex", true);
    if (auto it = j.find("pretokenizers"); it != j.end()) return byte_level_splits(*it);
    return false;
  }

  // True when a TemplateProcessing "single" starts with a special token.
  static bool template_prefix(const Json& pp) {
    auto t = pp.find("type");
    if (t == pp.end() || !t->is_string()) return false;
    if (*t == "Sequence") {
      auto ps = pp.find("processors");
      if (ps != pp.end() && ps->is_array())
        for (const auto& p : *ps)
          if (template_prefix(p)) return true;
      return false;
    }
    if (*t != "TemplateProcessing") return false;
    auto single = pp.find("single");
    if (single == pp.end() || !single->is_array() || single->empty()) return false;
    return (*single)[0].is_object() && (*single)[0].contains("SpecialToken");
  }

  void load_sp_model(const std::string& path) {
    v_.source_ = path;
    v_.format_ = TokenizerFormat::SentencePieceModel;
    std::string bytes = read_input_file(path, kMaxJsonFileBytes, "limit for tokenizer files");
    detail::SpModelInfo info = detail::parse_sp_model(bytes, path);
    if (info.pieces.size() >= static_cast<size_t>(kMaxId)) throw InputError(path + ": too many pieces");
    id_limit_ = std::min<int64_t>(kMaxId, int64_t(info.pieces.size()) + kIdSlack);
    v_.tokens_.reserve(info.pieces.size());
    v_.ids_.reserve(info.pieces.size());
    for (size_t i = 0; i < info.pieces.size(); ++i) {
      const auto& p = info.pieces[i];
      if (p.piece.empty()) throw InputError(path + ": piece " + std::to_string(i) + " is empty");
      set_token(static_cast<int64_t>(i), p.piece, p.score, static_cast<TokenType>(p.type), path);
    }
    v_.base_size_ = info.pieces.size();
    v_.byte_fallback_ = info.byte_fallback;
    v_.adds_space_prefix_ = info.add_dummy_prefix;
    v_.kind_ = info.model_type == 2 ? ModelKind::SentencePieceBpe : ModelKind::SentencePieceUnigram;
    auto in_range = [&](int id) -> std::optional<int> {
      if (id >= 0 && id < static_cast<int>(info.pieces.size())) return id;
      return std::nullopt;
    };
    v_.unk_id_ = in_range(info.unk_id);
    v_.bos_id_ = in_range(info.bos_id);
    v_.eos_id_ = in_range(info.eos_id);
    v_.pad_id_ = in_range(info.pad_id);
    // Control and user-defined pieces play the part of added tokens.
    for (size_t i = 0; i < info.pieces.size(); ++i) {
      const auto& p = info.pieces[i];
      if (p.type == 3 || p.type == 4) {
        AddedToken t;
        t.id = static_cast<int>(i);
        t.content = p.piece;
        t.special = p.type == 3;
        t.normalized = false;
        v_.added_.push_back(t);
        v_.flags_[i] |= t.special ? 3 : 1;
      }
    }
    template_adds_special_ = v_.bos_id_.has_value();
  }

  // tokenizer_config.json / special_tokens_map.json beside the tokenizer.
  void apply_configs(const fs::path& dir) {
    std::optional<std::string> bos, eos, unk, pad;
    bool have_bos = false, have_eos = false, have_unk = false, have_pad = false;
    std::optional<bool> add_bos;
    fs::path cfg = dir / "tokenizer_config.json";
    if (fs::exists(cfg)) {
      std::string what = cfg.string();
      Json c = detail::parse_json_large(read_input_file(what, kMaxJsonFileBytes, "limit for JSON files"), what);
      if (!c.is_object()) throw InputError(what + ": top level is not an object");
      auto dec = c.find("added_tokens_decoder");
      if (dec != c.end() && dec->is_object()) {
        id_limit_ = std::min<int64_t>(kMaxId, id_limit_ + int64_t(dec->size()));
        for (const auto& [k, e] : dec->items()) {
          int64_t id;
          try {
            size_t used = 0;
            id = std::stoll(k, &used);
            if (used != k.size()) throw std::invalid_argument(k);
          } catch (const std::exception&) {
            throw InputError(what + ": added_tokens_decoder key \"" + k + "\" is not an id");
          }
          if (id < 0 || id >= kMaxId) throw InputError(what + ": added_tokens_decoder id " + k + " out of range");
          add_added(parse_added(e, id, what), what);
        }
      }
      bos = token_text(c, what, "bos_token"), have_bos = c.contains("bos_token");
      eos = token_text(c, what, "eos_token"), have_eos = c.contains("eos_token");
      unk = token_text(c, what, "unk_token"), have_unk = c.contains("unk_token");
      pad = token_text(c, what, "pad_token"), have_pad = c.contains("pad_token");
      auto ab = c.find("add_bos_token");
      if (ab != c.end() && ab->is_boolean()) add_bos = ab->get<bool>();
    }
    fs::path stm = dir / "special_tokens_map.json";
    if (fs::exists(stm)) {
      std::string what = stm.string();
      Json s = detail::parse_json_large(read_input_file(what, kMaxJsonFileBytes, "limit for JSON files"), what);
      if (!s.is_object()) throw InputError(what + ": top level is not an object");
      if (!have_bos) bos = token_text(s, what, "bos_token"), have_bos = s.contains("bos_token");
      if (!have_eos) eos = token_text(s, what, "eos_token"), have_eos = s.contains("eos_token");
      if (!have_unk) unk = token_text(s, what, "unk_token"), have_unk = s.contains("unk_token");
      if (!have_pad) pad = token_text(s, what, "pad_token"), have_pad = s.contains("pad_token");
    }
    if (!have_unk && !unk) unk = unk_text_;
    if (v_.format_ == TokenizerFormat::HfJson) {
      v_.bos_id_ = resolve(bos);
      v_.eos_id_ = resolve(eos);
      v_.unk_id_ = resolve(unk);
      v_.pad_id_ = resolve(pad);
      v_.add_bos_default_ = template_adds_special_ || (add_bos.value_or(false) && v_.bos_id_.has_value());
    } else {
      // The model's own ids stand unless a config names other tokens.
      if (have_bos) v_.bos_id_ = resolve(bos);
      if (have_eos) v_.eos_id_ = resolve(eos);
      if (have_unk) v_.unk_id_ = resolve(unk);
      if (have_pad) v_.pad_id_ = resolve(pad);
      v_.add_bos_default_ = add_bos.value_or(template_adds_special_) && v_.bos_id_.has_value();
    }
  }

  void load_parts(const TokenizerParts& p) {
    const std::string& what = p.source;
    v_.source_ = what;
    v_.format_ = TokenizerFormat::HfJson;
    v_.kind_ = p.kind;
    const size_t n = p.tokens.size();
    if (n == 0) throw InputError(what + ": the tokenizer has no tokens");
    if (n >= size_t(kMaxId)) throw InputError(what + ": too many tokens (" + std::to_string(n) + ")");
    if (!p.scores.empty() && p.scores.size() != n)
      throw InputError(what + ": " + std::to_string(p.scores.size()) + " token scores for " + std::to_string(n) + " tokens");
    if (!p.types.empty() && p.types.size() != n)
      throw InputError(what + ": " + std::to_string(p.types.size()) + " token types for " + std::to_string(n) + " tokens");
    if (p.kind == ModelKind::SentencePieceBpe && p.scores.empty())
      throw InputError(what + ": a SentencePiece-style tokenizer needs token scores");
    id_limit_ = int64_t(n);
    v_.tokens_.reserve(n);
    v_.ids_.reserve(n);
    bool any_byte = false;
    for (size_t i = 0; i < n; ++i) {
      const TokenType t = p.types.empty() ? TokenType::Normal : p.types[i];
      if (uint8_t(t) < 1 || uint8_t(t) > 6)
        throw InputError(what + ": token " + std::to_string(i) + " has unknown token type " + std::to_string(int(t)));
      if (p.tokens[i].empty() && t != TokenType::Unused)
        throw InputError(what + ": token " + std::to_string(i) + " is empty");
      if (t == TokenType::Byte) any_byte = true;
      set_token(int64_t(i), p.tokens[i], p.scores.empty() ? 0.0f : p.scores[i], t, what);
    }
    v_.base_size_ = n;
    v_.byte_fallback_ = p.kind == ModelKind::SentencePieceBpe && any_byte;
    v_.adds_space_prefix_ = p.kind == ModelKind::SentencePieceBpe && p.add_space_prefix;
    if (p.kind == ModelKind::ByteLevelBpe) {
      v_.pre_tokenizer_ = p.pre == SplitPattern::Llama3 ? "llama3" : p.pre == SplitPattern::Qwen2 ? "qwen2" : "gpt2";
      v_.merges_ = p.merges;
    }
    auto check = [&](const std::optional<int>& id, const char* name) -> std::optional<int> {
      if (id && (*id < 0 || size_t(*id) >= n))
        throw InputError(what + ": " + name + " token id " + std::to_string(*id) + " is out of range (" +
                         std::to_string(n) + " tokens)");
      return id;
    };
    v_.bos_id_ = check(p.bos, "bos");
    v_.eos_id_ = check(p.eos, "eos");
    v_.unk_id_ = check(p.unk, "unknown");
    v_.pad_id_ = check(p.pad, "padding");
    v_.add_bos_default_ = p.add_bos && v_.bos_id_.has_value();
    for (size_t i = 0; i < n; ++i) {
      const TokenType t = v_.types_[i];
      if (t != TokenType::Control && t != TokenType::UserDefined) continue;
      if (v_.tokens_[i].empty()) continue;
      AddedToken a;
      a.id = int(i);
      a.content = v_.tokens_[i];
      a.special = t == TokenType::Control;
      a.normalized = false;
      v_.added_.push_back(a);
      v_.flags_[i] |= a.special ? 3 : 1;
    }
  }

  void finish() {
    for (size_t i = 0; i < v_.tokens_.size(); ++i)
      if (v_.tokens_[i].empty() && v_.types_[i] != TokenType::Unused)
        throw InputError(v_.source_ + ": token " + std::to_string(i) + " is empty");
  }

 private:
  Vocabulary& v_;
  int64_t id_limit_ = kMaxId;  // ids must be below (set from the files' token counts)
  std::optional<std::string> unk_text_;
  bool template_adds_special_ = false;
};

Vocabulary Vocabulary::load(const std::string& path) { return detail::load_vocabulary(path, nullptr); }

Vocabulary detail::load_vocabulary(const std::string& path, Json* tokenizer_json) {
  Vocabulary v;
  VocabularyBuilder b(v);
  fs::path p(path);
  fs::path dir;
  if (fs::is_directory(p)) {
    dir = p;
    if (fs::exists(p / "tokenizer.json")) b.load_hf_json((p / "tokenizer.json").string(), tokenizer_json);
    else if (fs::exists(p / "tokenizer.model")) b.load_sp_model((p / "tokenizer.model").string());
    else throw InputError(path + ": no tokenizer.json or tokenizer.model in this directory");
  } else {
    if (!fs::exists(p)) throw InputError(path + ": no such file");
    dir = p.parent_path();
    if (p.extension() == ".json") b.load_hf_json(path, tokenizer_json);
    else b.load_sp_model(path);
  }
  if (dir.empty()) dir = ".";
  b.apply_configs(dir);
  b.finish();
  return v;
}

Vocabulary detail::vocabulary_from_parts(const TokenizerParts& parts) {
  Vocabulary v;
  VocabularyBuilder b(v);
  b.load_parts(parts);
  b.finish();
  return v;
}

int Vocabulary::id(std::string_view token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? -1 : it->second;
}

const std::string& Vocabulary::token(int id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens_.size())
    throw InputError("token id " + std::to_string(id) + " is out of range (vocabulary of " +
                     std::to_string(tokens_.size()) + ")");
  return tokens_[id];
}

float Vocabulary::score(int id) const {
  token(id);
  return scores_[id];
}

TokenType Vocabulary::type(int id) const {
  token(id);
  return types_[id];
}

bool Vocabulary::is_special(int id) const {
  token(id);
  return flags_[id] & 2;
}

bool Vocabulary::is_added(int id) const {
  token(id);
  return flags_[id] & 1;
}

}  // namespace chatvec
