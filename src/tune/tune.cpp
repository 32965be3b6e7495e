#include "tune/tune.h"

#include <omp.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fmt/core.h>
#include <set>

#include "core/error.h"
#include "core/file_util.h"
#include "core/interrupt.h"
#include "core/staging.h"
#include "gguf/gguf_reader.h"
#include "merge/recipe.h"

namespace chatvec::tune {

namespace fs = std::filesystem;

namespace {

// FNV-1a, 64 bits: identities of the inputs in settings.json (not security).
uint64_t fnv1a(std::string_view s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}
std::string hex(uint64_t h) { return fmt::format("{:016x}", h); }

std::string absolute_path(const std::string& p) {
  std::error_code ec;
  fs::path a = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal().string() : a.string();
}

// A model's identity: every regular file of the directory (or the file) by
// name, size and modification time.  Changing a model's files changes it.
std::string model_identity(const std::string& path) {
  std::vector<std::string> entries;
  auto add = [&](const fs::path& p) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
    entries.push_back(fmt::format("{} {} {}.{}", p.filename().string(), uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec),
                                  int64_t(st.st_mtim.tv_nsec)));
  };
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::directory_iterator(path, ec)) add(e.path());
  } else {
    add(path);
  }
  std::sort(entries.begin(), entries.end());
  uint64_t h = fnv1a("");
  for (const auto& e : entries) h = fnv1a(e + "\n", h);
  return hex(h);
}

std::string content_hash(const std::string& path) { return hex(fnv1a(read_file(path))); }

// The work directory's lock: an flock on the directory itself, held until
// the tune ends (the process's exit releases it, whatever ends it).
class WorkLock {
 public:
  WorkLock() = default;
  WorkLock(const WorkLock&) = delete;
  WorkLock& operator=(const WorkLock&) = delete;
  ~WorkLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  // false when another process holds it (with `wait`, blocks instead).
  bool lock(const std::string& dir, bool wait) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd_ < 0) throw RuntimeFailure("cannot open " + dir + ": " + std::strerror(errno));
    while (::flock(fd_, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
      if (errno == EINTR) continue;
      if (errno == EWOULDBLOCK) return false;
      throw RuntimeFailure("cannot lock " + dir + ": " + std::strerror(errno));
    }
    return true;
  }
  void release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Small files of the work directory: written beside and renamed into place.
void write_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  fs::remove(tmp, ec);
  write_file(tmp, content);
  fs::rename(tmp, path);
}

// The candidate's job as a recipe (merge/recipe.h): absolute paths, no
// output; `chatvec merge --recipe` reads it.
Json job_json(const MergeJob& j) {
  MergeJob a = with_absolute_paths(j);
  a.output.clear();
  return recipe_to_json(a);
}

bool safe_name(const std::string& n) {
  return !n.empty() && n.size() <= 100 && n[0] != '.' &&
         n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == std::string::npos;
}

// The merge pipeline's report, kept quiet: each distinct warning once.
class QuietJobReporter : public JobReporter {
 public:
  explicit QuietJobReporter(TuneReporter& r, std::set<std::string>& seen) : r_(r), seen_(seen) {}
  void line(const std::string&) override {}
  void warning(const std::string& text) override {
    if (seen_.insert(text).second) r_.warning("merge: " + text);
  }

 private:
  TuneReporter& r_;
  std::set<std::string>& seen_;
};

std::string short_json(const Json& j) {
  std::string s = j.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

// The first setting in which two settings.json differ, in words.
std::string first_difference(const Json& was, const Json& now) {
  for (const auto& [k, v] : now.items())
    if (!was.contains(k) || was[k] != v)
      return fmt::format("\"{}\" (was {}, now {})", k, was.contains(k) ? short_json(was[k]) : "absent", short_json(v));
  for (const auto& [k, v] : was.items())
    if (!now.contains(k)) return fmt::format("\"{}\" (was {}, now absent)", k, short_json(v));
  return "nothing";
}

std::string target_language(const TuneOptions& o, const eval::EvalData& d) {
  if (!o.lang.empty()) return o.lang;
  if (d.heldout.size() == 1) return d.heldout[0].first;
  std::set<std::string> langs;
  for (const Json& t : d.tasks) langs.insert(t.value("lang", ""));
  if (langs.size() == 1 && !langs.begin()->empty()) return *langs.begin();
  std::string list;
  for (const auto& l : langs) list += (list.empty() ? "" : ", ") + (l.empty() ? std::string("(none)") : l);
  throw InputError("chatvec tune: give --lang, the target language (the prompts' languages: " + list + ")");
}

}  // namespace

TuneResult run_tune(const TuneOptions& opts, TuneReporter& report) {
  TuneOptions o = opts;
  // 1. Everything checked before anything is written.
  if (o.candidates.empty())
    throw InputError("chatvec tune: an empty candidate grid (give --ratios with at least one ratio, or --alternatives)");
  {
    std::set<std::string> names;
    for (const Candidate& c : o.candidates) {
      if (!safe_name(c.name))
        throw InputError("chatvec tune: candidate name \"" + c.name +
                         "\" must be 1-100 letters, digits, '.', '_' or '-' (not starting with '.')");
      if (!names.insert(c.name).second) throw InputError("chatvec tune: two candidates are named \"" + c.name + "\"");
    }
  }
  if (o.out.empty()) throw InputError("chatvec tune: -o DIR is required");
  fs::path outp = fs::path(o.out).lexically_normal();
  if (outp.has_filename() == false) outp = outp.parent_path();
  if (outp.filename().empty() || outp.filename() == "." || outp.filename() == "..")
    throw InputError("chatvec tune: -o " + o.out + ": not a usable directory name");
  const std::string out = outp.string();
  const std::string partial = out + ".partial";
  {
    const fs::path parent = fs::absolute(outp).parent_path();
    if (!is_directory(parent.string())) throw InputError("-o " + o.out + ": the directory " + parent.string() + " does not exist");
  }
  if (path_exists(out) && !o.force) throw InputError(out + " exists (--force to replace it)");
  const auto& rk = RankRule::rankable();
  if (std::find(rk.begin(), rk.end(), o.rule.metric) == rk.end()) {
    std::string list;
    for (const auto& k : rk) list += (list.empty() ? "" : ", ") + k;
    throw InputError("--rank-metric " + o.rule.metric + ": not one of " + list);
  }
  if (!(o.rule.min_lang_share >= 0 && o.rule.min_lang_share <= 1))
    throw InputError(fmt::format("--min-lang-share {}: must be between 0 and 1", o.rule.min_lang_share));
  if (!std::isfinite(o.rule.max_bpb_increase))
    throw InputError("--max-bpb-increase: must be a finite number (negative: no bits/byte condition)");
  if (o.target.empty()) o.target = o.candidates.front().job.target;
  // A GGUF base or chat model is imported without Hugging Face tokenizer
  // files (only a tokenizer.gguf sidecar): the chat model's tokens and
  // template could not be carried into the candidates.  Refused before
  // anything is written.  A GGUF target is fine: the candidates take its
  // sidecar tokenizer, which the evaluation reads.
  for (const Candidate& c : o.candidates)
    for (const auto& [flag, p] : {std::pair{"--base", &c.job.base}, {"--chat", &c.job.chat}})
      if (!p->empty() && !fs::is_directory(*p) && gguf::looks_like_gguf(*p))
        throw InputError(fmt::format("chatvec tune: {} {} is a GGUF file: a merge imports it without Hugging Face "
                                     "tokenizer files, so the chat model's tokens and template could not be carried; "
                                     "give the Hugging Face directory it was made from (a GGUF --target is fine)",
                                     flag, *p));

  const eval::EvalData data = eval::load_eval_data(o.eval);
  const std::string lang = target_language(o, data);
  {
    const auto langs = data.lid.languages();
    if (std::find(langs.begin(), langs.end(), lang) == langs.end())
      throw InputError("--lang " + lang + ": no --lang-data " + lang +
                       "=FILE (the language share needs text of the target language)");
    if (langs.size() < 2)
      report.warning("the language identifier knows only " + lang +
                     ": every word counts as " + lang + " (give --lang-data of a second language, e.g. English)");
    size_t n = 0, checkable = 0;
    for (const Json& t : data.tasks)
      if (t.value("lang", "") == lang) {
        ++n;
        checkable += t.value("type", "dialogue") != "dialogue";
      }
    if (n == 0) throw InputError(data.tasks_file + ": no prompt in the target language " + lang);
    const bool needs_answers = o.rule.metric.rfind("f1", 0) == 0 || o.rule.metric.rfind("exact", 0) == 0;
    if (needs_answers && checkable == 0)
      throw InputError(data.tasks_file + ": no prompt in " + lang +
                       " carries a checkable expected answer (repeat, first_word, last_word, continue): --rank-metric " +
                       o.rule.metric + " cannot rank (use e.g. --rank-metric eos_strict)");
  }
  bool have_heldout = false;
  for (const auto& [l, lines] : data.heldout) have_heldout |= l == lang;
  if (!have_heldout && o.rule.max_bpb_increase >= 0)
    report.warning("no --heldout " + lang + "=FILE: the rule's bits/byte condition is not applied");

  std::set<std::string> seen_warnings;
  {
    // Every candidate's merge planned (inputs opened, every check) without
    // writing; GGUF inputs are imported beside OUT and removed.
    QuietJobReporter quiet(report, seen_warnings);
    for (Candidate& c : o.candidates) {
      c.job.kind = JobKind::Merge;
      c.job.format = OutputFormat::Safetensors;
      c.job.dry_run = false;
      if (o.threads > 0) c.job.threads = o.threads;
      MergeJob check = c.job;
      std::string hidden = ".";
      hidden += outp.filename().string();
      hidden += ".tune-check";
      check.output = (fs::absolute(outp).parent_path() / hidden).string();
      try {
        prepare_job(check, quiet);
      } catch (const InputError& e) {
        throw InputError("candidate " + c.name + ": " + e.what());
      }
    }
  }

  Json settings = Json::object();
  {
    Json cands = Json::array();
    for (const Candidate& c : o.candidates) cands.push_back({{"name", c.name}, {"job", job_json(c.job)}});
    settings["candidates"] = cands;
    Json inputs = Json::object();
    for (const Candidate& c : o.candidates)
      for (const std::string* p : {&c.job.base, &c.job.chat, &c.job.target})
        inputs[absolute_path(*p)] = model_identity(*p);
    inputs[absolute_path(o.target)] = model_identity(o.target);
    settings["inputs"] = inputs;
    settings["reference"] = absolute_path(o.target);
    settings["prompts"] = {{"file", absolute_path(o.eval.tasks)}, {"content", content_hash(o.eval.tasks)}};
    Json ld = Json::array(), ho = Json::array();
    for (const auto& [l, p] : o.eval.lang_data) ld.push_back({l, absolute_path(p), content_hash(p)});
    for (const auto& [l, p] : o.eval.heldout) ho.push_back({l, absolute_path(p), content_hash(p)});
    settings["lang_data"] = ld;
    settings["heldout"] = ho;
    settings["lang"] = lang;
    settings["max_new"] = o.eval.max_new;
    settings["heldout_lines"] = o.eval.heldout_lines;
    settings["max_tasks"] = o.eval.max_tasks;
  }

  // 2. The work directory.
  // DIR.partial is locked from its creation (made under a hidden name,
  // locked, settings written, then renamed into place) until DIR is in
  // place: a second tune of the same DIR stops with one line and touches
  // nothing of the first one's.
  const std::string settings_path = partial + "/settings.json";
  WorkLock lock;
  bool fresh = false;
  if (!path_exists(partial)) {
    const fs::path pp = fs::absolute(partial);
    const std::string tmp =
        (pp.parent_path() / ("." + pp.filename().string() + ".chatvec-tmp-" + std::to_string(::getpid()))).string();
    remove_tree(tmp);
    fs::create_directory(tmp);
    lock.lock(tmp, true);
    write_atomic(tmp + "/settings.json", dump_json_pretty(settings));
    if (rename_noreplace(tmp, partial) == 0) {
      fresh = true;
    } else {
      const int e = errno;
      lock.release();
      remove_tree(tmp);
      if (e != EEXIST && e != ENOTEMPTY) throw RuntimeFailure("cannot create " + partial + ": " + std::strerror(e));
    }
  }
  if (!fresh && !lock.lock(partial, false))
    throw InputError(partial + " is in use by another chatvec tune (it holds the lock): wait for it to finish");
  if (!fresh) {
    if (!o.resume)
      throw InputError(partial + " holds an unfinished tune: --resume to continue it, or remove it");
    if (!path_exists(settings_path))
      throw InputError("cannot resume " + partial + ": no settings.json in it (remove it)");
    const Json was = read_json_file(settings_path);
    if (was != settings)
      throw InputError("cannot resume " + partial + ": its settings differ in " + first_difference(was, settings) +
                       "; resume with the same settings, or remove it");
    report.line("resuming " + partial);
  }
  fs::create_directories(partial + "/eval");
  const std::string model_dir = partial + "/model", best_dir = partial + "/best", best_json = partial + "/best.json";
  remove_tree(model_dir);  // a candidate left half-done by an interrupted run

  if (o.threads > 0) omp_set_num_threads(o.threads);
  // 3. The reference: the target itself (held-out text needs no chat template).
  Json reference;
  const std::string reference_path = partial + "/reference.json";
  if (path_exists(reference_path)) {
    reference = read_json_file(reference_path);
  } else {
    report.line("reference: held-out scores of the target " + o.target);
    reference = {{"model", o.target}, {"heldout", eval::heldout_scores(o.target, data)}};
    write_atomic(reference_path, dump_json_pretty(reference));
  }
  std::optional<double> ref_bpb;
  if (reference["heldout"].contains(lang)) ref_bpb = reference["heldout"][lang]["bits_per_byte"].get<double>();
  reference["bits_per_byte"] = ref_bpb ? Json(*ref_bpb) : Json(nullptr);

  // 4. The candidates.
  TuneResult result;
  const size_t n = o.candidates.size();
  std::vector<Json> reports(n);
  std::vector<Json> timings(n, Json::object());
  std::vector<bool> done(n, false);
  auto eval_file = [&](size_t i) { return fmt::format("eval/{:02d}-{}.json", i, o.candidates[i].name); };
  for (size_t i = 0; i < n; ++i)
    if (path_exists(partial + "/" + eval_file(i))) {
      reports[i] = read_json_file(partial + "/" + eval_file(i));
      done[i] = true;
    }
  auto finished_ranking = [&](std::vector<size_t>* index) {
    std::vector<RankInput> in;
    for (size_t i = 0; i < n; ++i)
      if (done[i]) {
        in.push_back({o.candidates[i].name, o.candidates[i].ratio, metrics_of(reports[i], lang)});
        index->push_back(i);
      }
    return rank_candidates(in, o.rule, ref_bpb);
  };
  std::vector<double> spent;
  size_t todo = 0;
  for (size_t i = 0; i < n; ++i) todo += !done[i];
  if (todo < n) report.line(fmt::format("{} of {} candidates already evaluated in {}: reused", n - todo, n, partial));
  try {
    for (size_t i = 0; i < n; ++i) {
      const Candidate& c = o.candidates[i];
      if (done[i]) {
        ++result.reused;
        report.candidate_done(i, n, c.name, metrics_of(reports[i], lang), true, -1);
        continue;
      }
      check_interrupted();
      report.candidate_begin(i, n, c.name);
      const auto t0 = std::chrono::steady_clock::now();
      MergeJob job = c.job;
      job.output = model_dir;  // (the best one is renamed to best/, whose recipe says so)
      job.force = true;
      job.command_line = "chatvec tune (candidate " + c.name + ")";
      QuietJobReporter quiet(report, seen_warnings);
      run_job(job, quiet);
      const auto t1 = std::chrono::steady_clock::now();
      if (o.threads > 0) omp_set_num_threads(o.threads);
      Json rep = eval::evaluate_model(model_dir, data, o.eval);
      rep["model"] = c.name;
      const auto t2 = std::chrono::steady_clock::now();
      const double merge_s = std::chrono::duration<double>(t1 - t0).count();
      const double eval_s = std::chrono::duration<double>(t2 - t1).count();
      rep["tune_seconds"] = {{"merge", merge_s}, {"eval", eval_s}};
      write_atomic(partial + "/" + eval_file(i), dump_json_pretty(rep));
      reports[i] = rep;
      done[i] = true;
      ++result.evaluated;
      if (o.write_best) {
        std::vector<size_t> idx;
        const Ranking r = finished_ranking(&idx);
        if (idx[r.best] == i) {
          std::error_code ec;
          fs::remove(best_json, ec);
          remove_tree(best_dir);
          fs::rename(model_dir, best_dir);
          write_atomic(best_json, dump_json_pretty(Json{{"name", c.name}}));
        }
      }
      remove_tree(model_dir);
      spent.push_back(merge_s + eval_s);
      --todo;
      double mean = 0;
      for (double s : spent) mean += s;
      mean /= double(spent.size());
      report.candidate_done(i, n, c.name, metrics_of(rep, lang), false, mean * double(todo));
    }
  } catch (const Error& e) {
    // Ctrl-C (or SIGTERM) inside a merge or an evaluation: the candidates
    // finished so far stay in the work directory for --resume.
    if (!interrupted()) throw;
    size_t kept = 0;
    for (bool d : done) kept += d;
    remove_tree(model_dir);
    throw Error(fmt::format("{}: {} of {} candidates finished, kept in {} (the same command with --resume continues)",
                            e.what(), kept, n, partial),
                e.exit_code());
  }
  check_interrupted();

  // 5. The ranking and the outputs.
  std::vector<RankInput> in;
  for (size_t i = 0; i < n; ++i) in.push_back({o.candidates[i].name, o.candidates[i].ratio, metrics_of(reports[i], lang)});
  const Ranking rank = rank_candidates(in, o.rule, ref_bpb);
  const Candidate& win = o.candidates[rank.best];
  if (o.write_best) {
    bool have = false;
    if (path_exists(best_json) && is_directory(best_dir)) have = read_json_file(best_json).value("name", "") == win.name;
    if (!have) {
      report.line("merging the winner " + win.name + " again for --write-best");
      std::error_code ec;
      fs::remove(best_json, ec);
      remove_tree(best_dir);
      MergeJob job = win.job;
      job.output = best_dir;
      job.force = true;
      job.command_line = "chatvec tune (candidate " + win.name + ")";
      QuietJobReporter quiet(report, seen_warnings);
      run_job(job, quiet);
    }
  } else {
    remove_tree(best_dir);
  }
  {
    std::error_code ec;
    fs::remove(best_json, ec);
  }

  Json results;
  results["tool"] = "chatvec tune";
  results["version"] = CHATVEC_VERSION;
  results["command"] = o.command_line;
  results["lang"] = lang;
  results["reference"] = reference;
  Json rule = {{"metric", o.rule.metric},
               {"lang_metric", o.rule.lang_metric},
               {"min_lang_share", o.rule.min_lang_share},
               {"max_bpb_increase", o.rule.max_bpb_increase},
               {"bpb_limit", rank.bpb_limit ? Json(*rank.bpb_limit) : Json(nullptr)},
               {"text", o.rule.describe(lang)}};
  results["rule"] = rule;
  Json cands = Json::array();
  for (size_t i = 0; i < n; ++i) {
    const Candidate& c = o.candidates[i];
    Json e = {{"name", c.name},
              {"ratio", c.ratio ? Json(*c.ratio) : Json(nullptr)},
              {"spec", c.spec},
              {"job", job_json(c.job)},
              {"metrics", metrics_of(reports[i], lang)},
              {"qualifies", bool(rank.qualifies[i])},
              {"verdict", rank.verdicts[i]},
              {"eval_report", eval_file(i)},
              {"eval", {{"summary", reports[i]["summary"]},
                        {"by_type", reports[i]["by_type"]},
                        {"heldout", reports[i]["heldout"]}}}};
    if (reports[i].contains("tune_seconds")) e["seconds"] = reports[i]["tune_seconds"];
    cands.push_back(e);
  }
  results["candidates"] = cands;
  results["choice"] = {{"name", win.name},
                       {"index", rank.best},
                       {"qualified", rank.qualified},
                       {"why", rank.why},
                       {"recipe", "best_recipe.json"},
                       {"model", o.write_best ? Json("best") : Json(nullptr)}};
  results["settings"] = settings;
  const Json recipe = job_json(win.job);
  result.table = render_table(results);
  write_atomic(partial + "/results.json", dump_json_pretty(results));
  write_atomic(partial + "/table.md", result.table);
  write_atomic(partial + "/metrics.svg", render_svg(results));
  write_atomic(partial + "/best_recipe.json", dump_json_pretty(recipe));
  sync_directory(partial);

  // 6. Into place.
  if (path_exists(out)) {
    const std::string old = out + fmt::format(".replaced-{}", ::getpid());
    fs::rename(out, old);
    fs::rename(partial, out);
    remove_tree(old);
  } else if (rename_noreplace(partial, out) != 0) {
    // Something took OUT's name while the tune ran: it is not replaced
    // (that needs --force); the finished tune stays complete in DIR.partial.
    const int e = errno;
    if (e == EEXIST || e == ENOTEMPTY)
      throw InputError(out + " appeared while the tune ran and is not replaced without --force; the finished tune is in " +
                       partial + " (--resume --force puts it into place)");
    throw RuntimeFailure("cannot rename " + partial + " to " + out + ": " + std::strerror(e));
  }
  sync_directory(fs::absolute(outp).parent_path().string());
  result.out = out;
  result.results = std::move(results);
  result.choice = win.name;
  return result;
}

}  // namespace chatvec::tune
