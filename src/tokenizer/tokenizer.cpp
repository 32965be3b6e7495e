#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <queue>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/sp_proto.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab_internal.h"

namespace chatvec {

namespace fs = std::filesystem;

struct Tokenizer::Impl {
  Vocabulary vocab;
  explicit Impl(Vocabulary v) : vocab(std::move(v)) {}
  virtual ~Impl() = default;
  virtual std::vector<int> encode(std::string_view text, bool add_bos) const = 0;
  virtual bool adds_bos() const = 0;
  virtual std::string decode(const std::vector<int>& ids, bool skip_special) const = 0;
  virtual std::string decode_piece(int prev_id, int id) const = 0;
};

namespace {

const std::string kSpace = "\xE2\x96\x81";  // ▁

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t pos = 0;
  for (size_t f; (f = s.find(from, pos)) != std::string::npos; pos = f + from.size()) {
    out.append(s, pos, f - pos);
    out.append(to);
  }
  if (pos == 0) return;
  out.append(s, pos);
  s = std::move(out);
}

int byte_token_value(std::string_view s) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  if (s.size() != 6 || s.substr(0, 3) != "<0x" || s[5] != '>') return -1;
  int a = hex(s[3]), b = hex(s[4]);
  return (a < 0 || b < 0) ? -1 : a * 16 + b;
}

bool is_js_space_byte_trim(char32_t c) { return unicode::is_space(c); }

// Trim JavaScript whitespace from the start or end of s.
std::string_view trim_start(std::string_view s) {
  std::vector<char32_t> cps;
  std::vector<uint32_t> off;
  unicode::decode_utf8(s, cps, &off);
  size_t i = 0;
  while (i < cps.size() && is_js_space_byte_trim(cps[i])) ++i;
  return s.substr(off[i]);
}
std::string_view trim_end(std::string_view s) {
  std::vector<char32_t> cps;
  std::vector<uint32_t> off;
  unicode::decode_utf8(s, cps, &off);
  size_t i = cps.size();
  while (i > 0 && is_js_space_byte_trim(cps[i - 1])) --i;
  return s.substr(0, off[i]);
}

// GPT-2's byte <-> printable character table.
struct ByteMap {
  std::array<std::string, 256> to_text;  // UTF-8 of the character for each byte
  std::array<int, 512> to_byte;          // character (< 512) -> byte, or -1
  ByteMap() {
    to_byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
      unicode::append_utf8(to_text[b], cp);
      to_byte[cp] = b;
    }
  }
};
const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

// ---------------------------------------------------------------- tokenizer.json

struct NormStep {
  enum Kind { Nfc, Prepend, Replace } kind;
  std::string a, b;
};

struct PreStep {
  enum Kind { Split, SplitString, ByteLevel, Metaspace };
  // What a SplitString does with each occurrence of its string (Hugging
  // Face's SplitDelimiterBehavior).
  enum Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };
  explicit PreStep(Kind k) : kind(k) {}
  Kind kind;
  SplitPattern pattern = SplitPattern::Gpt2;
  std::string delimiter;  // SplitString
  Behavior behavior = Isolated;
  bool use_regex = false;
  bool add_prefix_space = false;
  std::string replacement;
  std::string scheme = "always";  // Metaspace prepend_scheme
};

class HfTokenizer : public Tokenizer::Impl {
 public:
  HfTokenizer(Vocabulary v, const Json& j) : Impl(std::move(v)) {
    const std::string& what = vocab.source();
    byte_level_ = vocab.kind() == ModelKind::ByteLevelBpe;
    const Json& model = j.at("model");
    auto im = model.find("ignore_merges");
    ignore_merges_ = im != model.end() && im->is_boolean() && im->get<bool>();
    byte_fallback_ = vocab.byte_fallback();
    unk_id_ = -1;
    auto u = model.find("unk_token");
    if (u != model.end() && u->is_string()) unk_id_ = vocab.id(u->get<std::string>());
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      auto it = model.find(key);
      if (it != model.end() && it->is_string() && !it->get<std::string>().empty())
        throw InputError(what + ": BPE option \"" + key + "\" is not supported");
    }

    if (auto n = j.find("normalizer"); n != j.end() && !n->is_null()) parse_normalizer(*n, what);
    if (auto p = j.find("pre_tokenizer"); p != j.end() && !p->is_null()) parse_pretokenizer(*p, what);
    if (auto p = j.find("post_processor"); p != j.end() && !p->is_null()) parse_post(*p, what);
    if (auto d = j.find("decoder"); d != j.end() && !d->is_null()) parse_decoder(*d, what);
    init();
  }

  // A byte-level BPE from parts: the pre-tokenizer regex, then the byte
  // alphabet (as tokenizer.json's Split + ByteLevel(use_regex=false)).
  HfTokenizer(Vocabulary v, const TokenizerParts& p) : Impl(std::move(v)) {
    byte_level_ = true;
    ignore_merges_ = p.ignore_merges;
    unk_id_ = vocab.unk_id().value_or(-1);
    PreStep split(PreStep::Split);
    split.pattern = p.pre;
    pre_.push_back(split);
    PreStep bl(PreStep::ByteLevel);
    bl.use_regex = false;
    pre_.push_back(bl);
    if (p.add_bos && vocab.bos_id()) prefix_.push_back(*vocab.bos_id());
    if (p.add_eos && vocab.eos_id()) suffix_.push_back(*vocab.eos_id());
    init();
  }

  void init() {
    // Merges: (left id, right id) -> (rank, merged id).
    const auto& merges = vocab.merges();
    merges_.reserve(merges.size() * 2);
    std::string joined;
    for (size_t r = 0; r < merges.size(); ++r) {
      int a = vocab.id(merges[r].first), b = vocab.id(merges[r].second);
      if (a < 0 || b < 0) continue;
      joined.assign(merges[r].first).append(merges[r].second);
      int m = vocab.id(joined);
      if (m < 0) continue;
      merges_.emplace(key(a, b), Merge{static_cast<int>(r), m});
    }
    if (byte_level_) {
      for (int b = 0; b < 256; ++b) {
        byte_ids_[b] = vocab.id(byte_map().to_text[b]);
      }
    }
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      fallback_ids_[b] = vocab.id(name);
    }
    for (const auto& t : vocab.added_tokens()) {
      if (t.content.empty()) continue;
      added_.emplace(t.content, t);
      added_lengths_.insert(t.content.size());
      added_first_[static_cast<unsigned char>(t.content[0])] = true;
    }
  }

  bool adds_bos() const override { return !prefix_.empty() || !suffix_.empty(); }

  std::vector<int> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    if (add_bos) ids = prefix_;
    // Split out added tokens, longest match first.
    struct Seg {
      std::string_view text;
      const AddedToken* added;
    };
    std::vector<Seg> segs;
    size_t start = 0, i = 0;
    while (i < text.size()) {
      const AddedToken* hit = nullptr;
      if (added_first_[static_cast<unsigned char>(text[i])]) {
        for (auto it = added_lengths_.rbegin(); it != added_lengths_.rend(); ++it) {
          if (*it > text.size() - i) continue;
          auto f = added_.find(std::string(text.substr(i, *it)));
          if (f != added_.end()) {
            hit = &f->second;
            break;
          }
        }
      }
      if (!hit) {
        ++i;
        continue;
      }
      if (i > start) segs.push_back({text.substr(start, i - start), nullptr});
      segs.push_back({text.substr(i, hit->content.size()), hit});
      i += hit->content.size();
      start = i;
    }
    if (start < text.size()) segs.push_back({text.substr(start), nullptr});
    for (size_t k = 0; k < segs.size(); ++k) {
      if (!segs[k].added) continue;
      if (segs[k].added->lstrip && k > 0 && !segs[k - 1].added) segs[k - 1].text = trim_end(segs[k - 1].text);
      if (segs[k].added->rstrip && k + 1 < segs.size() && !segs[k + 1].added)
        segs[k + 1].text = trim_start(segs[k + 1].text);
    }
    for (size_t k = 0; k < segs.size(); ++k) {
      if (segs[k].added) {
        ids.push_back(segs[k].added->id);
        continue;
      }
      if (segs[k].text.empty()) continue;
      std::string s = normalize(segs[k].text);
      if (s.empty()) continue;
      for (const std::string& w : pre_tokenize(std::move(s), k)) bpe(w, ids);
    }
    if (add_bos) ids.insert(ids.end(), suffix_.begin(), suffix_.end());
    return ids;
  }

  std::string decode(const std::vector<int>& ids, bool skip_special) const override {
    std::string out;
    for (int id : ids) {
      if (vocab.is_special(id) && skip_special) continue;
      append_token_bytes(out, id);
    }
    size_t strip = 0;
    while (strip < static_cast<size_t>(strip_leading_) && strip < out.size() && out[strip] == ' ') ++strip;
    out.erase(0, strip);
    return unicode::sanitize_utf8(out);
  }

  std::string decode_piece(int prev_id, int id) const override {
    if (vocab.is_special(id)) return "";
    std::string out;
    append_token_bytes(out, id);
    bool at_start = prev_id < 0 || (vocab.bos_id() && prev_id == *vocab.bos_id());
    if (at_start && strip_leading_ > 0 && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

 private:
  struct Merge {
    int rank;
    int merged;
  };
  static uint64_t key(int a, int b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

  void parse_normalizer(const Json& n, const std::string& what) {
    std::string type = n.value("type", "");
    if (type == "Sequence") {
      for (const auto& s : n.at("normalizers")) parse_normalizer(s, what);
    } else if (type == "NFC") {
      norm_.push_back({NormStep::Nfc, "", ""});
    } else if (type == "Prepend") {
      norm_.push_back({NormStep::Prepend, n.value("prepend", ""), ""});
    } else if (type == "Replace") {
      auto p = n.find("pattern");
      if (p == n.end() || !p->contains("String"))
        throw InputError(what + ": Replace normalizer without a String pattern is not supported");
      norm_.push_back({NormStep::Replace, p->at("String").get<std::string>(), n.value("content", "")});
    } else {
      throw InputError(what + ": normalizer \"" + type + "\" is not supported");
    }
  }

  void parse_pretokenizer(const Json& p, const std::string& what) {
    std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const auto& s : p.at("pretokenizers")) parse_pretokenizer(s, what);
    } else if (type == "Split" && p.contains("pattern") && p["pattern"].contains("String")) {
      // A literal delimiter (Gemma: " ", which its normalizer has already
      // turned into U+2581, so that the split finds nothing).
      PreStep s(PreStep::SplitString);
      s.delimiter = p["pattern"]["String"].get<std::string>();
      const std::string b = p.value("behavior", "Isolated");
      if (b == "Removed") s.behavior = PreStep::Removed;
      else if (b == "Isolated") s.behavior = PreStep::Isolated;
      else if (b == "MergedWithPrevious") s.behavior = PreStep::MergedWithPrevious;
      else if (b == "MergedWithNext") s.behavior = PreStep::MergedWithNext;
      else if (b == "Contiguous") s.behavior = PreStep::Contiguous;
      else throw InputError(what + ": Split pre-tokenizer behaviour \"" + b + "\" is not supported");
      if (p.value("invert", false) || s.delimiter.empty())
        throw InputError(what + ": Split pre-tokenizer with invert or an empty string is not supported");
      pre_.push_back(s);
    } else if (type == "Split") {
      auto pat = p.find("pattern");
      if (pat == p.end() || !pat->contains("Regex"))
        throw InputError(what + ": Split pre-tokenizer without a Regex or String pattern is not supported");
      PreStep s(PreStep::Split);
      if (!recognize_split_pattern(pat->at("Regex").get<std::string>(), s.pattern))
        throw InputError(what + ": Split pre-tokenizer regex is not one of the known Llama-3/Qwen2/GPT-2 patterns");
      if (p.value("invert", false) || p.value("behavior", "Isolated") != "Isolated")
        throw InputError(what + ": Split pre-tokenizer behaviour is not supported");
      pre_.push_back(s);
    } else if (type == "ByteLevel") {
      PreStep s(PreStep::ByteLevel);
      s.use_regex = p.value("use_regex", true);
      s.add_prefix_space = p.value("add_prefix_space", false);
      pre_.push_back(s);
    } else if (type == "Metaspace") {
      PreStep s(PreStep::Metaspace);
      s.replacement = p.value("replacement", kSpace);
      s.add_prefix_space = p.value("add_prefix_space", true);
      s.scheme = p.value("prepend_scheme", "always");
      if (p.value("split", false)) throw InputError(what + ": Metaspace pre-tokenizer with split is not supported");
      pre_.push_back(s);
    } else {
      throw InputError(what + ": pre-tokenizer \"" + type + "\" is not supported");
    }
  }

  void parse_post(const Json& p, const std::string& what) {
    std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const auto& s : p.at("processors")) parse_post(s, what);
    } else if (type == "ByteLevel") {
      // Offsets only.
    } else if (type == "TemplateProcessing") {
      const Json& single = p.at("single");
      const Json& specials = p.value("special_tokens", Json::object());
      bool seen_a = false;
      for (const auto& item : single) {
        if (item.contains("Sequence")) {
          seen_a = true;
          continue;
        }
        if (!item.contains("SpecialToken")) continue;
        std::string name = item["SpecialToken"].at("id").get<std::string>();
        std::vector<int> ids;
        auto sp = specials.find(name);
        if (sp != specials.end() && sp->contains("ids")) {
          for (const auto& x : sp->at("ids")) ids.push_back(x.get<int>());
        } else {
          int id = vocab.id(name);
          if (id < 0) throw InputError(what + ": post-processor token \"" + name + "\" is not in the vocabulary");
          ids.push_back(id);
        }
        for (int id : ids) {
          if (id < 0 || static_cast<size_t>(id) >= vocab.size())
            throw InputError(what + ": post-processor id " + std::to_string(id) + " out of range");
          (seen_a ? suffix_ : prefix_).push_back(id);
        }
      }
    } else {
      throw InputError(what + ": post-processor \"" + type + "\" is not supported");
    }
  }

  void parse_decoder(const Json& d, const std::string& what) {
    std::string type = d.value("type", "");
    if (type == "Sequence") {
      for (const auto& s : d.at("decoders")) parse_decoder(s, what);
    } else if (type == "Strip") {
      if (d.value("content", " ") == " ") strip_leading_ = d.value("start", 0);
    } else if (type == "Metaspace") {
      if (d.value("add_prefix_space", true) && d.value("prepend_scheme", "always") != "never") strip_leading_ = 1;
    }
    // ByteLevel, Replace ▁->space, ByteFallback and Fuse are what
    // append_token_bytes does for the model kind.
  }

  std::string normalize(std::string_view in) const {
    std::string s(in);
    for (const auto& n : norm_) {
      switch (n.kind) {
        case NormStep::Nfc: s = unicode::nfc(s); break;
        case NormStep::Prepend:
          if (!s.empty()) s = n.a + s;
          break;
        case NormStep::Replace: replace_all(s, n.a, n.b); break;
      }
    }
    return s;
  }

  std::vector<std::string> pre_tokenize(std::string s, size_t section) const {
    std::vector<std::string> words;
    words.push_back(std::move(s));
    for (const auto& p : pre_) {
      std::vector<std::string> next;
      for (auto& w : words) {
        switch (p.kind) {
          case PreStep::Split:
            for (auto [b, e] : pretokenize(w, p.pattern)) next.push_back(w.substr(b, e - b));
            break;
          case PreStep::SplitString:
            split_string(w, p, next);
            break;
          case PreStep::ByteLevel: {
            if (p.add_prefix_space && (w.empty() || w[0] != ' ')) w = " " + w;
            if (p.use_regex) {
              for (auto [b, e] : pretokenize(w, SplitPattern::Gpt2)) next.push_back(w.substr(b, e - b));
            } else {
              next.push_back(std::move(w));
            }
            break;
          }
          case PreStep::Metaspace: {
            replace_all(w, " ", p.replacement);
            bool prepend = p.add_prefix_space && w.compare(0, p.replacement.size(), p.replacement) != 0 &&
                           (p.scheme == "always" || (p.scheme == "first" && section == 0));
            if (prepend) w = p.replacement + w;
            next.push_back(std::move(w));
            break;
          }
        }
      }
      words = std::move(next);
    }
    return words;
  }

  // Hugging Face's Split on a literal string (empty pieces dropped).
  static void split_string(const std::string& w, const PreStep& p, std::vector<std::string>& out) {
    const std::string& d = p.delimiter;
    std::vector<std::pair<std::string, bool>> parts;  // (text, is delimiter)
    size_t pos = 0;
    for (size_t f; (f = w.find(d, pos)) != std::string::npos; pos = f + d.size()) {
      if (f > pos) parts.emplace_back(w.substr(pos, f - pos), false);
      if (p.behavior == PreStep::Contiguous && !parts.empty() && parts.back().second && f == pos)
        parts.back().first += d;
      else
        parts.emplace_back(d, true);
    }
    if (pos < w.size()) parts.emplace_back(w.substr(pos), false);
    std::string pending;  // MergedWithNext: the delimiter waiting for the next piece
    for (size_t i = 0; i < parts.size(); ++i) {
      auto& [text, delim] = parts[i];
      if (!delim) {
        out.push_back(pending + text);
        pending.clear();
        continue;
      }
      switch (p.behavior) {
        case PreStep::Removed: break;
        case PreStep::Isolated:
        case PreStep::Contiguous: out.push_back(text); break;
        case PreStep::MergedWithPrevious:
          if (i > 0 && !parts[i - 1].second) out.back() += text;
          else out.push_back(text);
          break;
        case PreStep::MergedWithNext:
          if (i + 1 < parts.size() && !parts[i + 1].second) pending = text;
          else out.push_back(text);
          break;
      }
    }
  }

  struct Sym {
    int id;
    int prev, next;
    uint32_t begin, end;  // byte range in the word
  };
  struct Cand {
    int rank;
    int pos;
    int left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };

  void bpe(const std::string& word, std::vector<int>& ids) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      int id = byte_level_ ? vocab.id(to_byte_level(word)) : vocab.id(word);
      if (id >= 0) {
        ids.push_back(id);
        return;
      }
    }
    std::vector<Sym> syms;
    if (byte_level_) {
      syms.reserve(word.size());
      for (size_t i = 0; i < word.size(); ++i) {
        int id = byte_ids_[static_cast<unsigned char>(word[i])];
        syms.push_back({id, static_cast<int>(i) - 1, static_cast<int>(i) + 1, static_cast<uint32_t>(i),
                        static_cast<uint32_t>(i + 1)});
      }
    } else {
      std::vector<char32_t> cps;
      std::vector<uint32_t> off;
      unicode::decode_utf8(word, cps, &off);
      syms.reserve(cps.size());
      for (size_t i = 0; i < cps.size(); ++i) {
        int id = vocab.id(std::string_view(word).substr(off[i], off[i + 1] - off[i]));
        syms.push_back({id, static_cast<int>(i) - 1, static_cast<int>(i) + 1, off[i], off[i + 1]});
      }
    }
    syms.back().next = -1;

    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto consider = [&](int pos) {
      if (pos < 0) return;
      int nx = syms[pos].next;
      if (nx < 0 || syms[pos].id < 0 || syms[nx].id < 0) return;
      auto it = merges_.find(key(syms[pos].id, syms[nx].id));
      if (it != merges_.end()) heap.push({it->second.rank, pos, syms[pos].id, syms[nx].id});
    };
    for (size_t i = 0; i + 1 < syms.size(); ++i) consider(static_cast<int>(i));
    while (!heap.empty()) {
      Cand c = heap.top();
      heap.pop();
      Sym& l = syms[c.pos];
      if (l.id != c.left || l.next < 0 || syms[l.next].id != c.right) continue;  // stale
      Sym& r = syms[l.next];
      l.id = merges_.at(key(c.left, c.right)).merged;
      l.end = r.end;
      l.next = r.next;
      if (r.next >= 0) syms[r.next].prev = c.pos;
      r.id = -2;  // dead
      consider(l.prev);
      consider(c.pos);
    }
    for (int i = 0; i >= 0; i = syms[i].next) {
      const Sym& s = syms[i];
      if (s.id >= 0) {
        ids.push_back(s.id);
        continue;
      }
      std::string_view text = std::string_view(word).substr(s.begin, s.end - s.begin);
      bool done = false;
      if (byte_fallback_) {
        done = true;
        for (unsigned char b : text)
          if (fallback_ids_[b] < 0) done = false;
        if (done)
          for (unsigned char b : text) ids.push_back(fallback_ids_[b]);
      }
      if (!done && unk_id_ >= 0) ids.push_back(unk_id_);
    }
  }

  static std::string to_byte_level(std::string_view w) {
    std::string s;
    s.reserve(w.size() * 2);
    for (unsigned char b : w) s += byte_map().to_text[b];
    return s;
  }

  // The bytes of one token, before the decoder's leading-space strip.
  void append_token_bytes(std::string& out, int id) const {
    const std::string& t = vocab.token(id);
    if (vocab.is_added(id)) {
      // The decoder sees added tokens too: U+2581 becomes a space (Gemma's
      // "▁▁▁▁" tokens); byte-level decoders pass them through.
      if (byte_level_) {
        out += t;
      } else {
        std::string s = t;
        replace_all(s, kSpace, " ");
        out += s;
      }
      return;
    }
    if (byte_level_) {
      std::vector<char32_t> cps;
      unicode::decode_utf8(t, cps);
      for (char32_t c : cps) {
        int b = c < 512 ? byte_map().to_byte[c] : -1;
        if (b >= 0) out.push_back(static_cast<char>(b));
        else unicode::append_utf8(out, c);
      }
      return;
    }
    if (byte_fallback_) {
      int b = byte_token_value(t);
      if (b >= 0) {
        out.push_back(static_cast<char>(b));
        return;
      }
    }
    std::string s = t;
    replace_all(s, kSpace, " ");
    out += s;
  }

  bool byte_level_ = false;
  bool ignore_merges_ = false;
  bool byte_fallback_ = false;
  int unk_id_ = -1;
  std::vector<NormStep> norm_;
  std::vector<PreStep> pre_;
  std::vector<int> prefix_, suffix_;
  int strip_leading_ = 0;
  std::unordered_map<uint64_t, Merge> merges_;
  std::array<int, 256> byte_ids_{};
  std::array<int, 256> fallback_ids_{};
  std::unordered_map<std::string, AddedToken> added_;
  std::set<size_t> added_lengths_;
  std::array<bool, 256> added_first_{};
};

// ---------------------------------------------------------------- tokenizer.model

class SpTokenizer : public Tokenizer::Impl {
 public:
  SpTokenizer(Vocabulary v) : Impl(std::move(v)) {
    auto st = sp_.Load(vocab.source());
    if (!st.ok()) throw InputError(vocab.source() + ": cannot load SentencePiece model: " + std::string(st.message()));
    add_bos_ = vocab.bos_id().has_value();
    init();
  }
  // From a serialized ModelProto built from parts.
  SpTokenizer(Vocabulary v, std::string_view proto, bool add_bos, bool add_eos) : Impl(std::move(v)) {
    auto st = sp_.LoadFromSerializedProto(proto);
    if (!st.ok()) throw InputError(vocab.source() + ": cannot build a SentencePiece model from the tokenizer: " +
                                   std::string(st.message()));
    add_bos_ = add_bos && vocab.bos_id().has_value();
    add_eos_ = add_eos && vocab.eos_id().has_value();
    init();
  }

  void init() {
    if (static_cast<size_t>(sp_.GetPieceSize()) != vocab.base_size())
      throw InputError(vocab.source() + ": SentencePiece reports " + std::to_string(sp_.GetPieceSize()) +
                       " pieces but the file lists " + std::to_string(vocab.base_size()));
    // SentencePiece never matches control pieces (<s>, </s>) or <unk> in
    // text; Hugging Face's LlamaTokenizer splits these special tokens out of
    // the text first (so a chat template that writes {{ eos_token }} gives
    // the EOS id), and so does this.
    for (int id = 0; id < sp_.GetPieceSize(); ++id)
      if (sp_.IsControl(id) || sp_.IsUnknown(id)) {
        const std::string& p = sp_.IdToPiece(id);
        if (p.empty()) continue;
        specials_.push_back({p, id});
        special_first_[static_cast<unsigned char>(p[0])] = true;
      }
    std::sort(specials_.begin(), specials_.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }

  bool adds_bos() const override { return add_bos_ || add_eos_; }

  std::vector<int> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids = encode_text(text);
    if (add_bos && add_bos_) ids.insert(ids.begin(), *vocab.bos_id());
    if (add_bos && add_eos_) ids.push_back(*vocab.eos_id());
    return ids;
  }

  std::vector<int> encode_text(std::string_view text) const {
    std::vector<int> ids;
    size_t start = 0, i = 0;
    while (i < text.size()) {
      int hit = -1;
      size_t len = 0;
      if (special_first_[static_cast<unsigned char>(text[i])])
        for (const auto& [piece, id] : specials_)
          if (text.compare(i, piece.size(), piece) == 0) {
            hit = id;
            len = piece.size();
            break;
          }
      if (hit < 0) {
        ++i;
        continue;
      }
      encode_plain(text.substr(start, i - start), ids);
      ids.push_back(hit);
      i += len;
      start = i;
    }
    encode_plain(text.substr(start), ids);
    return ids;
  }

  std::string decode(const std::vector<int>& ids, bool skip_special) const override {
    for (int id : ids) vocab.token(id);  // range check
    if (skip_special) return decode_run(ids);
    std::string out;
    std::vector<int> run;
    for (int id : ids) {
      if (sp_.IsControl(id)) {
        out += decode_run(run);
        run.clear();
        out += vocab.token(id);
      } else {
        run.push_back(id);
      }
    }
    return out + decode_run(run);
  }

  std::string decode_piece(int prev_id, int id) const override {
    vocab.token(id);
    if (sp_.IsControl(id)) return "";
    // SentencePiece drops the leading space of the first visible piece only;
    // after a control piece mid-text (</s><s> between chat turns) it keeps it.
    bool at_start = prev_id < 0 || (vocab.bos_id() && prev_id == *vocab.bos_id());
    if (at_start || sp_.IsUnknown(id)) return decode_run({id});
    const std::string& p = vocab.token(id);
    if (sp_.IsByte(id)) {
      int b = byte_token_value(p);
      if (b >= 0) return std::string(1, static_cast<char>(b));
    }
    std::string s = p;
    replace_all(s, kSpace, " ");
    return s;
  }

 private:
  void encode_plain(std::string_view text, std::vector<int>& ids) const {
    if (text.empty()) return;
    std::vector<int> body;
    auto st = sp_.Encode(text, &body);
    if (!st.ok()) throw RuntimeFailure("SentencePiece encode failed: " + std::string(st.message()));
    ids.insert(ids.end(), body.begin(), body.end());
  }

  std::string decode_run(const std::vector<int>& ids) const {
    if (ids.empty()) return "";
    std::string out;
    auto st = sp_.Decode(ids, &out);
    if (!st.ok()) throw RuntimeFailure("SentencePiece decode failed: " + std::string(st.message()));
    return out;
  }

  sentencepiece::SentencePieceProcessor sp_;
  bool add_bos_ = false;  // a tokenizer.model: BOS when it has one
  bool add_eos_ = false;
  std::vector<std::pair<std::string, int>> specials_;  // control and unknown pieces, longest first
  std::array<bool, 256> special_first_{};
};

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  Json j;
  Vocabulary v = detail::load_vocabulary(path, &j);
  if (v.format() == TokenizerFormat::HfJson) {
    try {
      return Tokenizer(std::make_unique<HfTokenizer>(std::move(v), j));
    } catch (const nlohmann::json::exception& e) {
      throw InputError(path + ": malformed tokenizer.json: " + e.what());
    }
  }
  return Tokenizer(std::make_unique<SpTokenizer>(std::move(v)));
}

Tokenizer Tokenizer::from_parts(const TokenizerParts& p) {
  if (p.kind == ModelKind::SentencePieceUnigram)
    throw InputError(p.source + ": a SentencePiece unigram tokenizer cannot be built from parts");
  Vocabulary v = detail::vocabulary_from_parts(p);
  if (p.kind == ModelKind::ByteLevelBpe) return Tokenizer(std::make_unique<HfTokenizer>(std::move(v), p));
  detail::SpModelInfo m;
  m.model_type = 2;  // BPE
  m.byte_fallback = v.byte_fallback();
  m.add_dummy_prefix = p.add_space_prefix;
  m.pieces.reserve(v.size());
  std::optional<int> unk = v.unk_id();
  for (size_t i = 0; i < v.size(); ++i) {
    detail::SpPiece piece;
    piece.piece = v.token(int(i));
    piece.score = v.score(int(i));
    piece.type = int(v.type(int(i)));
    if (!unk && v.type(int(i)) == TokenType::Unknown) unk = int(i);
    m.pieces.push_back(std::move(piece));
  }
  if (!unk) throw InputError(p.source + ": a SentencePiece-style tokenizer needs an unknown token");
  // SentencePiece requires its unknown piece to be typed so.
  m.pieces[size_t(*unk)].type = int(TokenType::Unknown);
  m.unk_id = *unk;
  m.bos_id = v.bos_id().value_or(-1);
  m.eos_id = v.eos_id().value_or(-1);
  m.pad_id = v.pad_id().value_or(-1);
  const std::string proto = detail::serialize_sp_model(m);
  return Tokenizer(std::make_unique<SpTokenizer>(std::move(v), proto, p.add_bos, p.add_eos));
}

const Vocabulary& Tokenizer::vocab() const { return impl_->vocab; }
std::vector<int> Tokenizer::encode(std::string_view text, bool add_bos) const { return impl_->encode(text, add_bos); }
bool Tokenizer::adds_bos() const { return impl_->adds_bos(); }
std::string Tokenizer::decode(const std::vector<int>& ids, bool skip_special) const {
  for (int id : ids) impl_->vocab.token(id);  // range check
  return impl_->decode(ids, skip_special);
}
std::string Tokenizer::decode_piece(int prev_id, int id) const { return impl_->decode_piece(prev_id, id); }

}  // namespace chatvec
