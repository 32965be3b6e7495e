#include "eval/eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fmt/core.h>
#include <fstream>
#include <set>

#include "chat_template/chat_template.h"
#include "core/error.h"
#include "core/interrupt.h"
#include "core/file_util.h"
#include "engine/generation.h"
#include "engine/llama_model.h"
#include "engine/sampler.h"
#include "gguf/gguf_model.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace chatvec::eval {

// The first run's definitions (score_answer adds the strict ones).
TaskScore score_answer_lenient(const std::string& type, const std::string& answer, const std::string& expected,
                               const std::string& lang, const LanguageId& lid, bool stopped_at_eos);

namespace {

// Length of the UTF-8 sequence at s[i] and whether it is part of a word.
size_t char_at(const std::string& s, size_t i, bool* letter) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    *letter = std::isalnum(c) != 0;
    return 1;
  }
  size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  if (i + n > s.size()) n = s.size() - i;
  // C2 xx: Latin-1 punctuation (¡ ¿ « » ...), E2 xx xx: general punctuation.
  *letter = !(c == 0xC2 || c == 0xE2 || (c == 0xC3 && n == 2 && (s[i + 1] == '\x97' || s[i + 1] == '\xB7')));
  return n;
}

std::string lower(const std::string& w) {
  std::string out = w;
  for (size_t i = 0; i < out.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(out[i]);
    if (c < 0x80) {
      out[i] = char(std::tolower(c));
    } else if (c == 0xC3 && i + 1 < out.size()) {
      const unsigned char d = static_cast<unsigned char>(out[i + 1]);
      if (d >= 0x80 && d <= 0x9E && d != 0x97) out[i + 1] = char(d + 0x20);
      ++i;
    }
  }
  return out;
}

std::vector<std::string> ngrams(const std::string& word) {
  // Split into characters first (UTF-8), then n-grams of 1..4 characters
  // over "^word$".
  std::vector<std::string> chars{"^"};
  for (size_t i = 0; i < word.size();) {
    bool letter;
    const size_t n = char_at(word, i, &letter);
    chars.push_back(word.substr(i, n));
    i += n;
  }
  chars.push_back("$");
  std::vector<std::string> out;
  for (size_t n = 1; n <= 4; ++n)
    for (size_t i = 0; i + n <= chars.size(); ++i) {
      std::string g;
      for (size_t k = 0; k < n; ++k) g += chars[i + k];
      out.push_back(std::to_string(n) + g);
    }
  return out;
}

}  // namespace

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < text.size();) {
    bool letter;
    const size_t n = char_at(text, i, &letter);
    if (letter) {
      cur += text.substr(i, n);
    } else if (!cur.empty()) {
      out.push_back(lower(cur));
      cur.clear();
    }
    i += n;
  }
  if (!cur.empty()) out.push_back(lower(cur));
  return out;
}

double bag_f1(const std::vector<std::string>& a, const std::vector<std::string>& e) {
  if (a.empty() || e.empty()) return a.empty() && e.empty() ? 1.0 : 0.0;
  std::multiset<std::string> pool(e.begin(), e.end());
  size_t common = 0;
  for (const auto& w : a) {
    auto it = pool.find(w);
    if (it != pool.end()) {
      ++common;
      pool.erase(it);
    }
  }
  if (common == 0) return 0.0;
  const double p = double(common) / double(a.size()), r = double(common) / double(e.size());
  return 2 * p * r / (p + r);
}

void LanguageId::train(const std::string& lang, const std::vector<std::string>& lines) {
  Model& m = models_[lang];
  std::set<std::string> seen;
  for (const auto& line : lines)
    for (const auto& w : words_of(line))
      for (const auto& g : ngrams(w)) {
        m.counts[g] += 1;
        m.total += 1;
      }
  std::set<std::string> all;
  for (const auto& [l, mm] : models_)
    for (const auto& [g, c] : mm.counts) all.insert(g);
  distinct_ = std::max<size_t>(1, all.size());
}

std::vector<std::string> LanguageId::languages() const {
  std::vector<std::string> out;
  for (const auto& [l, m] : models_) out.push_back(l);
  return out;
}

std::string LanguageId::classify_word(const std::string& word) const {
  std::string best;
  double best_lp = -INFINITY;
  const std::vector<std::string> gs = ngrams(word);
  for (const auto& [lang, m] : models_) {
    double lp = 0;
    for (const auto& g : gs) {
      auto it = m.counts.find(g);
      lp += std::log(((it == m.counts.end() ? 0.0 : it->second) + 0.5) / (m.total + 0.5 * double(distinct_)));
    }
    if (lp > best_lp) {
      best_lp = lp;
      best = lang;
    }
  }
  return best;
}

double LanguageId::share(const std::string& text, const std::string& lang) const {
  const std::vector<std::string> ws = words_of(text);
  if (ws.empty()) return 0.0;
  size_t hit = 0;
  for (const auto& w : ws) hit += classify_word(w) == lang;
  return double(hit) / double(ws.size());
}

bool valid_answer(const std::string& answer) {
  if (answer.find("\xEF\xBF\xBD") != std::string::npos) return false;
  return answer.find_first_not_of(" \t\r\n") != std::string::npos;
}

TaskScore score_answer(const std::string& type, const std::string& answer, const std::string& expected,
                       const std::string& lang, const LanguageId& lid, bool stopped_at_eos) {
  TaskScore s = score_answer_lenient(type, answer, expected, lang, lid, stopped_at_eos);
  s.valid = valid_answer(answer);
  if (s.valid) {
    s.exact_strict = s.exact;
    s.f1_strict = s.f1;
    s.eos_strict = s.eos;
    s.lang_strict = s.lang;
  }
  return s;
}

TaskScore score_answer_lenient(const std::string& type, const std::string& answer, const std::string& expected,
                               const std::string& lang, const LanguageId& lid, bool stopped_at_eos) {
  TaskScore s;
  s.eos = stopped_at_eos ? 1.0 : 0.0;
  s.lang = lid.languages().empty() ? 0.0 : lid.share(answer, lang);
  const std::vector<std::string> a = words_of(answer), e = words_of(expected);
  if (type == "repeat") {
    s.checkable = true;
    s.exact = a == e && !e.empty();
  } else if (type == "first_word" || type == "last_word") {
    s.checkable = true;
    s.exact = !a.empty() && !e.empty() && a.front() == e.front();
  } else if (type == "continue") {
    s.checkable = true;
    const size_t k = std::min<size_t>(3, e.size());
    s.exact = k > 0 && a.size() >= k && std::equal(e.begin(), e.begin() + int64_t(k), a.begin());
  } else if (type != "dialogue") {
    throw InputError("eval: unknown task type \"" + type + "\"");
  }
  if (s.checkable) s.f1 = bag_f1(a, e);
  return s;
}

EvalData load_eval_data(const EvalOptions& o) {
  EvalData d;
  for (const auto& [lang, path] : o.lang_data) d.lid.train(lang, read_nonempty_lines(path, 2000));
  const std::vector<std::string> langs = d.lid.languages();
  for (const auto& [lang, path] : o.heldout) {
    if (std::find(langs.begin(), langs.end(), lang) == langs.end())
      throw InputError("--heldout " + lang + "=" + path + ": no --lang-data " + lang +
                       "=FILE (the language identifier needs text of every language it scores)");
    d.heldout.emplace_back(lang, read_nonempty_lines(path, o.heldout_lines));
  }
  d.tasks_file = o.tasks;
  const std::vector<std::string> lines = read_nonempty_lines(o.tasks, o.max_tasks);
  if (lines.empty()) throw InputError(o.tasks + ": no tasks");
  static const std::set<std::string> kTypes = {"repeat", "first_word", "last_word", "continue", "dialogue"};
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string where = fmt::format("{} line {}", o.tasks, i + 1);
    Json t = parse_json_strict(lines[i], where);
    if (!t.is_object()) throw InputError(where + ": not a JSON object");
    if (!t.contains("messages") || !t["messages"].is_array() || t["messages"].empty())
      throw InputError(where + ": \"messages\" must be a non-empty list of {\"role\", \"content\"}");
    for (const char* k : {"lang", "type", "expected"})
      if (t.contains(k) && !t[k].is_string()) throw InputError(where + ": \"" + std::string(k) + "\" must be a string");
    const std::string type = t.value("type", "dialogue");
    if (!kTypes.count(type)) throw InputError(where + ": unknown task type \"" + type + "\"");
    t["type"] = type;
    d.tasks.push_back(std::move(t));
  }
  return d;
}

namespace {

// EOS ids: generation_config.json first, then config.json.
std::vector<int64_t> stop_ids(const LlamaModel& model, const std::string& model_dir) {
  std::vector<int64_t> stop = model.config().eos_token_ids;
  const std::string gc_path = model_dir + "/generation_config.json";
  if (path_exists(gc_path)) {
    const Json gc = read_json_file(gc_path);
    if (gc.contains("eos_token_id")) {
      stop.clear();
      if (gc["eos_token_id"].is_array())
        for (const auto& v : gc["eos_token_id"]) stop.push_back(v.get<int64_t>());
      else if (gc["eos_token_id"].is_number_integer())
        stop.push_back(gc["eos_token_id"].get<int64_t>());
    }
  }
  if (stop.empty()) throw InputError(model_dir + ": no eos_token_id");
  return stop;
}

Json heldout_of(LlamaModel& model, const Tokenizer& tok, const EvalData& d) {
  Json ppl = Json::object();
  for (const auto& [lang, lines] : d.heldout) {
    double nll = 0;
    int64_t predicted = 0, bytes = 0;
    for (const auto& line : lines) {
      check_interrupted();  // Ctrl-C between held-out lines
      std::vector<int> t32 = tok.encode(line, true);
      std::vector<int64_t> t(t32.begin(), t32.end());
      if (int64_t(t.size()) > model.context_length()) t.resize(size_t(model.context_length()));
      if (t.size() < 2) continue;
      const SequenceScore sc = score_sequence(model, t);
      nll += sc.nll;
      predicted += sc.predicted;
      bytes += int64_t(line.size());
    }
    ppl[lang] = {{"perplexity", predicted ? std::exp(nll / double(predicted)) : 0.0},
                 {"bits_per_byte", bytes ? nll / std::log(2.0) / double(bytes) : 0.0},
                 {"tokens", predicted},
                 {"bytes", bytes}};
  }
  return ppl;
}

}  // namespace

// A model directory, or a GGUF file with its tokenizer, chat template and
// stop ids (EOS, EOT, EOM) from its metadata.
bool is_gguf(const std::string& path) { return !is_directory(path) && gguf::looks_like_gguf(path); }
std::unique_ptr<LlamaModel> open_any(const std::string& path) {
  return is_gguf(path) ? gguf::open_gguf_model(path) : LlamaModel::open(path);
}
Tokenizer tokenizer_of(const std::string& path) {
  if (is_gguf(path)) return gguf::load_gguf_tokenizer(path);
  if (std::optional<Tokenizer> t = gguf::load_sidecar_tokenizer(path)) return std::move(*t);  // a GGUF import's
  return Tokenizer::load(path);
}
ChatTemplate template_of(const std::string& path) {
  return is_gguf(path) ? gguf::load_gguf_chat_template(path) : ChatTemplate::from_model_dir(path);
}
std::vector<int64_t> stops_of(const LlamaModel& model, const std::string& path) {
  if (!is_gguf(path)) return stop_ids(model, path);
  std::vector<int64_t> stop = gguf::gguf_stop_ids(gguf::File(path));
  if (stop.empty()) throw InputError(path + ": no tokenizer.ggml.eos_token_id");
  return stop;
}

Json heldout_scores(const std::string& model_dir, const EvalData& d) {
  auto model = open_any(model_dir);
  const Tokenizer tok = tokenizer_of(model_dir);
  return heldout_of(*model, tok, d);
}

Json evaluate_model(const std::string& model_dir, const EvalData& d, const EvalOptions& o) {
  auto model = open_any(model_dir);
  const Tokenizer tok = tokenizer_of(model_dir);
  const ChatTemplate tpl = template_of(model_dir);
  const std::vector<int64_t> stop = stops_of(*model, model_dir);

  Json per_task = Json::array();
  struct Acc {
    double exact = 0, f1 = 0, eos = 0, lang = 0, len = 0;
    double valid = 0, exact_s = 0, f1_s = 0, eos_s = 0, lang_s = 0;
    int64_t n = 0, n_check = 0;
  };
  std::map<std::string, Acc> by_lang, by_type;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < d.tasks.size(); ++i) {
    check_interrupted();  // Ctrl-C between prompts (and between tokens, below)
    const Json& t = d.tasks[i];
    const std::string lang = t.value("lang", ""), type = t.value("type", "");
    const std::string expected = t.value("expected", "");
    const std::string prompt = render_chat(tpl, t.at("messages"), true);
    std::vector<int> ids32 = tok.encode(prompt, false);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    const int64_t budget = std::min<int64_t>(o.max_new, model->context_length() - int64_t(ids.size()));
    if (budget <= 0) throw InputError(fmt::format("{} line {}: prompt longer than the context", d.tasks_file, i + 1));
    Sampler greedy({0.0, 1.0, 0});
    std::vector<int> out;
    const GenerationStats st = generate_tokens(*model, greedy, ids, 0, budget, stop, [&](int64_t tk) {
      out.push_back(int(tk));
      check_interrupted();
      return true;
    });
    const std::string answer = tok.decode(out);
    const TaskScore s = score_answer(type, answer, expected, lang, d.lid, st.stopped_at_eos);
    for (Acc* a : {&by_lang[lang], &by_type[lang + "/" + type]}) {
      a->n += 1;
      a->eos += s.eos;
      a->lang += s.lang;
      a->len += double(out.size());
      a->valid += s.valid;
      a->eos_s += s.eos_strict;
      a->lang_s += s.lang_strict;
      if (s.checkable) {
        a->n_check += 1;
        a->exact += s.exact;
        a->f1 += s.f1;
        a->exact_s += s.exact_strict;
        a->f1_s += s.f1_strict;
      }
    }
    per_task.push_back({{"id", t.value("id", Json(int64_t(i)))}, {"lang", lang}, {"type", type},
                        {"answer", answer}, {"expected", expected}, {"exact", s.exact}, {"f1", s.f1},
                        {"eos", s.eos}, {"lang_share", s.lang}, {"valid", s.valid}, {"tokens", out.size()}});
  }
  auto summarize = [](const std::map<std::string, Acc>& m) {
    Json j = Json::object();
    for (const auto& [k, a] : m) {
      const double n = a.n ? double(a.n) : 1.0;
      Json e = {{"n", a.n},
                {"eos", a.eos / n},
                {"lang_share", a.lang / n},
                {"mean_tokens", a.len / n},
                {"valid", a.valid / n},
                {"eos_strict", a.eos_s / n},
                {"lang_share_strict", a.lang_s / n}};
      if (a.n_check) {
        e["exact"] = a.exact / double(a.n_check);
        e["f1"] = a.f1 / double(a.n_check);
        e["exact_strict"] = a.exact_s / double(a.n_check);
        e["f1_strict"] = a.f1_s / double(a.n_check);
        e["n_checkable"] = a.n_check;
      }
      j[k] = e;
    }
    return j;
  };
  Json report = {{"model", model_dir},
                 {"tasks_file", d.tasks_file},
                 {"max_new_tokens", o.max_new},
                 {"summary", summarize(by_lang)},
                 {"by_type", summarize(by_type)}};
  report["heldout"] = heldout_of(*model, tok, d);
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report["per_task"] = per_task;
  return report;
}

Json run_eval(const EvalOptions& o) { return evaluate_model(o.model_dir, load_eval_data(o), o); }

std::string format_report(const Json& r) {
  std::string s = fmt::format("model: {}\n", r.value("model", ""));
  s += fmt::format("{:<22} {:>5} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>7} {:>7}\n", "language/type", "n", "exact",
                   "f1", "eos", "lang", "tokens", "valid", "eos*", "lang*");
  auto row = [&](const std::string& k, const Json& e) {
    auto num = [&](const char* f) { return e.contains(f) ? fmt::format("{:7.3f}", e[f].get<double>()) : std::string("      -"); };
    s += fmt::format("{:<22} {:>5} {} {} {} {} {:8.1f} {} {} {}\n", k, e["n"].get<int64_t>(), num("exact"), num("f1"),
                     num("eos"), num("lang_share"), e["mean_tokens"].get<double>(), num("valid"), num("eos_strict"),
                     num("lang_share_strict"));
  };
  for (const auto& [k, e] : r["summary"].items()) row(k + " (all)", e);
  for (const auto& [k, e] : r["by_type"].items()) row(k, e);
  s += "(valid: answers neither empty nor with U+FFFD; eos*, lang*: counting invalid answers as failures)\n";
  for (const auto& [k, e] : r["heldout"].items())
    s += fmt::format("held-out {}: perplexity {:.3f}, {:.4f} bits/byte ({} tokens)\n", k,
                     e["perplexity"].get<double>(), e["bits_per_byte"].get<double>(), e["tokens"].get<int64_t>());
  return s;
}

}  // namespace chatvec::eval
