// merge, extract, apply: the chat-vector commands.
//
//   merge   out = target + ratio * (chat - base)         one pass, no vector on disk
//   extract vec = chat - base                             a reusable checkpoint
//   apply   out = target + r1 * vec1 + r2 * vec2 + ...
//
// Each builds a plan (every check happens there), reports it, checks free
// space, streams the tensors into a staged directory, adds config, tokenizer,
// chat template and model card, and moves the result into place.
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fmt/core.h>
#include <memory>

#include "cli/command.h"
#include "cli/model_inputs.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/json_util.h"
#include "core/staging.h"
#include "gguf/gguf_export.h"
#include "merge/executor.h"
#include "merge/model_files.h"
#include "merge/output_tokenizer.h"
#include "merge/vocab_policy.h"
#include "merge/plan.h"

namespace chatvec::cli {

namespace {

// Flags shared by merge, extract and apply.
struct CommonOptions {
  std::string out;
  std::string dtype = "auto";
  int threads = 0;
  std::vector<std::string> include, exclude;
  bool force = false;
  bool dry_run = false;
  std::string shard_size = "5GB";
  std::string format = "safetensors";  // merge/apply: or gguf (issue 6)
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
};

void add_common(CLI::App* sub, CommonOptions& o, bool vector_output) {
  sub->add_option("-o,--output", o.out, vector_output ? "Output chat-vector directory" : "Output model directory")
      ->required();
  sub->add_option("--dtype", o.dtype,
                  vector_output ? "Vector dtype: auto (the chat model's per tensor), bf16, f16, f32 (f32 makes apply "
                                  "bit-identical to merge)"
                                : "Output dtype: auto (the target's per tensor), bf16, f16, f32")
      ->check(CLI::IsMember({"auto", "bf16", "f16", "f32", "fp16", "fp32", "bfloat16", "float16", "float32"}));
  sub->add_option("-t,--threads", o.threads, "Threads for the arithmetic (default: all cores)")
      ->check(CLI::Range(0, 1024));
  sub->add_option("--include", o.include,
                  "Only tensors whose name matches this regex (repeatable); others are copied from the target")
;
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

std::vector<std::regex> compile_regexes(const std::vector<std::string>& srcs, const char* flag) {
  std::vector<std::regex> r;
  for (const auto& s : srcs) {
    try {
      r.emplace_back(s, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw InputError(std::string(flag) + " \"" + s + "\": invalid regular expression: " + e.what());
    }
  }
  return r;
}

PlanOptions plan_options(const CommonOptions& o) {
  PlanOptions p;
  if (o.dtype != "auto") p.dtype = dtype_from_user(o.dtype);
  p.selection.include = compile_regexes(o.include, "--include");
  p.selection.exclude = compile_regexes(o.exclude, "--exclude");
  p.selection.include_src = o.include;
  p.selection.exclude_src = o.exclude;
  return p;
}

void check_ratio(double r, const char* what) {
  if (!std::isfinite(r)) throw InputError(std::string(what) + " must be a finite number");
}

bool quiet() { return global_options().quiet; }

template <typename... Args>
void say(fmt::format_string<Args...> f, Args&&... args) {
  if (!quiet()) fmt::print(stderr, f, std::forward<Args>(args)...);
}

Checkpoint open_model(const std::string& path, const char* role) {
  Checkpoint c = Checkpoint::open(path);
  for (const auto& w : c.warnings()) say("chatvec: warning: {} model: {}\n", role, w);
  return c;
}

// A merge input that may also be a .gguf file (imported beside the output).
Checkpoint open_input(ModelInputs& inputs, const std::string& path, const char* role) {
  std::vector<std::string> warnings;
  Checkpoint c = inputs.open(path, role, warnings);
  for (const auto& w : warnings) say("chatvec: warning: {}\n", w);
  return c;
}

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

void print_plan(const MergePlan& plan, const ExecuteOptions& eo, const StagedOutput* staged, const std::string& out) {
  if (quiet()) return;
  say("plan: {} tensors: {} combined, {} copied unchanged\n", plan.tasks.size(), plan.combined, plan.copied);
  size_t shown = 0;
  for (const auto& t : plan.tasks) {
    if (t.kind != TaskKind::Copy) continue;
    if (shown++ < 5) say("  copied: {} ({})\n", t.name, t.note);
  }
  if (shown > 5) say("  ... and {} more copied\n", shown - 5);
  for (const auto& n : plan.notes) say("  note: {}\n", n);
  const uint64_t out_bytes = planned_output_bytes(plan, eo);
  say("read {}, write {} to {}\n", human_bytes(plan.bytes_read), human_bytes(out_bytes), out);
  (void)staged;
}

int finish_and_report(StagedOutput& staged, uint64_t bytes, std::chrono::steady_clock::time_point t0) {
  staged.commit();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  say("wrote {} ({}) in {} ({}/s)\n", staged.final_path(), human_bytes(bytes), format_duration(s),
      human_bytes(uint64_t(double(bytes) / std::max(s, 1e-6))));
  return 0;
}

// The part of merge/extract/apply after the plan: space check, streaming,
// files, card, commit.
struct WriteJob {
  const CommonOptions* opts;
  const MergePlan* plan;
  ExecuteOptions exec;
  std::string files_from, template_from;
  ModelCard card;
  Json recipe;  // written as chatvec.json for vectors (null for models)
  bool vector_output = false;
  std::string template_file;              // --chat-template
  std::vector<std::string> preamble;      // report lines printed before the plan
  // Runs after the files are copied, on the staging directory; returns
  // report lines.
  std::function<std::vector<std::string>(const std::string&)> after_files;
};

// Throughputs behind the --dry-run time estimate: fixed figures fitted to
// chatvec's median wall times on the `1b` benchmark (bench/run_merge_bench.py,
// docs/benchmarks.md: 9.0 GB read, 3.0 GB written, 4.2 s warm, 9.9 s cold)
// on the benchmark machine (2 shared cores, virtual disk), not measured on
// the machine running the dry run.  Reading inputs already in the page
// cache, reading them from disk, and writing (and syncing) the output; the
// model adds the three times.
constexpr double kCachedReadBytesPerSec = 5.0e9;
constexpr double kDiskReadBytesPerSec = 1.2e9;
constexpr double kWriteBytesPerSec = 1.25e9;

// Predicted peak memory and time, for --dry-run.
void print_predictions(const MergePlan& plan, const ExecuteOptions& exec, uint64_t out_bytes) {
  const MemoryEstimate m = estimate_peak_memory(plan, exec);
  say("memory: predicted peak {} (chunk buffers {}, input pages mapped at once {}, program {}); does not grow with "
      "the model\n",
      human_bytes(m.total), human_bytes(m.buffers), human_bytes(m.mapped_inputs), human_bytes(m.fixed));
  const InputResidency r = input_residency(plan);
  const double cached = double(r.resident), uncached = double(r.bytes - std::min(r.resident, r.bytes));
  const double seconds =
      cached / kCachedReadBytesPerSec + uncached / kDiskReadBytesPerSec + double(out_bytes) / kWriteBytesPerSec;
  say("time: about {} ({:.0f}% of the {} of inputs in the page cache now; estimate from fixed throughputs measured "
      "on the benchmark machine, not this one: cached read {}/s, disk read {}/s, write {}/s)\n",
      format_duration(seconds), r.bytes ? 100.0 * cached / double(r.bytes) : 100.0, human_bytes(r.bytes),
      human_bytes(uint64_t(kCachedReadBytesPerSec)), human_bytes(uint64_t(kDiskReadBytesPerSec)),
      human_bytes(uint64_t(kWriteBytesPerSec)));
}

int run_write_job(WriteJob& job) {
  const auto t0 = std::chrono::steady_clock::now();
  const CommonOptions& o = *job.opts;
  if (o.threads > 0) omp_set_num_threads(o.threads);
  const uint64_t out_bytes = planned_output_bytes(*job.plan, job.exec);

  for (const auto& line : job.preamble) say("{}\n", line);
  if (o.dry_run) {
    print_plan(*job.plan, job.exec, nullptr, o.out);
    if (path_exists(o.out)) say("note: {} exists{}\n", o.out, o.force ? " and would be replaced" : ": use --force");
    std::string parent = std::filesystem::path(o.out).parent_path().string();
    if (parent.empty()) parent = ".";
    if (is_directory(parent))
      say("disk: need {}, {} free at {}\n", human_bytes(out_bytes), human_bytes(free_space(parent)), parent);
    print_predictions(*job.plan, job.exec, out_bytes);
    say("dry run: nothing written\n");
    return 0;
  }

  // --format gguf: the model directory is staged next to the output and never
  // committed (removed on exit); the GGUF file is staged and committed alone.
  const bool to_gguf = o.format == "gguf";
  std::unique_ptr<StagedOutput> gguf_out;
  if (to_gguf) gguf_out = std::make_unique<StagedOutput>(o.out, StagedOutput::Kind::File, o.force);
  StagedOutput staged(to_gguf ? gguf_out->path() + "-dir" : o.out, StagedOutput::Kind::Directory, to_gguf || o.force);
  const uint64_t free = free_space(staged.parent());
  const uint64_t margin = 16ull << 20;  // config, tokenizer, card
  if (free < out_bytes + margin)
    throw RuntimeFailure("not enough free space at " + staged.parent() + ": need " + human_bytes(out_bytes + margin) +
                         ", " + human_bytes(free) + " available");
  print_plan(*job.plan, job.exec, &staged, o.out);

  ProgressBar bar(job.vector_output ? "extract" : "merge");
  job.exec.progress = [&bar](uint64_t d, uint64_t t) { bar.update(d, t); };
  execute_plan(*job.plan, staged.path(), job.exec);
  bar.finish();

  const std::string torch_dtype = o.dtype == "auto" ? "" : torch_dtype_name(*dtype_from_user(o.dtype));
  ModelFilesReport files =
      write_model_files(job.files_from, job.template_from, staged.path(), torch_dtype, job.template_file);
  for (const auto& n : files.notes) say("note: {}\n", n);
  if (!files.chat_template_source.empty()) say("chat template: {}\n", files.chat_template_source);
  if (job.after_files)
    for (const auto& line : job.after_files(staged.path())) say("{}\n", line);
  if (job.vector_output) {
    // The chat model's config is kept for reference under another name, so
    // that the vector directory is never mistaken for a loadable model.
    const std::string cfg = staged.path() + "/config.json";
    if (path_exists(cfg)) std::filesystem::rename(cfg, staged.path() + "/chat_config.json");
    write_file(staged.path() + "/chatvec.json", dump_json_pretty(job.recipe));
  }
  write_file(staged.path() + "/README.md", render_model_card(job.card));
  if (to_gguf) {
    gguf::ExportOptions eo;
    const std::string t = !o.gguf_type.empty() ? o.gguf_type
                          : o.dtype == "auto"  ? "f16"
                                               : std::string(dtype_name(*dtype_from_user(o.dtype)));
    eo.type = *gguf::tensor_type_from_user(t);
    eo.name = std::filesystem::path(o.out).stem().string();
    const gguf::ExportSummary es = gguf::export_gguf(staged.path(), gguf_out->path(), eo);
    say("gguf: {} tensors as {}, tokenizer {}{}\n", es.tensors, t, es.tokenizer_model,
        es.chat_template ? ", chat template" : "");
    return finish_and_report(*gguf_out, es.bytes, t0);
  }
  return finish_and_report(staged, out_bytes, t0);
}

std::map<std::string, std::string> metadata_for(const Json& extra) {
  std::map<std::string, std::string> m{{"format", "pt"}};
  for (auto it = extra.begin(); it != extra.end(); ++it)
    m["chatvec." + it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
  return m;
}

int run_merge(const MergeOptions& o) {
  ModelInputs models(o.out);
  check_ratio(o.ratio, "--ratio");
  Checkpoint base = open_input(models, o.base, "base");
  Checkpoint chat = open_input(models, o.chat, "chat");
  Checkpoint target = open_input(models, o.target, "target");
  PlanOptions po = plan_options(o);
  VocabOptions vo;
  vo.policy = *embedding_policy_from_name(o.embeddings);
  vo.transplant = o.special_tokens == "transplant";
  auto vocab = std::make_shared<VocabDecision>(decide_vocabulary(base, chat, target, vo));
  for (const auto& name : vocab_tensor_names(target)) {
    if (vocab->row_map) po.row_maps[name] = vocab->row_map;
    if (vocab->skip_tensors) po.keep_unchanged[name] = "--embeddings skip";
  }
  MergePlan plan = build_plan(target, &target, {VectorInput{o.ratio, &chat, &base, "chat"}}, po);
  const bool dirs = chat.is_directory() && target.is_directory();
  auto eos = std::make_shared<EosDecision>(dirs ? decide_eos(chat.dir(), target.dir(), *vocab) : EosDecision{});

  WriteJob job;
  job.preamble = describe_vocabulary(*vocab);
  if (!eos->token.empty())
    job.preamble.push_back("eos: the chat model's \"" + eos->token + "\" (" + eos->source + ") -> output id " +
                           std::to_string(eos->output_id));
  job.template_file = o.chat_template;
  if (dirs)
    job.after_files = [vocab, eos, tdir = target.dir()](const std::string& staging) {
      return finalize_output_tokenizer(staging, tdir, *vocab, *eos);
    };
  job.opts = &o;
  job.plan = &plan;
  job.exec.shard_size = parse_size(o.shard_size);
  job.exec.metadata = metadata_for(Json{{"recipe", fmt::format("target + {} * (chat - base)", o.ratio)}});
  job.files_from = target.is_directory() ? target.dir() : "";
  job.template_from = chat.is_directory() ? chat.dir() : "";
  job.card.title = std::filesystem::path(o.out).filename().string();
  job.card.inputs = {{"target", o.target}, {"chat", o.chat}, {"base", o.base}};
  job.card.base_models = {o.target, o.chat, o.base};
  job.card.recipe = fmt::format("out = target + {} * (chat - base)", o.ratio);
  job.card.command_line = command_line_string();
  job.card.details.push_back(fmt::format("{} tensors combined, {} copied from the target unchanged", plan.combined,
                                         plan.copied));
  job.card.details.push_back("arithmetic in fp32, rounded to the output dtype to nearest-even");
  return run_write_job(job);
}

int run_extract(const ExtractOptions& o) {
  ModelInputs models(o.out);
  Checkpoint base = open_input(models, o.base, "base");
  Checkpoint chat = open_input(models, o.chat, "chat");
  PlanOptions po = plan_options(o);
  po.drop_uncombined = true;
  MergePlan plan = build_plan(chat, nullptr, {VectorInput{1.0, &chat, &base, "chat"}}, po);
  if (plan.tasks.empty()) throw InputError("no tensor selected: the vector would be empty");

  Json recipe = {{"kind", "chat-vector"},
                 {"chatvec_version", CHATVEC_VERSION},
                 {"base", o.base},
                 {"chat", o.chat},
                 {"dtype", o.dtype},
                 {"include", o.include},
                 {"exclude", o.exclude}};
  WriteJob job;
  job.opts = &o;
  job.plan = &plan;
  job.vector_output = true;
  job.recipe = recipe;
  job.exec.shard_size = parse_size(o.shard_size);
  job.exec.metadata = metadata_for(Json{{"kind", "chat-vector"}, {"base", o.base}, {"chat", o.chat}});
  job.files_from = chat.is_directory() ? chat.dir() : "";
  job.card.title = std::filesystem::path(o.out).filename().string() + " (chat vector)";
  job.card.inputs = {{"chat", o.chat}, {"base", o.base}};
  job.card.base_models = {o.chat, o.base};
  job.card.recipe = "vector = chat - base";
  job.card.command_line = command_line_string();
  job.card.details.push_back("a chat vector, not a model: add it to a model with `chatvec apply --target T --vector "
                             "THIS -o OUT`");
  return run_write_job(job);
}

int run_apply(const ApplyOptions& o) {
  ModelInputs models(o.out);
  if (o.vectors.empty()) throw InputError("apply needs at least one --vector");
  std::vector<double> ratios = o.ratios;
  if (ratios.empty()) ratios.assign(o.vectors.size(), 1.0);
  if (ratios.size() != o.vectors.size())
    throw InputError("give one --ratio per --vector (" + std::to_string(o.vectors.size()) + " vectors, " +
                     std::to_string(ratios.size()) + " ratios)");
  for (double r : ratios) check_ratio(r, "--ratio");
  Checkpoint target = open_input(models, o.target, "target");
  std::vector<std::unique_ptr<Checkpoint>> vecs;
  std::vector<VectorInput> inputs;
  for (size_t i = 0; i < o.vectors.size(); ++i) {
    const std::string& v = o.vectors[i];
    const std::string recipe_path = v + "/chatvec.json";
    if (!is_directory(v) || !path_exists(recipe_path))
      throw InputError(v + ": not a chat vector made by `chatvec extract` (no chatvec.json); to add chat - base "
                           "directly use `chatvec merge`");
    Json r = read_json_file(recipe_path);
    if (!r.is_object() || r.value("kind", std::string()) != "chat-vector")
      throw InputError(recipe_path + ": \"kind\" is not \"chat-vector\"");
    vecs.push_back(std::make_unique<Checkpoint>(open_model(v, "vector")));
    inputs.push_back(VectorInput{ratios[i], vecs.back().get(), nullptr, "vector " + v});
  }
  PlanOptions po = plan_options(o);
  po.allow_partial_vectors = true;
  MergePlan plan = build_plan(target, &target, inputs, po);

  WriteJob job;
  job.opts = &o;
  job.plan = &plan;
  job.exec.shard_size = parse_size(o.shard_size);
  std::string recipe = "out = target";
  for (size_t i = 0; i < o.vectors.size(); ++i) recipe += fmt::format(" + {} * vector{}", ratios[i], i + 1);
  job.exec.metadata = metadata_for(Json{{"recipe", recipe}});
  job.files_from = target.is_directory() ? target.dir() : "";
  job.template_from = o.vectors.front();
  job.card.title = std::filesystem::path(o.out).filename().string();
  job.card.inputs = {{"target", o.target}};
  job.card.base_models = {o.target};
  for (size_t i = 0; i < o.vectors.size(); ++i) {
    job.card.inputs.push_back({fmt::format("vector{} (ratio {})", i + 1, ratios[i]), o.vectors[i]});
    Json r = read_json_file(o.vectors[i] + "/chatvec.json");
    if (r.contains("chat") && r["chat"].is_string()) job.card.base_models.push_back(r["chat"].get<std::string>());
  }
  job.card.recipe = recipe;
  job.card.command_line = command_line_string();
  job.card.details.push_back(fmt::format("{} tensors combined, {} copied from the target unchanged", plan.combined,
                                         plan.copied));
  return run_write_job(job);
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
  sub->add_option("--embeddings", o->embeddings,
                  "Embedding/LM-head rows when vocabularies differ: auto, full, shared, align, skip")
      ->check(CLI::IsMember({"auto", "full", "shared", "align", "skip"}))
      ->capture_default_str();
  sub->add_option("--special-tokens", o->special_tokens,
                  "Tokens the chat model added (chat template, EOS): transplant them with their rows, or none")
      ->check(CLI::IsMember({"transplant", "none"}))
      ->capture_default_str();
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
  add_common(sub, *o, false);
  sub->callback([o, &run] { run = [o] { return run_apply(*o); }; });
}

}  // namespace chatvec::cli
