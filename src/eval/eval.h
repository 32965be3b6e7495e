// `chatvec eval`: how well a chat model follows simple, automatically
// checkable instructions, whether it ends its turn, whether it answers in the
// expected language, and its perplexity on held-out text.
//
// Tasks (JSON lines): {"id", "lang", "type", "messages": [...], "expected"}
// with type one of repeat | first_word | last_word | continue (checkable)
// or dialogue (only EOS and language are scored).  The metrics, fixed
// before any experiment was run:
//   exact     repeat: normalized answer == expected; first_word/last_word:
//             the answer's first word == expected; continue: the answer's
//             first three words == the expected continuation's.
//   f1        bag-of-words F1 between the normalized answer and expected.
//   eos       the model ended its turn (an EOS id) within the token budget.
//   lang      share of the answer's words the language identifier assigns
//             to the task's language (0 for an empty answer).
// Normalization: lowercase (ASCII and Latin-1 accented letters), words are
// maximal runs of letters and digits.
#pragma once

#include <map>
#include <unordered_map>
#include <string>
#include <utility>
#include <vector>

#include "core/json_util.h"

namespace chatvec::eval {

// Words of `text` as the metrics see them (lowercased letter/digit runs).
std::vector<std::string> words_of(const std::string& text);

double bag_f1(const std::vector<std::string>& answer, const std::vector<std::string>& expected);

// A character n-gram (1..4, with word-boundary marks) naive-Bayes word
// classifier trained on one text per language.
class LanguageId {
 public:
  void train(const std::string& lang, const std::vector<std::string>& lines);
  // The most likely language of one (normalized) word.
  std::string classify_word(const std::string& word) const;
  // Share of the words of `text` classified as `lang` (0 when no words).
  double share(const std::string& text, const std::string& lang) const;
  std::vector<std::string> languages() const;

 private:
  struct Model {
    std::unordered_map<std::string, double> counts;
    double total = 0;
  };
  std::map<std::string, Model> models_;
  size_t distinct_ = 1;
};

// The metrics of one answer.  exact, f1, eos and lang are the first run's
// definitions, kept for comparison; the *_strict ones and `valid` correct
// what that run showed (docs/reproduction.md): an empty answer, or one with
// U+FFFD (an invalid UTF-8 piece), is a failure — no language, no score —
// and a turn that ends with such an answer does not count as "stops".
struct TaskScore {
  double exact = 0, f1 = 0, eos = 0, lang = 0;
  bool checkable = false;
  bool valid = false;  // non-empty after trimming, and no U+FFFD
  double exact_strict = 0, f1_strict = 0, eos_strict = 0, lang_strict = 0;
};
// Is an answer a real one (not empty, no U+FFFD)?
bool valid_answer(const std::string& answer);
// Scores one answer (no model involved).
TaskScore score_answer(const std::string& type, const std::string& answer, const std::string& expected,
                       const std::string& lang, const LanguageId& lid, bool stopped_at_eos);

struct EvalOptions {
  std::string model_dir, tasks;
  int64_t max_new = 48;
  std::vector<std::pair<std::string, std::string>> lang_data;  // lang -> training text for the identifier (first 2000 lines)
  std::vector<std::pair<std::string, std::string>> heldout;     // lang -> held-out text for perplexity
  int64_t heldout_lines = 0;  // 0: all
  int64_t max_tasks = 0;      // 0: all
};

// Everything an evaluation reads besides the model, loaded and checked once
// (several models can be evaluated on it: `chatvec tune`).  InputError for a
// malformed task line (naming the file and line), an unknown task type, a
// --heldout language the identifier was not given text for, or no task.
struct EvalData {
  LanguageId lid;
  std::vector<Json> tasks;  // parsed task lines
  std::string tasks_file;
  std::vector<std::pair<std::string, std::vector<std::string>>> heldout;  // lang -> lines
};
EvalData load_eval_data(const EvalOptions& o);

// Runs the model over every task and the held-out texts; returns the report
// (summary by language and by type, per-task answers, perplexity).
Json evaluate_model(const std::string& model_dir, const EvalData& data, const EvalOptions& o);
// load_eval_data + evaluate_model (`chatvec eval`).
Json run_eval(const EvalOptions& o);
// Held-out perplexity and bits per byte only (no chat template needed).
Json heldout_scores(const std::string& model_dir, const EvalData& data);

// A readable table of a report.
std::string format_report(const Json& report);

}  // namespace chatvec::eval
