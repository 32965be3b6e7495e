// convert, generate, chat, perplexity: the engine's commands.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/core.h>
#include <memory>
#include <string>

#include "cli/command.h"
#include "convert/llama2c_import.h"
#include "core/error.h"

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

}  // namespace

void register_engine_commands(CLI::App& app, std::function<int()>& run) {
  register_convert(app, run);
}

}  // namespace chatvec::cli
