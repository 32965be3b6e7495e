// tune: merge and evaluate a grid of candidates, rank them by a stated rule
// (src/tune/tune.h).  This file only parses flags and prints.
#include <cstdio>
#include <filesystem>
#include <fmt/core.h>
#include <map>
#include <memory>

#include "cli/command.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "merge/recipe.h"
#include "tune/tune.h"

namespace chatvec::cli {
namespace {

struct TuneCli {
  std::string base, chat, target, out, ratios = "0,0.25,0.5,0.75,1,1.25";
  std::string prompts, data_dir, lang, recipe, alternatives;
  bool ratios_given = false;
  std::vector<std::string> lang_data, heldout;
  std::string dtype = "auto", embeddings = "auto", special_tokens = "transplant", chat_template;
  int64_t max_new = 48, heldout_lines = 0, max_tasks = 0;
  bool resume = false, write_best = false, force = false;
  tune::RankRule rule;
  int threads = 0;
};

std::pair<std::string, std::string> lang_file(const std::string& s, const char* flag) {
  const size_t eq = s.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
    throw InputError(fmt::format("{} expects LANG=FILE, got \"{}\"", flag, s));
  return {s.substr(0, eq), s.substr(eq + 1)};
}

std::string cmdline() {
  std::string raw;
  try {
    raw = read_file("/proc/self/cmdline");
  } catch (...) {
    return "";
  }
  std::string out = "chatvec";
  size_t start = raw.find('\0');
  while (start != std::string::npos && start + 1 < raw.size()) {
    const size_t end = raw.find('\0', start + 1);
    out += " " + raw.substr(start + 1, (end == std::string::npos ? raw.size() : end) - start - 1);
    start = end;
  }
  return out;
}

class StderrTuneReporter : public tune::TuneReporter {
 public:
  void line(const std::string& text) override {
    if (!global_options().quiet) fmt::print(stderr, "{}\n", text);
  }
  void warning(const std::string& text) override {
    if (!global_options().quiet) fmt::print(stderr, "chatvec: warning: {}\n", text);
  }
  void candidate_begin(size_t i, size_t n, const std::string& name) override {
    if (!global_options().quiet) fmt::print(stderr, "[{}/{}] {}: merging and evaluating\n", i + 1, n, name);
  }
  void candidate_done(size_t i, size_t n, const std::string& name, const Json& m, bool reused, double eta) override {
    if (global_options().quiet) return;
    auto v = [&](const char* k, const char* f = "{:.3f}") {
      return m.contains(k) ? fmt::format(fmt::runtime(f), m[k].get<double>()) : std::string("-");
    };
    std::string s = fmt::format("[{}/{}] {}: f1* {} eos* {} lang* {} tokens {} bits/byte {}", i + 1, n, name,
                                v("f1_strict"), v("eos_strict"), v("lang_share_strict"), v("mean_tokens", "{:.1f}"),
                                v("bits_per_byte", "{:.4f}"));
    if (reused)
      s += " (reused)";
    else if (eta >= 0)
      s += eta > 0 ? "; ETA " + format_duration(eta) : "; last candidate";
    fmt::print(stderr, "{}\n", s);
  }
};

int do_tune(TuneCli& c) {
  tune::TuneOptions o;
  // --data DIR: the manifest scripts/make_tune_data.py writes; flags win.
  std::map<std::string, std::string> lang_data, heldout;
  std::vector<std::string> lang_order, heldout_order;
  auto put = [](std::map<std::string, std::string>& m, std::vector<std::string>& order, const std::string& l,
                const std::string& f) {
    if (!m.count(l)) order.push_back(l);
    m[l] = f;
  };
  if (!c.data_dir.empty()) {
    const std::string mf = c.data_dir + "/tune-data.json";
    if (!path_exists(mf))
      throw InputError("--data " + c.data_dir + ": no tune-data.json in it (made by scripts/make_tune_data.py)");
    const Json m = read_json_file(mf);
    auto rel = [&](const Json& v, const std::string& what) {
      if (!v.is_string()) throw InputError(mf + ": \"" + what + "\" must be a file name");
      return (std::filesystem::path(c.data_dir) / v.get<std::string>()).string();
    };
    if (c.prompts.empty() && m.contains("prompts")) c.prompts = rel(m["prompts"], "prompts");
    for (const char* k : {"lang_data", "heldout"})
      if (m.contains(k)) {
        if (!m[k].is_object()) throw InputError(mf + ": \"" + std::string(k) + "\" must be an object LANG: FILE");
        for (const auto& [l, f] : m[k].items())
          put(k == std::string("lang_data") ? lang_data : heldout, k == std::string("lang_data") ? lang_order : heldout_order,
              l, rel(f, std::string(k) + "." + l));
      }
    if (c.lang.empty() && m.contains("lang") && m["lang"].is_string()) c.lang = m["lang"].get<std::string>();
  }
  for (const auto& s : c.lang_data) {
    auto [l, f] = lang_file(s, "--lang-data");
    put(lang_data, lang_order, l, f);
  }
  for (const auto& s : c.heldout) {
    auto [l, f] = lang_file(s, "--heldout");
    put(heldout, heldout_order, l, f);
  }
  if (c.prompts.empty()) throw InputError("chatvec tune: give --prompts FILE.jsonl (or --data DIR)");
  for (const auto& l : lang_order) o.eval.lang_data.emplace_back(l, lang_data[l]);
  for (const auto& l : heldout_order) o.eval.heldout.emplace_back(l, heldout[l]);
  o.eval.tasks = c.prompts;
  o.eval.max_new = c.max_new;
  o.eval.heldout_lines = c.heldout_lines;
  o.eval.max_tasks = c.max_tasks;

  // The base recipe: --recipe FILE (a merge recipe), flags given win.
  MergeJob job;
  job.kind = JobKind::Merge;
  if (!c.recipe.empty()) {
    job = read_recipe_file(c.recipe);
    if (job.kind != JobKind::Merge) throw InputError("--recipe " + c.recipe + ": tune needs a merge recipe");
    if (!job.output.empty()) job.output.clear();
  }
  if (!c.base.empty()) job.base = model_path(c.base);
  if (!c.chat.empty()) job.chat = model_path(c.chat);
  if (!c.target.empty()) job.target = model_path(c.target);
  for (const auto& [flag, v] : {std::pair{"--base", &job.base}, {"--chat", &job.chat}, {"--target", &job.target}})
    if (v->empty()) throw InputError(std::string("chatvec tune: give ") + flag + " (or --recipe with it)");
  if (c.dtype != "auto") job.dtype = dtype_from_user(c.dtype);
  if (c.embeddings != "auto") job.embeddings = *embedding_policy_from_name(c.embeddings);
  if (c.special_tokens != "transplant") job.transplant_special_tokens = false;
  if (!c.chat_template.empty()) job.chat_template_file = c.chat_template;
  job.threads = c.threads;
  // The grid (none when only --alternatives are given), then the alternatives.
  if (c.alternatives.empty() || c.ratios_given) o.candidates = tune::ratio_grid(job, tune::parse_ratio_list(c.ratios));
  if (!c.alternatives.empty())
    for (auto& a : tune::read_alternatives(c.alternatives, job)) o.candidates.push_back(std::move(a));
  o.target = job.target;
  o.lang = c.lang;
  o.out = c.out;
  o.resume = c.resume;
  o.write_best = c.write_best;
  o.force = c.force;
  o.rule = c.rule;
  o.threads = c.threads;
  o.command_line = cmdline();

  StderrTuneReporter report;
  const tune::TuneResult r = tune::run_tune(o, report);
  std::fputs(r.table.c_str(), stdout);
  report.line(fmt::format("wrote {} ({} candidates evaluated, {} reused); chosen: {}", r.out, r.evaluated, r.reused,
                          r.choice));
  return 0;
}

}  // namespace

void register_tune(CLI::App& app, std::function<int()>& run) {
  auto c = std::make_shared<TuneCli>();
  CLI::App* t = app.add_subcommand(
      "tune", "Merge and evaluate a grid of ratios (end of turn, answer length, language share, held-out bits/byte, "
              "instruction scores) and pick one by a stated rule");
  t->add_option("--base", c->base, "The base model both others derive from");
  t->add_option("--chat", c->chat, "The base's chat model");
  t->add_option("--target", c->target, "The model to give chat abilities (also the bits/byte reference)");
  t->add_option("--recipe", c->recipe,
                "A merge recipe (chatvec merge --recipe): every candidate's settings; the grid replaces its ratio");
  t->add_option("--ratios", c->ratios, "The grid: ratios separated by commas (with --alternatives: only if given)")
      ->capture_default_str()
      ->each([c](const std::string&) { c->ratios_given = true; });
  t->add_option("--alternatives", c->alternatives,
                "JSON list of {\"name\", \"recipe\": {partial recipe}}: more candidates (schedules, operations, "
                "skipped modules), each over the base recipe");
  t->add_option("--prompts", c->prompts, "Prompts, JSON lines {id, lang, type, messages, expected} (as chatvec eval --tasks)");
  t->add_option("--data", c->data_dir,
                "A prompt set made by scripts/make_tune_data.py (build/tune-data): prompts, language and held-out "
                "text, target language; flags given besides it win");
  t->add_option("--lang-data", c->lang_data, "LANG=FILE: text the language identifier learns LANG from; repeatable");
  t->add_option("--heldout", c->heldout, "LANG=FILE: held-out text for bits/byte; repeatable");
  t->add_option("--lang", c->lang, "The target language (default: the only --heldout language, or the prompts' only one)");
  t->add_option("-o,--output", c->out, "Output directory (built in OUT.partial, renamed into place when complete)")
      ->required();
  t->add_flag("--resume", c->resume, "Continue OUT.partial (same settings only); finished candidates are not redone");
  t->add_flag("--write-best", c->write_best, "Also write the winner's merged model as OUT/best");
  t->add_flag("-f,--force", c->force, "Replace OUT if it exists");
  t->add_option("--rank-metric", c->rule.metric,
                "What the rule maximizes: f1_strict, exact_strict, eos_strict, lang_share_strict, valid, f1, exact, "
                "eos, lang_share")
      ->capture_default_str();
  t->add_option("--min-lang-share", c->rule.min_lang_share,
                "A candidate qualifies with at least this strict language share in the target language")
      ->capture_default_str();
  t->add_option("--max-bpb-increase", c->rule.max_bpb_increase,
                "... and held-out bits/byte at most this fraction above the target's (negative: no such condition)")
      ->capture_default_str();
  t->add_option("--max-new", c->max_new, "Token budget of each answer")->capture_default_str();
  t->add_option("--heldout-lines", c->heldout_lines, "Use the first N held-out lines (0: all)")->capture_default_str();
  t->add_option("--max-tasks", c->max_tasks, "Use the first N prompts (0: all)")->capture_default_str();
  t->add_option("--dtype", c->dtype, "Candidates' dtype: auto (the target's per tensor), bf16, f16, f32")
      ->check(CLI::IsMember({"auto", "bf16", "f16", "f32", "fp16", "fp32", "bfloat16", "float16", "float32"}))
      ->capture_default_str();
  t->add_option("--embeddings", c->embeddings, "Embedding/LM-head rows when vocabularies differ (as chatvec merge)")
      ->check(CLI::IsMember({"auto", "full", "shared", "align", "skip"}))
      ->capture_default_str();
  t->add_option("--special-tokens", c->special_tokens, "transplant or none (as chatvec merge)")
      ->check(CLI::IsMember({"transplant", "none"}))
      ->capture_default_str();
  t->add_option("--chat-template", c->chat_template, "Jinja file used as every candidate's chat template")
      ->check(CLI::ExistingFile);
  t->add_option("-t,--threads", c->threads, "Threads for merging and evaluating (0: OMP_NUM_THREADS or all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  t->callback([&run, c] { run = [c] { return do_tune(*c); }; });
}

}  // namespace chatvec::cli
