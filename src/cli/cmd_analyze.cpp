// analyze: the figures of a chat vector (src/analyze/analyze.h); this file
// only parses flags, and prints or writes what the library returns.
#include <fmt/core.h>

#include <cstdio>
#include <memory>

#include "analyze/analyze.h"
#include "cli/command.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/staging.h"

namespace chatvec::cli {

namespace {

struct AnalyzeOptions {
  std::string base, chat, target;
  std::vector<std::string> include, exclude;
  std::string embeddings = "auto";
  std::string special_tokens = "transplant";
  int threads = 0;
  uint64_t chunk = uint64_t(1) << 24;
  bool no_estimate = false;
  size_t top = 10;
  std::string json, svg;
};

// A file that appears complete or not at all (replacing an older one).
void write_output(const std::string& path, const std::string& content) {
  StagedOutput out(path, StagedOutput::Kind::File, true);
  write_file(out.path(), content);
  out.commit();
}

int run_analyze(const AnalyzeOptions& o) {
  AnalyzeJob job;
  job.base = o.base;
  job.chat = o.chat;
  job.target = o.target;
  job.include = o.include;
  job.exclude = o.exclude;
  job.embeddings = *embedding_policy_from_name(o.embeddings);
  job.transplant_special_tokens = o.special_tokens == "transplant";
  job.threads = o.threads;
  job.chunk_elements = o.chunk;
  job.estimate = !o.no_estimate;
  StderrReporter report;
  const AnalyzeResult r = analyze(job, report);
  const bool json_stdout = o.json == "-";
  if (!o.json.empty() && !json_stdout) write_output(o.json, analysis_json(r).dump(1) + "\n");
  if (!o.svg.empty()) write_output(o.svg, analysis_svg(r));
  if (json_stdout) {
    fmt::print("{}\n", analysis_json(r).dump(1));
  } else {
    fmt::print("{}", analysis_table(r, o.top));
  }
  report.line(fmt::format("analysed {} tensors ({} of inputs) in {} ({}/s)", r.tensors.size(), human_bytes(r.bytes_read),
                          format_duration(r.seconds),
                          human_bytes(uint64_t(double(r.bytes_read) / std::max(r.seconds, 1e-6)))));
  return 0;
}

}  // namespace

void register_analyze(CLI::App& app, std::function<int()>& run) {
  auto o = std::make_shared<AnalyzeOptions>();
  CLI::App* sub = app.add_subcommand(
      "analyze", "Per tensor, layer and module: size of chat - base, and how it compares with target - base");
  sub->add_option("--base", o->base, "The base model")->required();
  sub->add_option("--chat", o->chat, "The chat model")->required();
  sub->add_option("--target", o->target,
                  "The model the vector would be added to: adds |target-base|, cosine and sign agreement");
  sub->add_option("--include", o->include, "Only tensors whose name matches this regex (repeatable)");
  sub->add_option("--exclude", o->exclude, "Leave out tensors matching this regex (repeatable)");
  sub->add_option("--embeddings", o->embeddings,
                  "With --target: the merge's vocabulary policy deciding which embedding/LM-head rows are compared: "
                  "auto, full, shared, align, skip")
      ->check(CLI::IsMember({"auto", "full", "shared", "align", "skip"}))
      ->capture_default_str();
  sub->add_option("--special-tokens", o->special_tokens,
                  "With --target: tokens the chat model added, transplanted (as merge) or none")
      ->check(CLI::IsMember({"transplant", "none"}))
      ->capture_default_str();
  sub->add_option("-t,--threads", o->threads, "Threads (default: all cores; the figures do not depend on it)")
      ->check(CLI::Range(0, 1024));
  sub->add_option("--chunk", o->chunk,
                  "Elements per chunk: the inputs' pages of one chunk are held at a time (the figures do not "
                  "depend on it)")
      ->check(CLI::Range(uint64_t(1), uint64_t(1) << 34))
      ->capture_default_str();
  sub->add_flag("--no-estimate", o->no_estimate,
               "Find the top-fraction thresholds by radix passes only (per layer: by bisection passes), without "
               "estimating them from a sample (more passes; the same figures to rounding)");
  sub->add_option("--top", o->top, "Tensors listed in the table, by share of the total |chat-base|^2")
      ->capture_default_str();
  sub->add_option("--json", o->json, "Write every figure as JSON to this file ('-': to stdout instead of the table)");
  sub->add_option("--svg", o->svg, "Write the per-layer plot (relative norms, cosine) to this SVG file");
  sub->callback([o, &run] { run = [o] { return run_analyze(*o); }; });
}

}  // namespace chatvec::cli
