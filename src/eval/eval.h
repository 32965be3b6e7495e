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

struct TaskScore {
  double exact = 0, f1 = 0, eos = 0, lang = 0;
  bool checkable = false;
};
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

// Runs the model over every task and the held-out texts; returns the report
// (summary by language and by type, per-task answers, perplexity).
Json run_eval(const EvalOptions& o);

// A readable table of a report.
std::string format_report(const Json& report);

}  // namespace chatvec::eval
