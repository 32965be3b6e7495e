// convert, generate, chat, perplexity: the engine's commands.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/core.h>
#include <memory>
#include <string>

#include "cli/command.h"
#include "convert/llama2c_import.h"
#include "core/error.h"
#include "core/json_util.h"
#include "core/file_util.h"
#include "engine/generation.h"
#include "engine/llama_model.h"
#include "engine/sampler.h"

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

// The text side of a model directory: encode a prompt, decode ids.
class TextCodec {
 public:
  virtual ~TextCodec() = default;
  virtual std::vector<int64_t> encode(const std::string& text) const = 0;  // no BOS
  virtual std::string decode(const std::vector<int64_t>& ids) const = 0;
};

std::unique_ptr<TextCodec> open_codec(const std::string& /*dir*/) { return nullptr; }

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
  const std::string gen = m.checkpoint().dir() + "/generation_config.json";
  if (path_exists(gen)) {
    Json g = read_json_file(gen);
    if (auto b = ids_field(g, "bos_token_id", gen); !b.empty()) s.bos = b;
    if (auto e = ids_field(g, "eos_token_id", gen); !e.empty()) s.eos = e;
  }
  return s;
}

bool add_bos_default(const std::string& dir) {
  const std::string tc = dir + "/tokenizer_config.json";
  if (!path_exists(tc)) return true;
  Json j = read_json_file(tc);
  auto it = j.find("add_bos_token");
  if (it == j.end()) return true;  // LlamaTokenizer's default
  return it->is_boolean() && it->get<bool>();
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

// Prints the text of a growing id sequence as it becomes valid UTF-8.
class StreamPrinter {
 public:
  explicit StreamPrinter(const TextCodec& codec) : codec_(codec) {}
  void push(int64_t id) {
    ids_.push_back(id);
    const std::string text = codec_.decode(ids_);
    // Hold back an incomplete UTF-8 sequence at the end.
    size_t n = text.size(), k = n;
    while (k > 0 && n - k < 4 && (uint8_t(text[k - 1]) & 0xC0) == 0x80) --k;
    if (k > 0 && uint8_t(text[k - 1]) >= 0xC0) {
      const uint8_t lead = uint8_t(text[k - 1]);
      const size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
      if (n - (k - 1) < need) n = k - 1;
    }
    if (n > printed_ && text.compare(0, printed_, printed_text_) == 0) {
      std::fwrite(text.data() + printed_, 1, n - printed_, stdout);
      std::fflush(stdout);
      printed_text_ = text.substr(0, n);
      printed_ = n;
    }
  }

 private:
  const TextCodec& codec_;
  std::vector<int64_t> ids_;
  std::string printed_text_;
  size_t printed_ = 0;
};

// ---- generate ---------------------------------------------------------------

struct GenerateOptions {
  std::string dir, prompt, prompt_ids;
  int64_t steps = 256;
  double temperature = 1.0, top_p = 0.9;
  uint64_t seed = 0;
  int64_t context = 0;
  bool no_bos = false;
};

int do_generate(const GenerateOptions& o) {
  auto model = LlamaModel::open(o.dir, {o.context});
  const SpecialIds sp = special_ids(*model);
  Sampler sampler({o.temperature, o.top_p, o.seed});
  std::unique_ptr<TextCodec> codec = open_codec(o.dir);
  std::vector<int64_t> prompt;
  if (!o.prompt_ids.empty()) {
    prompt = parse_ids(o.prompt_ids);
  } else {
    if (!codec) throw InputError(o.dir + ": no tokenizer available for --prompt (use --prompt-ids)");
    if (!o.no_bos && add_bos_default(o.dir)) {
      if (sp.bos.empty()) throw InputError(o.dir + ": no bos_token_id in generation_config.json or config.json");
      prompt.push_back(sp.bos[0]);
    }
    const std::vector<int64_t> text = codec->encode(o.prompt);
    prompt.insert(prompt.end(), text.begin(), text.end());
  }
  if (prompt.empty()) {
    if (sp.bos.empty()) throw InputError("empty prompt and no bos_token_id to start from");
    prompt.push_back(sp.bos[0]);
  }
  std::unique_ptr<StreamPrinter> printer;
  if (codec && o.prompt_ids.empty()) {
    std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
    std::fflush(stdout);
    printer = std::make_unique<StreamPrinter>(*codec);
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
  std::printf("\n");
  report_speed(st);
  return 0;
}

void register_generate(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* g = app.add_subcommand("generate", "Continue a prompt with a model (CPU inference), streaming to stdout");
  g->add_option("model", o->dir, "Hugging Face model directory")->required();
  auto* p = g->add_option("--prompt", o->prompt, "Prompt text (BOS first when the tokenizer config says so)");
  g->add_option("--prompt-ids", o->prompt_ids, "Prompt as token ids (\"1,403,407\"); prints ids instead of text")
      ->excludes(p);
  g->add_option("-n,--steps", o->steps, "Largest number of tokens to generate")->capture_default_str();
  g->add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")->capture_default_str();
  g->add_option("--top-p", o->top_p, "Nucleus sampling mass")->capture_default_str();
  g->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  g->add_option("--context", o->context, "KV cache length (default min(max_position_embeddings, 4096))");
  g->add_flag("--no-bos", o->no_bos, "Do not start the prompt with BOS");
  g->callback([&run, o] { run = [o] { return do_generate(*o); }; });
}

}  // namespace

void register_engine_commands(CLI::App& app, std::function<int()>& run) {
  register_convert(app, run);
  register_generate(app, run);
}

}  // namespace chatvec::cli
