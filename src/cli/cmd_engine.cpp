// convert, generate, chat, perplexity: the engine's commands.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <iostream>
#include <unistd.h>
#include <cstdio>
#include <fmt/core.h>
#include <memory>
#include <string>

#include "cli/command.h"
#include "convert/llama2c_import.h"
#include "chat_template/chat_template.h"
#include "core/error.h"
#include "core/json_util.h"
#include "core/file_util.h"
#include "engine/generation.h"
#include "engine/llama_model.h"
#include "engine/sampler.h"
#include "gguf/gguf_model.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace chatvec::cli {
namespace {

struct ConvertOptions {
  std::string model, tokenizer, out;
};

int do_convert_llama2c(const ConvertOptions& o) {
  const Llama2cHeader h = import_llama2c({o.model, o.tokenizer, o.out});
  if (!global_options().quiet)
    std::fprintf(stderr,
                 "converted %s: dim %lld, hidden %lld, %lld layers, %lld heads (%lld KV), vocab %lld%s, seq_len %lld "
                 "-> %s\n",
                 o.model.c_str(), (long long)h.dim, (long long)h.hidden_dim, (long long)h.n_layers,
                 (long long)h.n_heads, (long long)h.n_kv_heads, (long long)h.vocab_size,
                 h.shared_classifier ? " (shared classifier)" : "", (long long)h.seq_len, o.out.c_str());
  return 0;
}

void register_convert(CLI::App& app, std::function<int()>& run) {
  CLI::App* conv = app.add_subcommand("convert", "Import a checkpoint from another format as a Hugging Face directory");
  conv->require_subcommand(1);
  CLI::App* l2c = conv->add_subcommand("llama2c", "llama2.c checkpoint (run.c format) -> Hugging Face Llama directory");
  auto o = std::make_shared<ConvertOptions>();
  l2c->add_option("model", o->model, "llama2.c .bin checkpoint")->required();
  l2c->add_option("--tokenizer", o->tokenizer, "SentencePiece tokenizer.model to include")->required();
  l2c->add_option("-o,--output", o->out, "Output directory (must not exist)")->required();
  l2c->callback([&run, o] { run = [o] { return do_convert_llama2c(*o); }; });
}

// ---- model + tokenizer ----------------------------------------------------

std::vector<int64_t> to_ids64(const std::vector<int>& v) { return std::vector<int64_t>(v.begin(), v.end()); }
std::vector<int> to_ids32(const std::vector<int64_t>& v) { return std::vector<int>(v.begin(), v.end()); }

bool is_gguf_file(const std::string& path) { return !is_directory(path) && gguf::looks_like_gguf(path); }

// A Hugging Face model directory, or a GGUF file read in place.
std::unique_ptr<LlamaModel> open_model(const std::string& path, int64_t context) {
  if (is_gguf_file(path)) return gguf::open_gguf_model(path, {context});
  return LlamaModel::open(path, {context});
}

// The model directory's tokenizer (a GGUF file's: from its tokenizer.ggml
// metadata), or null when it has none (ids mode).
std::unique_ptr<Tokenizer> open_tokenizer(const std::string& dir) {
  if (is_gguf_file(dir)) {
    const gguf::File f(dir);
    if (!gguf::has_gguf_tokenizer(f)) return nullptr;
    return std::make_unique<Tokenizer>(Tokenizer::from_parts(gguf::gguf_tokenizer_parts(f)));
  }
  // A GGUF import's (or a merge of GGUF inputs') tokenizer.gguf sidecar.
  if (std::optional<Tokenizer> t = gguf::load_sidecar_tokenizer(dir)) return std::make_unique<Tokenizer>(std::move(*t));
  if (!path_exists(dir + "/tokenizer.json") && !path_exists(dir + "/tokenizer.model")) return nullptr;
  return std::make_unique<Tokenizer>(Tokenizer::load(dir));
}

// BOS / EOS ids: generation_config.json first, then config.json.
struct SpecialIds {
  std::vector<int64_t> bos, eos;
};
std::vector<int64_t> ids_field(const Json& j, const char* key, const std::string& what) {
  std::vector<int64_t> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (it->is_number_integer()) return {it->get<int64_t>()};
  if (it->is_array()) {
    for (const auto& e : *it) {
      if (!e.is_number_integer())
        throw InputError(fmt::format("{}: field \"{}\" must be an integer or a list of integers", what, key));
      out.push_back(e.get<int64_t>());
    }
    return out;
  }
  throw InputError(fmt::format("{}: field \"{}\" must be an integer or a list of integers", what, key));
}
SpecialIds special_ids(const LlamaModel& m) {
  SpecialIds s{m.config().bos_token_ids, m.config().eos_token_ids};
  if (!m.checkpoint_or_null()) return s;  // a GGUF file: see gguf_special_ids
  const std::string gen = m.checkpoint().dir() + "/generation_config.json";
  if (path_exists(gen)) {
    Json g = read_json_file(gen);
    if (auto b = ids_field(g, "bos_token_id", gen); !b.empty()) s.bos = b;
    if (auto e = ids_field(g, "eos_token_id", gen); !e.empty()) s.eos = e;
  }
  return s;
}

// A model directory's or GGUF file's BOS and stop ids (a GGUF file: EOS, EOT
// and EOM from tokenizer.ggml).
SpecialIds model_special_ids(const LlamaModel& m, const std::string& path) {
  SpecialIds s = special_ids(m);
  if (is_gguf_file(path)) {
    const std::vector<int64_t> stop = gguf::gguf_stop_ids(gguf::File(path));
    if (!stop.empty()) s.eos = stop;
  }
  return s;
}

// The chat template of a model directory or of a GGUF file's metadata.
ChatTemplate open_chat_template(const std::string& path) {
  return is_gguf_file(path) ? gguf::load_gguf_chat_template(path) : ChatTemplate::from_model_dir(path);
}

// -t/--threads: the engine's pool reads CHATVEC_THREADS when it starts.
void set_engine_threads(int threads) {
  if (threads > 0) setenv("CHATVEC_THREADS", std::to_string(threads).c_str(), 1);
}

std::vector<int64_t> parse_ids(const std::string& s) {
  std::vector<int64_t> ids;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find_first_of(", ", i);
    if (j == std::string::npos) j = s.size();
    if (j > i) {
      const std::string t = s.substr(i, j - i);
      char* end = nullptr;
      const long long v = std::strtoll(t.c_str(), &end, 10);
      if (*end || v < 0) throw InputError("--prompt-ids: \"" + t + "\" is not a token id");
      ids.push_back(v);
    }
    i = j + 1;
  }
  return ids;
}

void report_speed(const GenerationStats& st) {
  if (global_options().quiet) return;
  std::fprintf(stderr, "\nprompt: %lld tokens, %.1f tokens/s; generated: %lld tokens, %.1f tokens/s\n",
               (long long)st.prompt_tokens, st.prompt_seconds > 0 ? st.prompt_tokens / st.prompt_seconds : 0.0,
               (long long)st.generated_tokens,
               st.generate_seconds > 0 ? st.generated_tokens / st.generate_seconds : 0.0);
}

// Streams generated tokens as text: each token's bytes (decode_piece) are
// printed as soon as they complete a UTF-8 character.
class StreamPrinter {
 public:
  StreamPrinter(const Tokenizer& tok, int64_t prev) : tok_(tok), prev_(int(prev)) {}
  ~StreamPrinter() { flush(); }
  void push(int64_t id) {
    pending_ += tok_.decode_piece(prev_, int(id));
    prev_ = int(id);
    // Hold back a trailing incomplete UTF-8 sequence.
    size_t n = pending_.size(), k = n;
    while (k > 0 && n - k < 3 && (uint8_t(pending_[k - 1]) & 0xC0) == 0x80) --k;
    if (k > 0 && uint8_t(pending_[k - 1]) >= 0xC0) {
      const uint8_t lead = uint8_t(pending_[k - 1]);
      const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
      if (n - (k - 1) < need) n = k - 1;
    }
    std::fwrite(pending_.data(), 1, n, stdout);
    std::fflush(stdout);
    pending_.erase(0, n);
  }
  void flush() {
    std::fwrite(pending_.data(), 1, pending_.size(), stdout);
    std::fflush(stdout);
    pending_.clear();
  }

 private:
  const Tokenizer& tok_;
  int prev_;
  std::string pending_;
};

// ---- generate ---------------------------------------------------------------

struct GenerateOptions {
  std::string dir, prompt, prompt_ids;
  int64_t steps = 256;
  double temperature = 1.0, top_p = 0.9;
  uint64_t seed = 0;
  int64_t context = 0;
  bool no_bos = false;
  int threads = 0;
};

int do_generate(const GenerateOptions& o) {
  set_engine_threads(o.threads);
  auto model = open_model(o.dir, o.context);
  const SpecialIds sp = model_special_ids(*model, o.dir);
  Sampler sampler({o.temperature, o.top_p, o.seed});
  // Ids in, ids out: no tokenizer to load.
  std::unique_ptr<Tokenizer> tok = o.prompt_ids.empty() ? open_tokenizer(o.dir) : nullptr;
  std::vector<int64_t> prompt;
  if (!o.prompt_ids.empty()) {
    prompt = parse_ids(o.prompt_ids);
  } else {
    if (!tok) throw InputError(o.dir + (is_gguf_file(o.dir) ? ": no tokenizer.ggml metadata for --prompt (use --prompt-ids)"
                                                           : ": no tokenizer.json or tokenizer.model for --prompt (use --prompt-ids)"));
    prompt = to_ids64(tok->encode(o.prompt, !o.no_bos));
  }
  if (prompt.empty()) {
    if (sp.bos.empty()) throw InputError("empty prompt and no bos_token_id to start from");
    prompt.push_back(sp.bos[0]);
  }
  std::unique_ptr<StreamPrinter> printer;
  if (tok && o.prompt_ids.empty()) {
    std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
    std::fflush(stdout);
    printer = std::make_unique<StreamPrinter>(*tok, prompt.back());
  }
  bool first = true;
  GenerationStats st = generate_tokens(*model, sampler, prompt, 0, o.steps, sp.eos, [&](int64_t t) {
    if (printer) {
      printer->push(t);
    } else {
      std::printf(first ? "%lld" : " %lld", (long long)t);
      std::fflush(stdout);
      first = false;
    }
    return true;
  });
  if (printer) printer->flush();
  std::printf("\n");
  report_speed(st);
  return 0;
}

void register_generate(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* g = app.add_subcommand("generate", "Continue a prompt with a model (CPU inference), streaming to stdout");
  g->add_option("model", o->dir,
                 "Hugging Face model directory, GGUF file, or id org/name[@revision] in the local cache")->required();
  auto* p = g->add_option("--prompt", o->prompt, "Prompt text (BOS first when the tokenizer config says so)");
  g->add_option("--prompt-ids", o->prompt_ids, "Prompt as token ids (\"1,403,407\"); prints ids instead of text")
      ->excludes(p);
  g->add_option("-n,--steps", o->steps, "Largest number of tokens to generate")->capture_default_str();
  g->add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")->capture_default_str();
  g->add_option("--top-p", o->top_p, "Nucleus sampling mass")->capture_default_str();
  g->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  g->add_option("--context", o->context, "KV cache length (default min(max_position_embeddings, 4096))");
  g->add_flag("--no-bos", o->no_bos, "Do not start the prompt with BOS");
  g->add_option("-t,--threads", o->threads, "Engine threads (default: CHATVEC_THREADS, OMP_NUM_THREADS or all cores)");
  g->callback([&run, o] { run = [o] {
    o->dir = model_path(o->dir);
    return do_generate(*o);
  }; });
}

// ---- chat -------------------------------------------------------------------

struct ChatOptions {
  std::string dir, system, messages_file;
  int64_t steps = 512;
  double temperature = 0.7, top_p = 0.9;
  uint64_t seed = 0;
  int64_t context = 0;
  int threads = 0;
};

// A conversation held in the model's KV cache: each turn renders the whole
// conversation with the chat template and feeds only the tokens after the
// longest prefix already in the cache.
class ChatSession {
 public:
  ChatSession(const ChatOptions& o)
      : model_(open_model(o.dir, o.context)),
        tpl_(open_chat_template(o.dir)),
        tok_(open_tokenizer(o.dir)),
        sampler_({o.temperature, o.top_p, o.seed}),
        steps_(o.steps) {
    if (!tok_)
      throw InputError(o.dir + (is_gguf_file(o.dir) ? ": no tokenizer.ggml metadata for chat"
                                                   : ": no tokenizer.json or tokenizer.model for chat"));
    const SpecialIds sp = model_special_ids(*model_, o.dir);
    stop_ = sp.eos;
    if (stop_.empty()) throw InputError(o.dir + ": no eos_token_id in generation_config.json or config.json");
  }

  // Generate the assistant's reply to `messages`; streams it to stdout when
  // `stream`.  Returns the reply text.
  std::string reply(const Json& messages, bool stream, GenerationStats* stats) {
    const std::string text = render_chat(tpl_, messages, true);
    // As apply_chat_template(tokenize=True): the template writes BOS itself.
    std::vector<int64_t> ids = to_ids64(tok_->encode(text, false));
    size_t common = 0;
    while (common < ids.size() && common < cached_.size() && ids[common] == cached_[common]) ++common;
    if (common == ids.size()) --common;  // feed at least one token to get logits
    std::vector<int64_t> feed(ids.begin() + int64_t(common), ids.end());
    cached_.assign(ids.begin(), ids.begin() + int64_t(common));
    cached_.insert(cached_.end(), feed.begin(), feed.end());
    std::vector<int64_t> out;
    StreamPrinter printer(*tok_, ids.back());
    int64_t next_pos = 0;
    *stats = generate_tokens(*model_, sampler_, feed, int64_t(common), steps_, stop_,
                             [&](int64_t t) {
                               out.push_back(t);
                               if (stream) printer.push(t);
                               return true;
                             },
                             &next_pos);
    // The cache now holds the prompt and every reply token but the last.
    cached_.insert(cached_.end(), out.begin(), out.end());
    cached_.resize(size_t(next_pos));
    printer.flush();
    return tok_->decode(to_ids32(out));
  }

 private:
  std::unique_ptr<LlamaModel> model_;
  ChatTemplate tpl_;
  std::unique_ptr<Tokenizer> tok_;
  Sampler sampler_;
  int64_t steps_;
  std::vector<int64_t> stop_, cached_;
};

int do_chat(const ChatOptions& o) {
  set_engine_threads(o.threads);
  ChatSession chat(o);
  Json messages = Json::array();
  if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
  GenerationStats st;
  if (!o.messages_file.empty()) {
    Json in = read_json_file(o.messages_file);
    if (in.is_object() && in.contains("messages")) in = in["messages"];
    if (!in.is_array()) throw InputError(o.messages_file + ": expected a JSON array of messages");
    Json replies = Json::array();
    for (size_t i = 0; i < in.size(); ++i) {
      const Json& m = in[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
        throw InputError(fmt::format("{}: message {} needs \"role\" and \"content\"", o.messages_file, i));
      messages.push_back(m);
      const bool answered = i + 1 < in.size() && in[i + 1]["role"] == "assistant";
      if (m["role"] == "user" && !answered) {
        const std::string r = chat.reply(messages, false, &st);
        replies.push_back(r);
        messages.push_back({{"role", "assistant"}, {"content", r}});
        if (!global_options().quiet) report_speed(st);
      }
    }
    Json out = Json::object();
    out["replies"] = replies;
    out["messages"] = messages;
    std::fputs(dump_json_pretty(out).c_str(), stdout);
    return 0;
  }
  const bool tty = isatty(0);
  std::string line;
  while (true) {
    if (tty) std::fputs("> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    messages.push_back({{"role", "user"}, {"content", line}});
    const std::string r = chat.reply(messages, true, &st);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    messages.push_back({{"role", "assistant"}, {"content", r}});
    if (!global_options().quiet) report_speed(st);
  }
  return 0;
}

void register_chat(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<ChatOptions>();
  CLI::App* c = app.add_subcommand("chat", "Talk with a model through its chat template (stdin lines are user turns)");
  c->add_option("model", o->dir, "Hugging Face model directory, GGUF file, or id org/name[@revision] in the local cache")
      ->required();
  c->add_option("-t,--threads", o->threads, "Engine threads (default: CHATVEC_THREADS, OMP_NUM_THREADS or all cores)");
  c->add_option("--system", o->system, "System message");
  c->add_option("--messages", o->messages_file,
                "JSON array of messages: answer each unanswered user turn, print {replies, messages} as JSON");
  c->add_option("-n,--steps", o->steps, "Largest reply length in tokens")->capture_default_str();
  c->add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")->capture_default_str();
  c->add_option("--top-p", o->top_p, "Nucleus sampling mass")->capture_default_str();
  c->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  c->add_option("--context", o->context, "KV cache length (default min(max_position_embeddings, 4096))");
  c->callback([&run, o] { run = [o] {
    o->dir = model_path(o->dir);
    return do_chat(*o);
  }; });
}

// ---- perplexity ---------------------------------------------------------------

struct PerplexityOptions {
  std::string dir, file;
  bool lines = false;
  int64_t context = 0;
};

int do_perplexity(const PerplexityOptions& o) {
  auto model = open_model(o.dir, o.context);
  std::unique_ptr<Tokenizer> tok = open_tokenizer(o.dir);
  if (!tok)
    throw InputError(o.dir + (is_gguf_file(o.dir) ? ": no tokenizer.ggml metadata to encode --file"
                                                 : ": no tokenizer.json or tokenizer.model to encode --file"));
  // The special tokens the tokenizer puts before a sequence (BOS), found by
  // encoding an empty text.
  const std::vector<int64_t> bos = to_ids64(tok->encode("", true));
  const std::string text = read_file(o.file);
  std::vector<std::vector<int64_t>> seqs;
  const int64_t ctx = model->context_length();
  auto add_chunks = [&](const std::vector<int64_t>& ids) {
    // Windows of at most the context length, each starting with BOS.
    const size_t room = size_t(ctx) - bos.size();
    for (size_t i = 0; i < ids.size(); i += room) {
      std::vector<int64_t> s = bos;
      s.insert(s.end(), ids.begin() + int64_t(i), ids.begin() + int64_t(std::min(ids.size(), i + room)));
      seqs.push_back(std::move(s));
    }
  };
  if (o.lines) {
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) add_chunks(to_ids64(tok->encode(line, false)));
      start = end + 1;
    }
  } else {
    add_chunks(to_ids64(tok->encode(text, false)));
  }
  double nll = 0;
  int64_t count = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& s : seqs) {
    const SequenceScore sc = score_sequence(*model, s);
    nll += sc.nll;
    count += sc.predicted;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (count == 0) throw InputError(o.file + ": no tokens to score");
  Json out = Json::object();
  out["perplexity"] = std::exp(nll / double(count));
  out["nll"] = nll;
  out["tokens"] = count;
  out["sequences"] = seqs.size();
  std::fputs(out.dump().c_str(), stdout);
  std::fputs("\n", stdout);
  if (!global_options().quiet) std::fprintf(stderr, "scored %lld tokens, %.1f tokens/s\n", (long long)count, count / secs);
  return 0;
}

void register_perplexity(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* c = app.add_subcommand("perplexity", "Perplexity of a model on a text file (JSON on stdout)");
  c->add_option("model", o->dir, "Hugging Face model directory, GGUF file, or id org/name[@revision] in the local cache")
      ->required();
  c->add_option("--file", o->file, "UTF-8 text file")->required();
  c->add_flag("--lines", o->lines, "Score each non-empty line as its own sequence (BOS first)");
  c->add_option("--context", o->context, "Window length (default min(max_position_embeddings, 4096))");
  c->callback([&run, o] { run = [o] {
    o->dir = model_path(o->dir);
    return do_perplexity(*o);
  }; });
}

}  // namespace

void register_engine_commands(CLI::App& app, std::function<int()>& run) {
  register_convert(app, run);
  register_generate(app, run);
  register_chat(app, run);
  register_perplexity(app, run);
}

}  // namespace chatvec::cli
