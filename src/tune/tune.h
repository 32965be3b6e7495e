// `chatvec tune`: find the recipe that works.  Every candidate (a ratio of
// the grid, or an alternative recipe) is merged with the library pipeline
// (merge/pipeline.h), evaluated with the evaluation of `chatvec eval`
// (eval/eval.h: the same function, so every metric is what `chatvec eval`
// reports for the same merged model), and the candidates are ranked by a
// stated rule (RankRule).
//
// Work happens in OUT.partial (beside OUT): the settings, the target's
// reference scores, one evaluation report per finished candidate, the
// candidate being merged (deleted once evaluated) and, with write_best, the
// best candidate so far.  A resumed tune (same settings only) reuses every
// finished candidate.  At the end the results, table, plot and the winner's
// recipe are written there and OUT.partial is renamed to OUT: OUT appears
// complete or not at all.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "core/json_util.h"
#include "eval/eval.h"
#include "merge/pipeline.h"

namespace chatvec::tune {

// One candidate: a name (letters, digits, '.', '_', '-'; unique) and the
// merge that makes it.  `job.output` is set by run_tune.
struct Candidate {
  std::string name;
  MergeJob job;
  // Where the candidate sits on the plot's ratio axis: the job's ratio for a
  // candidate of the grid or an alternative with one scalar ratio.
  std::optional<double> ratio;
  Json spec = Json::object();  // what the user gave for it (recorded in results.json)
};

// "0,0.25,0.5" -> {0, 0.25, 0.5}.  InputError for a malformed or non-finite
// number, a duplicate, or an empty list (naming the flag).
std::vector<double> parse_ratio_list(const std::string& text, const std::string& flag = "--ratios");
// The grid: one candidate per ratio, named "ratio-<r>", each a copy of
// `base_job` (kind Merge, inputs, dtype, policies) with its ratio.
std::vector<Candidate> ratio_grid(const MergeJob& base_job, const std::vector<double>& ratios);

// --alternatives FILE: a JSON list of {"name": NAME, "recipe": {...}}, each
// recipe a partial recipe (merge/recipe.h) whose keys replace those of
// `base_job`'s recipe (relative paths: relative to FILE's directory).
// InputError naming the file and entry.
std::vector<Candidate> read_alternatives(const std::string& path, const MergeJob& base_job);

// The metrics of one candidate in the target language, as `chatvec eval`
// reports them (summary[lang] and heldout[lang] of its report).
//   f1, exact (checkable prompts), eos, lang_share, mean_tokens, valid, their
//   *_strict variants (empty or U+FFFD answers are failures), n, n_checkable,
//   bits_per_byte and perplexity (held-out text of the language, if given).
Json metrics_of(const Json& eval_report, const std::string& lang);

// The ranking rule.  Default: the best `metric` (higher is better) among the
// candidates that qualify — language share (strict) in the target language
// >= min_lang_share and held-out bits/byte <= the target's * (1 +
// max_bpb_increase) — ties to the smaller ratio (then the earlier
// candidate).  When none qualifies, the fallback: the highest language share
// among those within the bits/byte bound; when none is within it, the lowest
// bits/byte.  The bits/byte condition is not applied when there is no
// held-out text in the target language, or max_bpb_increase < 0.
struct RankRule {
  std::string metric = "f1_strict";
  std::string lang_metric = "lang_share_strict";
  double min_lang_share = 0.9;
  double max_bpb_increase = 0.05;
  // The metrics `metric` may name (higher is better).
  static const std::vector<std::string>& rankable();
  // The rule in one sentence (results.json, table.md).
  std::string describe(const std::string& lang) const;
};

struct RankInput {
  std::string name;
  std::optional<double> ratio;
  Json metrics;  // metrics_of()
};
struct Ranking {
  size_t best = 0;
  bool qualified = false;              // the best satisfies the rule (not a fallback)
  std::string why;                     // one or two sentences
  std::vector<bool> qualifies;         // per candidate
  std::vector<std::string> verdicts;   // per candidate: "qualifies" or why not
  std::optional<double> bpb_limit;     // the bits/byte bound applied, if any
};
// Pure: ranks candidates by the rule against the target's held-out
// bits/byte (nullopt: the bound is not applied).  Needs at least one.
Ranking rank_candidates(const std::vector<RankInput>& candidates, const RankRule& rule,
                        std::optional<double> reference_bpb);

struct TuneOptions {
  std::vector<Candidate> candidates;
  std::string target;      // the reference: its held-out bits/byte (no chat template needed)
  eval::EvalOptions eval;  // tasks, lang_data, heldout, max_new, heldout_lines, max_tasks
  std::string lang;        // target language; "": the only --heldout language, else the only task language
  std::string out;
  bool resume = false;
  bool write_best = false;  // keep the winner's merged model as OUT/best
  bool force = false;       // replace an existing OUT at the end
  RankRule rule;
  int threads = 0;  // 0: the default (OMP_NUM_THREADS or all cores), for merging and evaluating
  std::string command_line;
};

class TuneReporter {
 public:
  virtual ~TuneReporter() = default;
  virtual void line(const std::string& text) = 0;
  virtual void warning(const std::string& text) = 0;
  // A candidate starts (index from 0).
  virtual void candidate_begin(size_t index, size_t total, const std::string& name) {
    (void)index, (void)total, (void)name;
  }
  // A candidate is done: evaluated now (reused = false) or taken from the
  // work directory; eta_seconds < 0 when unknown.
  virtual void candidate_done(size_t index, size_t total, const std::string& name, const Json& metrics, bool reused,
                              double eta_seconds) {
    (void)index, (void)total, (void)name, (void)metrics, (void)reused, (void)eta_seconds;
  }
};

struct TuneResult {
  std::string out;      // the final directory
  Json results;         // results.json
  std::string table;    // table.md
  std::string choice;   // the winner's name
  size_t evaluated = 0, reused = 0;
};

// Everything is checked (inputs, data, candidates, the work directory)
// before anything is written: InputError otherwise.
TuneResult run_tune(const TuneOptions& o, TuneReporter& report);

// The outputs, from results.json's content.
std::string render_table(const Json& results);
std::string render_svg(const Json& results);

}  // namespace chatvec::tune
