// merge, extract, apply: the chat-vector commands.  Flags become a MergeJob
// (src/merge/pipeline.h), which the library runs; this file only parses and
// prints.
#include <unistd.h>

#include <cstdio>
#include <fmt/core.h>
#include <memory>

#include "cli/command.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/file_util.h"
#include "gguf/gguf_export.h"
#include "merge/pipeline.h"
#include "merge/recipe.h"

namespace chatvec::cli {

namespace {

// Flags shared by merge, extract and apply, as the user spelled them.
struct CommonOptions {
  std::string out;
  std::string dtype = "auto";
  int threads = 0;
  std::vector<std::string> include, exclude;
  bool force = false;
  bool dry_run = false;
  std::string shard_size = "5GB";
  std::string chunk_size = "16MiB";
  std::string format = "safetensors";  // merge/apply: or gguf
  std::string gguf_type;               // --gguf-type (default from --dtype, f16 when auto)
  std::string recipe;                  // merge/apply: --recipe FILE
  std::vector<std::string> ratio_for;  // merge/apply: --ratio-for REGEX=VALUE
  // Operations on the vector (merge/apply).
  double dare = 0;
  uint64_t seed = 0;
  double keep = 1;
  std::string keep_rescale = "none";
  double clip = 0;
  bool ties = false;
  CLI::App* app = nullptr;  // to ask which flags were given
  // Was the flag given on the command line?
  bool given(const char* flag) const { return app->get_option(flag)->count() > 0; }
};

struct MergeOptions : CommonOptions {
  std::string base, chat, target;
  std::string ratio = "1";
  std::string embeddings = "auto";
  std::string special_tokens = "transplant";
  std::string chat_template;
};

struct ExtractOptions : CommonOptions {
  std::string base, chat;
};

struct ApplyOptions : CommonOptions {
  std::string target;
  std::vector<std::string> vectors;
  std::vector<std::string> ratios;
  std::string embeddings = "auto";
  std::string special_tokens = "transplant";
  int token_rows_from = 0;
};

// --embeddings and --special-tokens, as merge and apply share them.
void add_vocabulary_options(CLI::App* sub, std::string& embeddings, std::string& special_tokens) {
  sub->add_option("--embeddings", embeddings,
                  "Embedding/LM-head rows when vocabularies differ: auto, full, shared, align, skip")
      ->check(CLI::IsMember({"auto", "full", "shared", "align", "skip"}))
      ->capture_default_str();
  sub->add_option("--special-tokens", special_tokens,
                  "Tokens the chat model added (chat template, EOS): transplant them with their rows, or none")
      ->check(CLI::IsMember({"transplant", "none"}))
      ->capture_default_str();
}

// --ratio-for, the operations and --recipe (merge and apply).
void add_vector_options(CLI::App* sub, CommonOptions& o) {
  sub->add_option("--ratio-for", o.ratio_for,
                  "REGEX=VALUE: tensors whose name matches REGEX get ratio VALUE (repeatable, first match wins; "
                  "e.g. 'embed_tokens|lm_head=0')");
  sub->add_option("--dare", o.dare, "DARE: drop each element of the vector with probability P in [0, 1), rescale the "
                                    "rest by 1/(1-P)");
  sub->add_option("--seed", o.seed, "DARE's seed (see docs/operations.md for the random function)")
      ->capture_default_str();
  sub->add_option("--keep", o.keep, "Magnitude pruning: keep the fraction K in (0, 1] of largest |delta| per tensor "
                                    "(with --ties: the trim)");
  sub->add_option("--keep-rescale", o.keep_rescale, "After --keep: rescale the kept values to keep the norm: none, l1, l2")
      ->check(CLI::IsMember({"none", "l1", "l2"}))
      ->capture_default_str();
  sub->add_option("--clip", o.clip, "Norm clipping: scale each tensor's vector so that ||delta|| <= C * ||target tensor||");
  sub->add_flag("--ties", o.ties, "TIES (apply with two or more vectors): trim each to --keep, elect the sign per "
                                  "element by total mass, add the mean of the agreeing values");
  sub->add_option("--recipe", o.recipe, "Read the job from this recipe (JSON; an output's chatvec.json, or a GGUF a merge wrote); flags given "
                                        "on the command line override its keys")
      ->check(CLI::ExistingFile);
}

void add_common(CLI::App* sub, CommonOptions& o, bool vector_output) {
  o.app = sub;
  auto* out = sub->add_option("-o,--output", o.out,
                              vector_output ? "Output chat-vector directory" : "Output model directory");
  if (vector_output) out->required();
  sub->add_option("--dtype", o.dtype,
                  vector_output ? "Vector dtype: auto (the chat model's per tensor), bf16, f16, f32. f32 is exact: "
                                  "apply then gives bit for bit what merge gives; bf16/f16 round chat - base once more "
                                  "(see the README for the error this adds)"
                                : "Output dtype: auto (the target's per tensor), bf16, f16, f32")
      ->check(CLI::IsMember({"auto", "bf16", "f16", "f32", "fp16", "fp32", "bfloat16", "float16", "float32"}));
  sub->add_option("-t,--threads", o.threads, "Threads for the arithmetic (default: all cores)")
      ->check(CLI::Range(0, 1024));
  sub->add_option("--include", o.include,
                  "Only tensors whose name matches this regex (repeatable); others are copied from the target");
  sub->add_option("--exclude", o.exclude, "Leave tensors matching this regex unchanged (repeatable)");
  sub->add_flag("-f,--force", o.force, "Replace OUT if it exists");
  sub->add_flag("-n,--dry-run", o.dry_run, "Print the plan and write nothing");
  sub->add_option("--shard-size", o.shard_size, "Largest shard (decimal units as transformers: 5GB, 500MB, 2GiB)")
      ->capture_default_str();
  sub->add_option("--chunk-size", o.chunk_size,
                  "Output bytes computed per step: memory against overhead; the result does not depend on it")
      ->capture_default_str();
  if (!vector_output) {
    sub->add_option("--format", o.format, "Output: safetensors (a model directory) or gguf (one file for llama.cpp)")
        ->check(CLI::IsMember({"safetensors", "gguf"}))
        ->capture_default_str();
    sub->add_option("--gguf-type", o.gguf_type, "With --format gguf: f32, f16, bf16 or q8_0 (default: --dtype, f16 for auto)")
        ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  }
}

// The command line as typed, for the model card.
std::string command_line_string() {
  // /proc/self/cmdline holds the arguments separated by NULs.
  std::string raw;
  try {
    raw = read_file("/proc/self/cmdline");
  } catch (...) {
    return "";
  }
  std::string out;
  size_t start = 0;
  bool first = true;
  while (start < raw.size()) {
    size_t end = raw.find('\0', start);
    if (end == std::string::npos) end = raw.size();
    std::string arg = raw.substr(start, end - start);
    if (first) {
      arg = "chatvec";
      first = false;
    }
    bool plain = !arg.empty() && arg.find_first_not_of(
                                     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+") ==
                                     std::string::npos;
    if (!out.empty()) out += ' ';
    out += plain ? arg : "'" + arg + "'";
    start = end + 1;
  }
  return out;
}

// The job: from the recipe when there is one, then every flag given (all
// of them without a recipe: then the defaults are the flags' defaults).
MergeJob job_from(const CommonOptions& o, JobKind kind) {
  MergeJob job;
  job.kind = kind;
  const bool recipe = !o.recipe.empty();
  if (recipe) {
    job = read_recipe_file(o.recipe);
    if (job.kind != kind)
      throw InputError(o.recipe + ": a recipe for `chatvec " + (job.kind == JobKind::Merge ? "merge" : "apply") +
                       "`, not for `chatvec " + (kind == JobKind::Merge ? "merge" : "apply") + "`");
  }
  auto use = [&](const char* flag) { return !recipe || o.given(flag); };
  if (use("--output")) job.output = o.out;
  if (use("--dtype")) job.dtype = o.dtype == "auto" ? std::nullopt : dtype_from_user(o.dtype);
  if (o.app->get_option_no_throw("--format") && use("--format"))
    job.format = o.format == "gguf" ? OutputFormat::Gguf : OutputFormat::Safetensors;
  if (o.app->get_option_no_throw("--gguf-type") && use("--gguf-type") && !o.gguf_type.empty())
    job.gguf_type = gguf::tensor_type_from_user(o.gguf_type);
  if (use("--include")) job.include = o.include;
  if (use("--exclude")) job.exclude = o.exclude;
  if (use("--shard-size")) job.shard_size = parse_size(o.shard_size);
  job.chunk_bytes = parse_size(o.chunk_size);
  job.threads = o.threads;
  job.force = o.force;
  job.dry_run = o.dry_run;
  job.command_line = command_line_string();
  if (kind == JobKind::Extract) return job;
  if (use("--dare")) job.ops.dare = o.dare;
  if (use("--seed")) job.ops.seed = o.seed;
  if (use("--keep")) job.ops.keep = o.keep;
  if (use("--keep-rescale")) job.ops.rescale = *rescale_from_name(o.keep_rescale);
  if (use("--clip")) job.ops.clip = o.clip;
  if (use("--ties")) job.ops.ties = o.ties;
  if (job.output.empty()) throw InputError("-o/--output is required (or \"output\" in --recipe)");
  return job;
}

std::vector<RatioOverride> ratio_overrides(const CommonOptions& o) {
  std::vector<RatioOverride> out;
  for (const auto& r : o.ratio_for) out.push_back(parse_ratio_override(r, "--ratio-for"));
  return out;
}

// A required input: the flag's value, else the recipe's; one line if neither.
void require_input(std::string& field, const std::string& flag_value, bool given, const char* flag) {
  if (given) field = flag_value;
  if (field.empty()) throw InputError(std::string(flag) + " is required (give it, or its key in --recipe)");
}

int run(const MergeJob& job) {
  StderrReporter report;
  const JobResult r = run_job(job, report);
  if (!r.dry_run)
    report.line(fmt::format("wrote {} ({}) in {} ({}/s)", r.output, human_bytes(r.bytes), format_duration(r.seconds),
                            human_bytes(uint64_t(double(r.bytes) / std::max(r.seconds, 1e-6)))));
  return 0;
}

int run_merge(const MergeOptions& o) {
  MergeJob job = job_from(o, JobKind::Merge);
  const bool recipe = !o.recipe.empty();
  auto use = [&](const char* flag) { return !recipe || o.given(flag); };
  require_input(job.base, o.base, use("--base"), "--base");
  require_input(job.chat, o.chat, use("--chat"), "--chat");
  require_input(job.target, o.target, use("--target"), "--target");
  if (use("--ratio")) job.ratio.points = parse_ratio_points(o.ratio, "--ratio");
  if (use("--ratio-for")) job.ratio.overrides = ratio_overrides(o);
  if (use("--embeddings")) job.embeddings = *embedding_policy_from_name(o.embeddings);
  if (use("--special-tokens")) job.transplant_special_tokens = o.special_tokens == "transplant";
  if (use("--chat-template")) job.chat_template_file = o.chat_template;
  return run(job);
}

int run_extract(const ExtractOptions& o) {
  MergeJob job = job_from(o, JobKind::Extract);
  job.base = o.base;
  job.chat = o.chat;
  return run(job);
}

int run_apply(const ApplyOptions& o) {
  MergeJob job = job_from(o, JobKind::Apply);
  const bool recipe = !o.recipe.empty();
  auto use = [&](const char* flag) { return !recipe || o.given(flag); };
  require_input(job.target, o.target, use("--target"), "--target");
  if (use("--vector")) {
    job.vectors.clear();
    for (const auto& v : o.vectors) job.vectors.push_back(ApplyVector{v, 1.0});
  }
  if (job.vectors.empty()) throw InputError("--vector is required (give one or more, or \"vectors\" in --recipe)");
  if (!o.ratios.empty() && o.ratios.size() != job.vectors.size())
    throw InputError("give one --ratio per --vector (" + std::to_string(job.vectors.size()) + " vectors, " +
                     std::to_string(o.ratios.size()) + " ratios)");
  for (size_t i = 0; i < o.ratios.size(); ++i) job.vectors[i].ratio.points = parse_ratio_points(o.ratios[i], "--ratio");
  if (use("--ratio-for"))
    for (auto& v : job.vectors) v.ratio.overrides = ratio_overrides(o);
  if (use("--embeddings")) job.embeddings = *embedding_policy_from_name(o.embeddings);
  if (use("--special-tokens")) job.transplant_special_tokens = o.special_tokens == "transplant";
  if (use("--token-rows-from")) job.token_rows_from = o.token_rows_from;
  return run(job);
}

}  // namespace

void register_merge(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<MergeOptions>();
  CLI::App* sub = app.add_subcommand("merge", "out = target + ratio * (chat - base), in one streaming pass");
  sub->add_option("--base", o->base, "The base model both others derive from (e.g. Llama-2) (required unless in --recipe)");
  sub->add_option("--chat", o->chat, "The base's chat model (e.g. Llama-2-chat) (required unless in --recipe)");
  sub->add_option("--target", o->target,
                  "The model to give chat abilities (e.g. continually pre-trained) (required unless in --recipe)");
  sub->add_option("-r,--ratio", o->ratio,
                  "Scale of the chat vector: a number, or a comma list spread evenly over the layers and interpolated "
                  "(e.g. 0.2,1.0,0.5)")
      ->capture_default_str();
  add_vector_options(sub, *o);
  add_vocabulary_options(sub, o->embeddings, o->special_tokens);
  sub->add_option("--chat-template", o->chat_template, "Use this Jinja file as the output's chat template")
      ->check(CLI::ExistingFile);
  add_common(sub, *o, false);
  sub->callback([o, &run] { run = [o] { return run_merge(*o); }; });
}

void register_extract(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<ExtractOptions>();
  CLI::App* sub = app.add_subcommand("extract", "Write the chat vector chat - base as a reusable checkpoint");
  sub->add_option("--base", o->base, "The base model")->required();
  sub->add_option("--chat", o->chat, "The chat model")->required();
  add_common(sub, *o, true);
  sub->callback([o, &run] { run = [o] { return run_extract(*o); }; });
}

void register_apply(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<ApplyOptions>();
  CLI::App* sub =
      app.add_subcommand("apply", "out = target + r1 * vector1 + r2 * vector2 ... (vectors from `chatvec extract`)");
  sub->add_option("--target", o->target, "The model to add the vectors to (required unless in --recipe)");
  sub->add_option("--vector", o->vectors, "A chat vector directory (repeatable; required unless in --recipe)");
  sub->add_option("-r,--ratio", o->ratios,
                  "The ratio of each vector, in the order of --vector (default 1.0): a number or a comma list over the "
                  "layers (e.g. 0.2,1.0)");
  add_vector_options(sub, *o);
  add_vocabulary_options(sub, o->embeddings, o->special_tokens);
  sub->add_option("--token-rows-from", o->token_rows_from,
                  "When two vectors add the same token with different rows: take the rows of vector N (1-based)")
      ->check(CLI::Range(1, 1000));
  add_common(sub, *o, false);
  sub->callback([o, &run] { run = [o] { return run_apply(*o); }; });
}

}  // namespace chatvec::cli
