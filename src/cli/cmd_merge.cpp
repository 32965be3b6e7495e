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
  std::string format = "safetensors";  // merge/apply: or gguf
  std::string gguf_type;               // --gguf-type (default from --dtype, f16 when auto)
};

struct MergeOptions : CommonOptions {
  std::string base, chat, target;
  double ratio = 1.0;
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
  std::vector<double> ratios;
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

void add_common(CLI::App* sub, CommonOptions& o, bool vector_output) {
  sub->add_option("-o,--output", o.out, vector_output ? "Output chat-vector directory" : "Output model directory")
      ->required();
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

MergeJob job_from(const CommonOptions& o, JobKind kind) {
  MergeJob job;
  job.kind = kind;
  job.output = o.out;
  if (o.dtype != "auto") job.dtype = dtype_from_user(o.dtype);
  job.format = o.format == "gguf" ? OutputFormat::Gguf : OutputFormat::Safetensors;
  if (!o.gguf_type.empty()) job.gguf_type = gguf::tensor_type_from_user(o.gguf_type);
  job.include = o.include;
  job.exclude = o.exclude;
  job.shard_size = parse_size(o.shard_size);
  job.threads = o.threads;
  job.force = o.force;
  job.dry_run = o.dry_run;
  job.command_line = command_line_string();
  return job;
}

// Report lines and warnings on stderr (nothing with -q), progress as a bar.
class StderrReporter : public JobReporter {
 public:
  void line(const std::string& text) override {
    if (!global_options().quiet) fmt::print(stderr, "{}\n", text);
  }
  void warning(const std::string& text) override {
    if (!global_options().quiet) fmt::print(stderr, "chatvec: warning: {}\n", text);
  }
  void progress_begin(const std::string& label) override { bar_ = std::make_unique<ProgressBar>(label); }
  void progress(uint64_t done, uint64_t total) override {
    if (bar_) bar_->update(done, total);
  }
  void progress_end() override {
    if (bar_) bar_->finish();
    bar_.reset();
  }

 private:
  std::unique_ptr<ProgressBar> bar_;
};

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
  job.base = o.base;
  job.chat = o.chat;
  job.target = o.target;
  job.ratio = o.ratio;
  job.embeddings = *embedding_policy_from_name(o.embeddings);
  job.transplant_special_tokens = o.special_tokens == "transplant";
  job.chat_template_file = o.chat_template;
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
  job.target = o.target;
  if (!o.ratios.empty() && o.ratios.size() != o.vectors.size())
    throw InputError("give one --ratio per --vector (" + std::to_string(o.vectors.size()) + " vectors, " +
                     std::to_string(o.ratios.size()) + " ratios)");
  for (size_t i = 0; i < o.vectors.size(); ++i)
    job.vectors.push_back(ApplyVector{o.vectors[i], o.ratios.empty() ? 1.0 : o.ratios[i]});
  job.embeddings = *embedding_policy_from_name(o.embeddings);
  job.transplant_special_tokens = o.special_tokens == "transplant";
  job.token_rows_from = o.token_rows_from;
  return run(job);
}

}  // namespace

void register_merge(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<MergeOptions>();
  CLI::App* sub = app.add_subcommand("merge", "out = target + ratio * (chat - base), in one streaming pass");
  sub->add_option("--base", o->base, "The base model both others derive from (e.g. Llama-2)")->required();
  sub->add_option("--chat", o->chat, "The base's chat model (e.g. Llama-2-chat)")->required();
  sub->add_option("--target", o->target, "The model to give chat abilities (e.g. continually pre-trained)")
      ->required();
  sub->add_option("-r,--ratio", o->ratio, "Scale of the chat vector")->capture_default_str();
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
  sub->add_option("--target", o->target, "The model to add the vectors to")->required();
  sub->add_option("--vector", o->vectors, "A chat vector directory (repeatable)")->required();
  sub->add_option("-r,--ratio", o->ratios, "The ratio of each vector, in the order of --vector (default 1.0)");
  add_vocabulary_options(sub, o->embeddings, o->special_tokens);
  sub->add_option("--token-rows-from", o->token_rows_from,
                  "When two vectors add the same token with different rows: take the rows of vector N (1-based)")
      ->check(CLI::Range(1, 1000));
  add_common(sub, *o, false);
  sub->callback([o, &run] { run = [o] { return run_apply(*o); }; });
}

}  // namespace chatvec::cli
