// train, eval: fine-tuning on the CPU and the instruction/language/perplexity
// evaluation used by the reproduction experiment (docs/reproduction.md).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fmt/core.h>
#include <memory>
#include <string>

#include "cli/command.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "core/staging.h"
#include "eval/eval.h"
#include "train/trainer.h"

namespace chatvec::cli {
namespace {

void say_line(const std::string& s) {
  if (!global_options().quiet) std::fprintf(stderr, "%s\n", s.c_str());
}

int do_train(const train::TrainOptions& o) {
  const train::TrainReport r = train::run_training(o, say_line);
  say_line(fmt::format("trained {} steps on {} tokens ({} scored) in {:.1f} s ({:.0f} tokens/s); loss {:.4f} -> {:.4f}; "
                       "wrote {}",
                       r.steps, r.tokens, r.scored_tokens, r.seconds, r.seconds > 0 ? double(r.tokens) / r.seconds : 0.0,
                       r.first_loss, r.last_loss, o.out));
  return 0;
}

std::pair<std::string, std::string> lang_pair(const std::string& s, const char* flag) {
  const size_t eq = s.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
    throw InputError(fmt::format("{} expects LANG=FILE, got \"{}\"", flag, s));
  return {s.substr(0, eq), s.substr(eq + 1)};
}

struct EvalCli {
  eval::EvalOptions o;
  std::vector<std::string> lang, heldout;
  std::string json_out;
};

int do_eval(EvalCli& c) {
  for (const auto& s : c.lang) c.o.lang_data.push_back(lang_pair(s, "--lang-data"));
  for (const auto& s : c.heldout) c.o.heldout.push_back(lang_pair(s, "--heldout"));
  // --json FILE: staged beside it and renamed into place (complete or
  // absent); its directory is checked before the evaluation starts.
  std::unique_ptr<StagedOutput> json_out;
  if (!c.json_out.empty()) json_out = std::make_unique<StagedOutput>(c.json_out, StagedOutput::Kind::File, true);
  const Json report = eval::run_eval(c.o);
  if (json_out) {
    write_file(json_out->path(), dump_json_pretty(report) + "\n");
    json_out->commit();
  }
  std::fputs(eval::format_report(report).c_str(), stdout);
  return 0;
}

}  // namespace

void register_train(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<train::TrainOptions>();
  CLI::App* t = app.add_subcommand("train", "Fine-tune a Llama directory on the CPU: plain text (continual "
                                             "pre-training) or chat (.jsonl conversations, loss on assistant turns)");
  t->add_option("model", o->model_dir, "Hugging Face Llama directory, or id org/name[@revision] in the local cache")->required();
  t->add_option("--data", o->data, "Training data: text (one document per line) or JSONL {\"messages\": [...]}")
      ->required();
  t->add_option("-o,--output", o->out, "Output directory")->required();
  t->add_option("--mode", o->mode, "auto (.jsonl: chat), text or chat")->capture_default_str();
  t->add_option("--steps", o->steps, "Optimizer steps")->capture_default_str();
  t->add_option("--batch", o->batch, "Sequences per step")->capture_default_str();
  t->add_option("--seq-len", o->seq_len, "Tokens per sequence (chat: longer conversations are cut)")
      ->capture_default_str();
  t->add_option("--lr", o->lr, "Peak learning rate")->capture_default_str();
  t->add_option("--min-lr-ratio", o->min_lr_ratio, "Final learning rate as a fraction of --lr")->capture_default_str();
  t->add_option("--warmup", o->warmup, "Linear warm-up steps")->capture_default_str();
  t->add_option("--weight-decay", o->weight_decay, "AdamW decoupled weight decay (matrices only)")
      ->capture_default_str();
  t->add_option("--beta1", o->beta1)->capture_default_str();
  t->add_option("--beta2", o->beta2)->capture_default_str();
  t->add_option("--clip", o->clip, "Clip the global gradient norm to this (0: no clipping)")->capture_default_str();
  t->add_option("--seed", o->seed, "Seed of the batch sampling")->capture_default_str();
  t->add_option("--save-every", o->save_every, "Also write OUTPUT-step<N> every N steps")->capture_default_str();
  t->add_option("--log-every", o->log_every, "Progress line every N steps")->capture_default_str();
  t->add_option("--max-lines", o->max_lines, "Use only the first N lines of --data")->capture_default_str();
  t->add_option("--extend-vocab", o->extend_vocab,
                "Append N tokens learned from the text (pair merges within words); new rows: mean of their pieces")
      ->capture_default_str();
  t->add_option("--chat-template", o->chat_template, "Jinja file installed as the output's chat template");
  t->add_option("--add-special", o->add_special, "Append this special token (e.g. an end-of-turn token); repeatable");
  t->add_option("--eos-token", o->eos_token, "Make this token the end of turn (tokenizer_config, generation_config)");
  t->add_option("--threads", o->threads, "OpenMP threads (0: default)")->capture_default_str();
  t->add_flag("-f,--force", o->force, "Replace an existing output directory");
  t->callback([&run, o] { run = [o] {
    o->model_dir = model_path(o->model_dir);
    return do_train(*o);
  }; });
}

void register_eval(CLI::App& app, std::function<int()>& run) {
  auto c = std::make_shared<EvalCli>();
  CLI::App* e = app.add_subcommand("eval", "Score a chat model on instruction tasks (greedy), end of turn, answer "
                                            "language and held-out perplexity");
  e->add_option("model", c->o.model_dir, "Hugging Face Llama directory with a chat template, or cached id org/name[@revision]")->required();
  e->add_option("--tasks", c->o.tasks, "Tasks, JSON lines {id, lang, type, messages, expected}")->required();
  e->add_option("--max-new", c->o.max_new, "Token budget of each answer")->capture_default_str();
  e->add_option("--lang-data", c->lang, "LANG=FILE: text the language identifier learns LANG from; repeatable");
  e->add_option("--heldout", c->heldout, "LANG=FILE: held-out text for perplexity; repeatable");
  e->add_option("--heldout-lines", c->o.heldout_lines, "Use the first N held-out lines (0: all)")->capture_default_str();
  e->add_option("--max-tasks", c->o.max_tasks, "Use the first N tasks (0: all)")->capture_default_str();
  e->add_option("--json", c->json_out, "Write the full report (with every answer) here");
  e->callback([&run, c] { run = [c] {
    c->o.model_dir = model_path(c->o.model_dir);
    return do_eval(*c);
  }; });
}

}  // namespace chatvec::cli
